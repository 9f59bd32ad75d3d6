"""MMDetection configs for the station's CenterNet models.

Each variant is a small file that inherits `centernet_base.py` and overrides
the backbone; `config_path(name)` finds them without relying on the CWD.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def config_path(name: str) -> Path:
    """Path of a config by file name or stem (e.g. "centernet_mobilenetv2")."""
    path = Path(name)
    if path.suffix == ".py" and path.exists():
        return path
    candidate = CONFIG_DIR / (path.stem + ".py")
    if not candidate.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("centernet_*.py"))
        raise FileNotFoundError(f"no config {name!r}; known: {', '.join(known)}")
    return candidate
