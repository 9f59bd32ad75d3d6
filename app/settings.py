"""The station's settings: one JSON file, defaults from resources/default_config.json.

A missing, unreadable or partly wrong file never stops the station: each bad
field falls back to its default and the caller gets a warning to show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.files import atomic_write_bytes
from app.paths import default_config_path, default_data_dir, resource
from app.roi import Roi
from app.verdict import VerdictRule

DEFAULT_CONFIG = "default_config.json"
KEEP_PICTURES = ("all", "fail")  # see StationSettings.keep_pictures


@dataclass(frozen=True)
class StationSettings:
    station_name: str = "station-1"
    operator: str = ""
    source: str = ""  # camera index, stream URL, video file, image file or folder; "" = none yet
    roi: Roi | None = None
    threshold: float | None = None  # None = the model's default threshold
    continuous: bool = False
    model_path: str | None = None  # None = the shipped default model
    data_dir: str | None = None  # None = the platform's data folder
    reconnect_seconds: float = 2.0
    # Pictures saved with each logged inspection: "all", or "fail" (FAIL inspections only; continuous
    # mode logs several inspections a second, and PASS pictures then fill a disk within a shift).
    keep_pictures: str = "all"
    # Pictures are not saved once the data folder's disk has less than this free, so the
    # inspection log itself can still be written (the row notes the missing pictures).
    min_free_mb: float = 1000.0
    rule: VerdictRule = field(default_factory=VerdictRule)
    # Shift names and local start times, e.g. (("early", "06:00"), ("late", "14:00"), ("night", "22:00")).
    # Empty: reports are per day only.
    shifts: tuple[tuple[str, str], ...] = ()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    @property
    def db_path(self) -> Path:
        return self.data_path / "inspections.sqlite"

    def to_dict(self) -> dict[str, Any]:
        return {
            "station_name": self.station_name,
            "operator": self.operator,
            "source": self.source,
            "roi": self.roi.to_list() if self.roi else None,
            "threshold": self.threshold,
            "continuous": self.continuous,
            "model_path": self.model_path,
            "data_dir": self.data_dir,
            "reconnect_seconds": self.reconnect_seconds,
            "keep_pictures": self.keep_pictures,
            "min_free_mb": self.min_free_mb,
            "rule": self.rule.to_dict(),
            "shifts": [{"name": n, "start": t} for n, t in self.shifts],
        }


def _threshold(v: Any) -> float | None:
    if v is None:
        return None
    t = float(v)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"must be within 0..1, got {t}")
    return t


def _positive(v: Any) -> float:
    t = float(v)
    if not t > 0:
        raise ValueError(f"must be > 0, got {t}")
    return t


def _keep_pictures(v: Any) -> str:
    if v not in KEEP_PICTURES:
        raise ValueError(f"must be one of {', '.join(map(repr, KEEP_PICTURES))}, got {v!r}")
    return v


def _non_negative(v: Any) -> float:
    t = float(v)
    if not t >= 0:
        raise ValueError(f"must be >= 0, got {t}")
    return t


def _optional_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError(f"must be text, got {type(v).__name__}")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, (str, int)):
        raise ValueError(f"must be text, got {type(v).__name__}")
    return str(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


def _shifts(v: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, list):
        raise ValueError("must be a list of {name, start}")
    out = []
    for item in v:
        try:
            name, start = str(item["name"]).strip(), str(item["start"]).strip()
            hh, mm = (int(x) for x in start.split(":"))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"each shift needs a name and a start 'HH:MM', got {item!r}") from None
        if not name or not (0 <= hh < 24 and 0 <= mm < 60):
            raise ValueError(f"bad shift {item!r}")
        out.append((name, f"{hh:02d}:{mm:02d}"))
    if len({t for _, t in out}) != len(out):
        raise ValueError("two shifts start at the same time")
    if len({n for n, _ in out}) != len(out):
        raise ValueError("two shifts have the same name")
    return tuple(sorted(out, key=lambda s: s[1]))


_PARSERS = {
    "station_name": _text,
    "operator": _text,
    "source": _text,
    "roi": lambda v: None if v is None else Roi.from_list(v),
    "threshold": _threshold,
    "continuous": _bool,
    "model_path": _optional_str,
    "data_dir": _optional_str,
    "reconnect_seconds": _positive,
    "keep_pictures": _keep_pictures,
    "min_free_mb": _non_negative,
    "rule": VerdictRule.from_dict,
    "shifts": _shifts,
}


def from_dict(data: Any, base: StationSettings) -> tuple[StationSettings, list[str]]:
    """`base` with every valid field of `data` applied; warnings for the rest."""
    warnings: list[str] = []
    if not isinstance(data, dict):
        return base, [f"settings must be a JSON object, got {type(data).__name__}; using defaults"]
    values: dict[str, Any] = {}
    for key, value in data.items():
        parse = _PARSERS.get(key)
        if parse is None:
            warnings.append(f"unknown setting {key!r} ignored")
            continue
        try:
            values[key] = parse(value)
        except (ValueError, TypeError) as exc:
            warnings.append(f"setting {key!r} is invalid ({exc}); using the default")
    return replace(base, **values), warnings


def defaults() -> StationSettings:
    """The shipped defaults (resources/default_config.json), or built-in ones if that is broken."""
    path = resource(DEFAULT_CONFIG)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return StationSettings()
    settings, _ = from_dict(data, StationSettings())
    return settings


def load_settings(path: str | Path | None = None) -> tuple[StationSettings, list[str]]:
    """Settings from `path` (default: the user's config file) over the defaults.

    Returns the settings and warnings to show the user; never raises for a bad file.
    """
    path = Path(path) if path is not None else default_config_path()
    base = defaults()
    if not path.exists():
        return base, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return base, [f"could not read settings file {path} ({exc}); using defaults"]
    except ValueError as exc:
        return base, [f"settings file {path} is not valid JSON ({exc}); using defaults"]
    settings, warnings = from_dict(data, base)
    return settings, [f"{path}: {w}" for w in warnings]


def save_settings(settings: StationSettings, path: str | Path | None = None) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a settings file."""
    path = Path(path) if path is not None else default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.to_dict(), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
