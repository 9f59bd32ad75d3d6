"""Settings changed outside the station: noticed at start, audited field by field.

The settings file is plain JSON that anyone with access to the PC can edit;
changing `threshold` to 1.0 by hand would PASS every scratch. So each time the
station writes the file it records the file's SHA-256 and content in the
(hash-chained) audit trail, and at start it compares the file with that
record: a change it did not make is reported on screen and audited as
old -> new per field, then becomes the new reference.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.store import InspectionLog

FILE_RECORD = "settings.file"  # the station wrote (or took note of) this file content
CHANGED_OUTSIDE = "settings.changed_outside"  # someone else changed it: old -> new per field
MISSING = "(not set)"


def _read(path: Path) -> tuple[str, Any] | None:
    """(sha256, parsed content or the raw text when it is not JSON), None when the file is absent."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable: {exc}", None
    try:
        content = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        content = data.decode("utf-8", "replace")[:2000]
    return hashlib.sha256(data).hexdigest(), content


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"rule": {"classes": {"pit": {"min_score": 0.3}}}} -> {"rule.classes.pit.min_score": 0.3}."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "(whole file)": value}


def field_changes(old: Any, new: Any) -> dict[str, tuple[Any, Any]]:
    """Changed fields, dotted names -> (old, new); a field only on one side is MISSING on the other."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k, MISSING), b.get(k, MISSING)) for k in sorted(a.keys() | b.keys()) if a.get(k, MISSING) != b.get(k, MISSING)}


def _last_record(store: InspectionLog, path: Path) -> dict | None:
    for record in store.audit_records(action=FILE_RECORD, newest_first=True):
        try:
            value = json.loads(record.new_value or "null")
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("path") == str(path):
            return value
    return None


def _key(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def record_written(store: InspectionLog, path: str | Path, user: str) -> None:
    """Note the file the station just wrote as the reference (only when its content changed)."""
    path = _key(path)
    current = _read(path)
    if current is None:
        return
    last = _last_record(store, path)
    if last is not None and last.get("sha256") == current[0]:
        return
    with store.write() as tx:
        tx.append_audit(user, FILE_RECORD, new={"path": str(path), "sha256": current[0], "settings": current[1]})


def check_outside_changes(store: InspectionLog, path: str | Path) -> list[str]:
    """Compare the settings file with the last content the station wrote; audit and describe any change.

    Returns lines like "threshold: 0.3 → 1.0" (empty when nothing changed).
    The first time a file is seen it becomes the reference without a report.
    """
    path = _key(path)
    current = _read(path)
    last = _last_record(store, path)
    if last is None and current is None:
        return []
    if current is None:
        current = ("(file removed)", None)
    if last is not None and last.get("sha256") == current[0]:
        return []
    who = f"outside the station (file edited; OS user {getpass.getuser()})"
    changes = field_changes(last.get("settings"), current[1]) if last is not None else {}
    with store.write() as tx:
        if changes:
            mtime = ""
            try:
                mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
            except OSError:
                pass
            tx.append_audit(who, CHANGED_OUTSIDE, old={k: v[0] for k, v in changes.items()},
                            new={k: v[1] for k, v in changes.items()},
                            reason=f"{path} changed outside the station" + (f" (file time {mtime})" if mtime else ""))
        tx.append_audit(who if last is not None else "station", FILE_RECORD,
                        new={"path": str(path), "sha256": current[0], "settings": current[1]})
    return [f"{k}: {_show(v[0])} → {_show(v[1])}" for k, v in changes.items()]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
