"""The audit trail as people read it: when, who, what, old → new, reason. No Qt.

An audit record is a row of the `audit` table as a dict; old and new values are
the JSON the station wrote. Keys this module does not know (a hash chain's
columns, say) are ignored, and an action it does not know is shown in words
made from its name, so a newer log still reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

# Human words for the actions the station writes.
ACTIONS = {
    "review.confirm": "verdict confirmed",
    "review.override": "verdict overridden",
    "review.false_positive": "false positive marked",
    "review.missed": "missed defect added",
    "settings.rule": "verdict rule changed",
    "settings.model": "model changed",
    "settings.change": "settings changed",
    "user.add": "user added",
    "user.role": "role changed",
    "user.enable": "user enabled",
    "user.disable": "user disabled",
    "user.secret": "PIN changed",
    "user.signin_failed": "sign-in failed",
    "user.locked": "user locked out",
    "settings.file": "settings file recorded",
    "settings.changed_outside": "settings changed outside the station",
    "db.guards_restored": "database guards restored",
    "store.orphans_removed": "orphan pictures removed",
}
# Keys that name what a change is about: shown first when they did not change.
_SUBJECT_KEYS = ("name", "label")
ARROW = " → "


@dataclass(frozen=True)
class AuditRow:
    when: str  # local time, to the second
    who: str
    what: str
    change: str  # "old → new", summarised
    reason: str


def describe_audit(record: dict[str, Any], tz: tzinfo | None = None) -> AuditRow:
    """One audit record in words; `tz` None is the system's local time zone."""
    action = str(record.get("action") or "")
    old, new = _load(record.get("old_value")), _load(record.get("new_value"))
    return AuditRow(
        when=_when(record.get("at"), tz),
        who=str(record.get("user") or ""),
        what=ACTIONS.get(action) or action.replace(".", " ").replace("_", " "),
        change=_change(action, old, new),
        reason=str(record.get("reason") or ""),
    )


def _load(value: Any) -> Any:
    """A stored JSON value, parsed; text that is not JSON is kept as text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _when(at: Any, tz: tzinfo | None) -> str:
    try:
        t = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return str(at or "")
    if t.tzinfo is None:  # not written by the station: show it as it is
        return t.isoformat(sep=" ", timespec="seconds")
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _number(v: float) -> str:
    """Rounded to 2 decimals, without trailing zeros: 0.8712 -> 0.87, 40.0 -> 40."""
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return _number(v)
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, dict):
        if "label" in v and ("score" in v or "box" in v):  # a detection or a drawn box
            text = str(v["label"])
            if isinstance(v.get("score"), (int, float)):
                text += " " + _number(v["score"])
            if v.get("box") is not None:
                text += " at " + _value(v["box"])
            return text
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    return str(v)


def _flat(v: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"classes": {"pit": {"min_score": .5}}} -> {"classes.pit.min_score": .5}."""
    if not isinstance(v, dict) or not v:
        return {prefix: v}
    out: dict[str, Any] = {}
    for k, x in v.items():
        out.update(_flat(x, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _change(action: str, old: Any, new: Any) -> str:
    if action in ("review.confirm", "review.override") and isinstance(new, dict):
        before = old.get("verdict") if isinstance(old, dict) else None
        after = new.get("verdict")
        # "FAIL → PASS" when the verdict in force changed; the verdict alone when QA kept it.
        return _value(after) if before in (None, after) else f"{_value(before)}{ARROW}{_value(after)}"
    if action == "review.false_positive" and isinstance(old, dict):
        return f"{_value(old)}{ARROW}false positive"
    if old is None:
        return "" if new is None else _value(new)
    if new is None:
        return _value(old)
    if isinstance(old, dict) and isinstance(new, dict):
        return _diff(old, new)
    return f"{_value(old)}{ARROW}{_value(new)}"


def _diff(old: dict, new: dict) -> str:
    """The keys whose values changed, "key old → new", after the unchanged name of the subject."""
    a, b = _flat(old), _flat(new)
    subject = [str(b[k]) for k in _SUBJECT_KEYS if k in a and a.get(k) == b.get(k)]
    changed = [f"{k} {_value(a.get(k))}{ARROW}{_value(b.get(k))}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    return ": ".join(filter(None, [" ".join(subject), "; ".join(changed) or "no change"]))
