"""Where the station finds its resources and keeps its files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "metal-inspection-station"
REPO_RESOURCES = Path(__file__).resolve().parents[1] / "resources"
# Where a non-editable `pip install .` puts resources (pyproject data-files).
INSTALLED_RESOURCES = Path(sys.prefix) / "share" / APP_NAME
CONFIG_ENV_VAR = "INSPECTION_STATION_CONFIG"


def resource(relative: str) -> Path:
    """A file from resources/, in the checkout or in the installed share folder."""
    for root in (REPO_RESOURCES, INSTALLED_RESOURCES):
        candidate = root / relative
        if candidate.exists():
            return candidate
    return REPO_RESOURCES / relative  # missing: callers report this expected place


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_config_path() -> Path:
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home())) / APP_NAME / "station.json"
    return _xdg("XDG_CONFIG_HOME", ".config") / APP_NAME / "station.json"


def default_data_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / APP_NAME
    return _xdg("XDG_DATA_HOME", ".local/share") / APP_NAME
