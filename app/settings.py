"""The station's settings: one JSON file, defaults from resources/default_config.json.

A missing, unreadable or partly wrong file never stops the station: each bad
field falls back to its default and the caller gets a warning to show. Numbers
must be finite and in range (JSON's Infinity/NaN and 1e999 are refused per
field); a file nested too deeply for the JSON reader falls back as a whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.paths import default_config_path, default_data_dir, resource
from app.verdict import VerdictRule
from detector.files import atomic_write_bytes
from detector.images import BIT_DEPTHS, DEFAULT_MAX_MEGAPIXELS
from detector.regions import Roi

DEFAULT_CONFIG = "default_config.json"
KEEP_PICTURES = ("all", "fail")  # see StationSettings.keep_pictures
# Pixel formats of GenICam cameras the station decodes (app/sources_genicam.py), and their significant bits.
CAMERA_PIXEL_FORMATS = {"Mono8": 8, "Mono10": 10, "Mono10p": 10, "Mono10Packed": 10, "Mono12": 12, "Mono12p": 12,
                        "Mono12Packed": 12, "Mono14": 14, "Mono16": 16}
# "free-run": the camera streams (live view, continuous); "software": one frame per inspection, taken when it is
# triggered; "lineN": one frame per pulse on the camera's input line N (the PLC or a light barrier triggers it).
CAMERA_TRIGGER_FREE_RUN, CAMERA_TRIGGER_SOFTWARE = "free-run", "software"
CAMERA_TRIGGER_ACTIVATIONS = ("rising", "falling")
ANY_CAMERA = "*"  # the `cameras` block for a camera without its own
MAX_NESTING = 8  # deeper than any setting needs: refused before a parser recurses into it


@dataclass(frozen=True)
class CameraSettings:
    """How an industrial (GenICam) camera is set when it is opened; None leaves the camera's own value."""

    exposure_us: float | None = None
    gain_db: float | None = None
    pixel_format: str | None = None  # one of CAMERA_PIXEL_FORMATS; None: the camera's if mono, else Mono8
    roi: tuple[int, int, int, int] | None = None  # sensor region x, y, w, h (None: as the camera is set)
    frame_rate: float | None = None  # frames per second in free-run
    packet_size: int | None = None  # GigE Vision stream packet size, bytes (jumbo frames: up to 9000 and more)
    trigger: str = CAMERA_TRIGGER_FREE_RUN  # "free-run", "software" or "line0", "line1", ...
    trigger_activation: str = "rising"  # hardware trigger: the edge that takes the picture
    trigger_timeout: float = 2.0  # seconds a triggered frame may take (exposure and transfer) before it is an error

    def __post_init__(self) -> None:
        _camera_trigger(self.trigger)
        if self.pixel_format is not None and self.pixel_format not in CAMERA_PIXEL_FORMATS:
            raise ValueError(f"pixel_format must be one of {', '.join(CAMERA_PIXEL_FORMATS)}, got {self.pixel_format!r}")
        if self.trigger_activation not in CAMERA_TRIGGER_ACTIVATIONS:
            raise ValueError(f"trigger_activation must be one of {', '.join(CAMERA_TRIGGER_ACTIVATIONS)}, "
                             f"got {self.trigger_activation!r}")

    @property
    def trigger_line(self) -> str | None:
        """The GenICam trigger source of a hardware trigger ("Line1" for "line1"); None for free-run and software."""
        return f"Line{self.trigger[4:]}" if self.trigger.startswith("line") else None

    def to_dict(self) -> dict[str, Any]:
        return {"exposure_us": self.exposure_us, "gain_db": self.gain_db, "pixel_format": self.pixel_format,
                "roi": list(self.roi) if self.roi else None, "frame_rate": self.frame_rate, "packet_size": self.packet_size,
                "trigger": self.trigger, "trigger_activation": self.trigger_activation,
                "trigger_timeout": self.trigger_timeout}


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
    # The active recipe (product type) by name; "" or a deleted one: the first recipe.
    recipe: str = ""
    # Operators may pick the recipe from the list (else only admins, the line and --recipe).
    operator_may_select_recipe: bool = False
    # Result outputs: mqtt://HOST:PORT/PREFIX, http(s)://... (each result delivered at least once).
    sinks: tuple[str, ...] = ()
    # The station as a device of the line: Modbus TCP server "HOST:PORT" ("" off) and its unit id,
    # OPC UA Machine Vision server "opc.tcp://HOST:PORT" ("" off), and whether it also offers an
    # unsecured anonymous endpoint (lab tests only).
    modbus: str = ""
    modbus_unit_id: int = 1
    opcua: str = ""
    opcua_allow_anonymous: bool = False
    # Sign the user out after this many minutes without key or mouse input (0: never).
    idle_lock_minutes: float = 0.0
    # Shortest PIN a user may be given (digits or characters).
    min_pin_length: int = 6
    rule: VerdictRule = field(default_factory=VerdictRule)
    # Shift names and local start times, e.g. (("early", "06:00"), ("late", "14:00"), ("night", "22:00")).
    # Empty: reports are per day only.
    shifts: tuple[tuple[str, str], ...] = ()
    # Pictures whose header declares more pixels are refused before decoding (a small file
    # can declare gigapixels and exhaust memory).
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    # Significant bits of the source's 16-bit samples when the file does not say (PNG sBIT,
    # PGM maxval): a 12-bit camera's frames in 16-bit files hold 0..4095 and need 12.
    bit_depth: int = 16
    # Industrial (GenICam) cameras by device ID ("*": any camera without its own block): exposure, gain,
    # pixel format, sensor region, frame rate, packet size and trigger, applied when the camera is opened.
    cameras: tuple[tuple[str, CameraSettings], ...] = ()
    # The plant database (PostgreSQL) the station replicates its log to: postgresql://LOGIN@HOST[:PORT]/DB, TLS
    # options such as ?sslmode=verify-full&sslrootcert=... passing through ("" off). Its password never in this file:
    # a file holding it (chmod 600) or the name of an environment variable holding it.
    plant_db_url: str = ""
    plant_db_password_file: str = ""
    plant_db_password_env: str = ""
    # The plant picture store (a mounted share) the pictures are copied to ("" keeps them on the station).
    plant_picture_store: str = ""
    # A replication backlog older than this many minutes is shown as a warning (0: never).
    plant_backlog_warn_minutes: float = 30.0

    def camera_settings(self, device_id: str) -> CameraSettings:
        """The settings block of this camera, else the "*" block, else the defaults (free-run, camera's values)."""
        blocks = dict(self.cameras)
        return blocks.get(device_id) or blocks.get(ANY_CAMERA) or CameraSettings()

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
            "recipe": self.recipe,
            "operator_may_select_recipe": self.operator_may_select_recipe,
            "sinks": list(self.sinks),
            "modbus": self.modbus,
            "modbus_unit_id": self.modbus_unit_id,
            "opcua": self.opcua,
            "opcua_allow_anonymous": self.opcua_allow_anonymous,
            "idle_lock_minutes": self.idle_lock_minutes,
            "min_pin_length": self.min_pin_length,
            "rule": self.rule.to_dict(),
            "shifts": [{"name": n, "start": t} for n, t in self.shifts],
            "max_megapixels": self.max_megapixels,
            "bit_depth": self.bit_depth,
            "cameras": {device_id: camera.to_dict() for device_id, camera in self.cameras},
            "plant_db_url": self.plant_db_url,
            "plant_db_password_file": self.plant_db_password_file,
            "plant_db_password_env": self.plant_db_password_env,
            "plant_picture_store": self.plant_picture_store,
            "plant_backlog_warn_minutes": self.plant_backlog_warn_minutes,
        }


class _NotFinite:
    """What the JSON reader makes of Infinity, -Infinity, NaN and 1e999: no number parser takes it."""

    def __init__(self, text: str):
        self.text = text

    def __float__(self) -> float:
        raise ValueError(f"{self.text} is not a finite number")

    __int__ = __index__ = __float__

    def __repr__(self) -> str:
        return self.text


def _finite_float(text: str) -> float | _NotFinite:
    value = float(text)
    return value if math.isfinite(value) else _NotFinite(text)


def _read_json(text: str) -> Any:
    return json.loads(text, parse_constant=_NotFinite, parse_float=_finite_float)


def _number(v: Any) -> float:
    """A finite number (not a bool, not text)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, _NotFinite)):
        raise ValueError(f"must be a number, got {_short(v)}")
    t = float(v)
    if not math.isfinite(t):
        raise ValueError(f"must be a finite number, got {t}")
    return t


def _short(v: Any) -> str:
    text = repr(v) if _depth(v) <= MAX_NESTING else f"a {type(v).__name__} nested too deeply"
    return text if len(text) <= 60 else text[:57] + "..."


def _depth(v: Any, limit: int = MAX_NESTING + 1) -> int:
    """How deeply lists/dicts nest in v, counting up to `limit` (no recursion)."""
    level, current = 0, [v]
    while current and level < limit:
        current = [c for x in current if isinstance(x, (list, dict))
                   for c in (x.values() if isinstance(x, dict) else x)]
        level += 1 if current else 0
    return level


def _threshold(v: Any) -> float | None:
    if v is None:
        return None
    t = _number(v)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"must be within 0..1, got {t}")
    return t


def _in_range(low: float, high: float, low_open: bool = False):
    def parse(v: Any) -> float:
        t = _number(v)
        if t > high or t < low or (low_open and t == low):
            raise ValueError(f"must be within {'(' if low_open else '['}{low:g}, {high:g}], got {t:g}")
        return t
    return parse


def _non_negative(v: Any) -> float:
    t = _number(v)
    if t < 0:
        raise ValueError(f"must be >= 0, got {t:g}")
    return t


def _pin_length(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 4 <= v <= 64:
        raise ValueError(f"must be a whole number within 4..64, got {_short(v)}")
    return v


def _bit_depth(v: Any) -> int:
    if isinstance(v, bool) or v not in BIT_DEPTHS:
        raise ValueError(f"must be one of {', '.join(map(str, BIT_DEPTHS))}, got {_short(v)}")
    return int(v)


def _camera_trigger(v: Any) -> str:
    if isinstance(v, str) and (v in (CAMERA_TRIGGER_FREE_RUN, CAMERA_TRIGGER_SOFTWARE)
                               or (v.startswith("line") and v[4:].isdigit() and len(v) <= 6)):
        return v
    raise ValueError(f"trigger must be 'free-run', 'software' or a camera input line 'line0', 'line1', ..., got {_short(v)}")


def _whole(low: int, high: int):
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError(f"must be a whole number within {low}..{high}, got {_short(v)}")
        return v
    return parse


def _sensor_region(v: Any) -> tuple[int, int, int, int] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 4:
        raise ValueError(f"sensor region must be [x, y, w, h], got {_short(v)}")
    x, y = (_whole(0, 1 << 20)(n) for n in v[:2])
    w, h = (_whole(1, 1 << 20)(n) for n in v[2:])
    return x, y, w, h


def _optional(parse):
    return lambda v: None if v is None else parse(v)


_CAMERA_PARSERS = {
    "exposure_us": _optional(_in_range(0.0, 1e8, low_open=True)),
    "gain_db": _optional(_in_range(-100.0, 100.0)),
    "pixel_format": _optional(lambda v: v if v in CAMERA_PIXEL_FORMATS else _bad_choice(v, CAMERA_PIXEL_FORMATS)),
    "roi": _sensor_region,
    "frame_rate": _optional(_in_range(0.0, 1e6, low_open=True)),
    "packet_size": _optional(_whole(576, 65535)),
    "trigger": _camera_trigger,
    "trigger_activation": lambda v: v if v in CAMERA_TRIGGER_ACTIVATIONS else _bad_choice(v, CAMERA_TRIGGER_ACTIVATIONS),
    "trigger_timeout": _in_range(0.0, 3600.0, low_open=True),
}


def _bad_choice(v: Any, choices) -> Any:
    raise ValueError(f"must be one of {', '.join(choices)}, got {_short(v)}")


def camera_from_dict(block: dict[str, Any]) -> tuple[CameraSettings, list[str]]:
    """A camera's settings block; a bad or unknown field is left at its default and named in the warnings."""
    values, warnings = {}, []
    for key, value in block.items():
        parse = _CAMERA_PARSERS.get(key)
        if parse is None:
            warnings.append(f"unknown setting {str(key)[:40]!r} ignored")
            continue
        try:
            values[key] = parse(value)
        except (ValueError, TypeError, OverflowError) as exc:
            warnings.append(f"{key} is invalid ({exc}); using the default")
    return CameraSettings(**values), warnings


def _cameras(v: Any) -> tuple[tuple[tuple[str, CameraSettings], ...], list[str]]:
    """{"DEVICE-ID": {setting: value}}; a bad camera setting falls back to its default with a warning naming both."""
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping of camera device ID to its settings, got {_short(v)}")
    out, warnings = [], []
    for device_id, block in v.items():
        if not device_id.strip() or not isinstance(block, dict):
            warnings.append(f"setting 'cameras': camera {device_id[:40]!r} ignored (needs a device ID and a mapping "
                            "of settings)")
            continue
        camera, notes = camera_from_dict(block)
        warnings += [f"setting 'cameras': camera {device_id[:40]!r}: {note}" for note in notes]
        out.append((device_id, camera))
    return tuple(out), warnings


def _roi(v: Any) -> Roi | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 4:
        raise ValueError(f"inspection region must be [x, y, w, h], got {_short(v)}")
    return Roi.from_list([_number(x) for x in v])


def _rule(v: Any) -> VerdictRule:
    """The verdict rule, with every number in it finite (VerdictRule checks the ranges)."""
    if not isinstance(v, dict):
        raise ValueError(f"rule must be a mapping, got {_short(v)}")
    pending = [v]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif item is not None and not isinstance(item, (str, bool)):
            _number(item)
    return VerdictRule.from_dict(v)


def _keep_pictures(v: Any) -> str:
    if v not in KEEP_PICTURES:
        raise ValueError(f"must be one of {', '.join(map(repr, KEEP_PICTURES))}, got {v!r}")
    return v


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


def _unit_id(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 247:
        raise ValueError(f"must be a Modbus unit id 0..247 (0: answer every id), got {v!r}")
    return v


def _sinks(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(u, str) and u.strip() for u in v):
        raise ValueError("must be a list of output URLs (mqtt://HOST:PORT/PREFIX, http(s)://...)")
    return tuple(dict.fromkeys(u.strip() for u in v))


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


def _plant_url(v: Any) -> str:
    """A postgresql:// URL without a password ("" for none)."""
    from urllib.parse import urlsplit

    if not isinstance(v, str):
        raise ValueError(f"must be text, got {type(v).__name__}")
    url = v.strip()
    if not url:
        return ""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql:// (e.g. postgresql://line3@db.plant/inspections)")
    try:
        password = urlsplit(url).password
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if password is not None:
        raise ValueError("holds a password: put it in a file (plant_db_password_file) or an environment variable"
                         " (plant_db_password_env), never in the settings")
    return url


def _env_name(v: Any) -> str:
    if not isinstance(v, str) or (v and not v.replace("_", "A").isalnum()):
        raise ValueError(f"must be the name of an environment variable (letters, digits, _), got {_short(v)}")
    return v


_PARSERS = {
    "station_name": _text,
    "operator": _text,
    "source": _text,
    "roi": _roi,
    "threshold": _threshold,
    "continuous": _bool,
    "model_path": _optional_str,
    "data_dir": _optional_str,
    "reconnect_seconds": _in_range(0.0, 3600.0, low_open=True),
    "keep_pictures": _keep_pictures,
    "min_free_mb": _in_range(0.0, 1e9),
    "recipe": _text,
    "operator_may_select_recipe": _bool,
    "sinks": _sinks,
    "modbus": _text,
    "modbus_unit_id": _unit_id,
    "opcua": _text,
    "opcua_allow_anonymous": _bool,
    "idle_lock_minutes": _non_negative,
    "min_pin_length": _pin_length,
    "rule": _rule,
    "shifts": _shifts,
    "max_megapixels": _in_range(0.0, 10000.0, low_open=True),
    "bit_depth": _bit_depth,
    "cameras": _cameras,  # returns (value, warnings): each camera's bad fields fall back one by one
    "plant_db_url": _plant_url,
    "plant_db_password_file": _text,
    "plant_db_password_env": _env_name,
    "plant_picture_store": _text,
    "plant_backlog_warn_minutes": _non_negative,
}


def parse_setting(key: str, value: Any) -> Any:
    """One setting's value checked as the settings file's is (the settings dialog's fields); ValueError says what is
    wrong (not for `cameras`)."""
    return _PARSERS[key](value)


def from_dict(data: Any, base: StationSettings) -> tuple[StationSettings, list[str]]:
    """`base` with every valid field of `data` applied; warnings for the rest."""
    warnings: list[str] = []
    if not isinstance(data, dict):
        return base, [f"settings must be a JSON object, got {type(data).__name__}; using defaults"]
    values: dict[str, Any] = {}
    for key, value in data.items():
        parse = _PARSERS.get(key)
        if parse is None:
            warnings.append(f"unknown setting {key[:40]!r} ignored")
            continue
        try:
            if _depth(value) > MAX_NESTING:
                raise ValueError("nested too deeply")
            if parse is _cameras:
                values[key], notes = _cameras(value)
                warnings += notes
            else:
                values[key] = parse(value)
        except (ValueError, TypeError, OverflowError) as exc:
            warnings.append(f"setting {key!r} is invalid ({exc}); using the default")
    return replace(base, **values), warnings


def defaults() -> StationSettings:
    """The shipped defaults (resources/default_config.json), or built-in ones if that is broken."""
    path = resource(DEFAULT_CONFIG)
    try:
        data = _read_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
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
        data = _read_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return base, [f"could not read settings file {path} ({exc}); using defaults"]
    except ValueError as exc:
        return base, [f"settings file {path} is not valid JSON ({exc}); using defaults"]
    except RecursionError:
        return base, [f"settings file {path} is nested too deeply to read; using defaults"]
    settings, warnings = from_dict(data, base)
    return settings, [f"{path}: {w}" for w in warnings]


def load_settings_for_command(path: str | Path | None = None) -> StationSettings:
    """Settings for a command-line tool: like `load_settings`, its warnings printed to stderr."""
    import sys

    settings, warnings = load_settings(path)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return settings


def save_settings(settings: StationSettings, path: str | Path | None = None) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a settings file."""
    path = Path(path) if path is not None else default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
