"""PASS/FAIL rules: which detections make a part fail.

A detection counts when its score reaches the station's confidence
threshold. The part FAILS if any counted detection also passes its class's
rule: a minimum score and a minimum size (the box's longer side, so a long
thin scratch is judged by its length), in pixels or in millimetres through
a px/mm calibration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from detector import Detection

PASS = "PASS"
FAIL = "FAIL"


@dataclass(frozen=True)
class ClassRule:
    min_score: float = 0.0
    min_size: float = 0.0  # longer side of the box, in the rule's unit

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_score <= 1.0):
            raise ValueError(f"min_score must be within 0..1, got {self.min_score}")
        if not (self.min_size >= 0.0 and math.isfinite(self.min_size)):
            raise ValueError(f"min_size must be a finite number >= 0, got {self.min_size}")


@dataclass(frozen=True)
class VerdictRule:
    classes: dict[str, ClassRule] = field(default_factory=dict)
    unit: str = "px"  # "px" or "mm"
    px_per_mm: float | None = None  # calibration, needed when unit is "mm"
    # A class the rule does not name (a new model's class) fails at the threshold:
    # an unknown defect must not pass silently.
    default: ClassRule = ClassRule()

    def __post_init__(self) -> None:
        if self.unit not in ("px", "mm"):
            raise ValueError(f"rule unit must be 'px' or 'mm', got {self.unit!r}")
        # A calibration, when given, must be usable whatever the unit: switching to mm must not judge with garbage.
        if self.px_per_mm is not None and not (math.isfinite(self.px_per_mm) and 0 < self.px_per_mm <= 1e6):
            raise ValueError(f"px_per_mm must be a finite number > 0, got {self.px_per_mm}")
        if self.unit == "mm" and self.px_per_mm is None:
            raise ValueError("a rule in mm needs a px/mm calibration > 0 (px_per_mm)")

    def for_class(self, label: str) -> ClassRule:
        return self.classes.get(label, self.default)

    def size(self, det: Detection) -> float:
        """The detection's longer side in the rule's unit."""
        px = max(det.width, det.height)
        return px / self.px_per_mm if self.unit == "mm" else px

    def fails(self, det: Detection) -> bool:
        rule = self.for_class(det.label)
        return det.score >= rule.min_score and self.size(det) >= rule.min_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "px_per_mm": self.px_per_mm,
            "classes": {k: {"min_score": r.min_score, "min_size": r.min_size} for k, r in self.classes.items()},
            "default": {"min_score": self.default.min_score, "min_size": self.default.min_size},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerdictRule:
        if not isinstance(d, dict):
            raise ValueError(f"rule must be a mapping, got {type(d).__name__}")
        try:
            classes = {str(k): ClassRule(float(v.get("min_score", 0.0)), float(v.get("min_size", 0.0)))
                       for k, v in dict(d.get("classes", {})).items()}
            default = d.get("default", {})
            px_per_mm = d.get("px_per_mm")
            return cls(
                classes=classes,
                unit=str(d.get("unit", "px")),
                px_per_mm=float(px_per_mm) if px_per_mm is not None else None,
                default=ClassRule(float(default.get("min_score", 0.0)), float(default.get("min_size", 0.0))),
            )
        except (AttributeError, TypeError, OverflowError) as exc:
            raise ValueError(f"rule is malformed: {exc}") from exc

    def describe(self) -> str:
        unit = self.unit
        parts = [f"{k}: score≥{r.min_score:g}, size≥{r.min_size:g} {unit}" for k, r in sorted(self.classes.items())]
        if self.unit == "mm":
            parts.append(f"{self.px_per_mm:g} px/mm")
        return "; ".join(parts) if parts else "any detection fails"


@dataclass(frozen=True)
class Verdict:
    verdict: str  # PASS or FAIL
    shown: tuple[int, ...]  # indices of detections at or above the threshold
    failing: tuple[int, ...]  # indices of shown detections that fail the part

    @property
    def passed(self) -> bool:
        return self.verdict == PASS


def judge(detections: Sequence[Detection], threshold: float, rule: VerdictRule) -> Verdict:
    """Verdict for detections at a confidence threshold (no model run needed)."""
    shown = tuple(i for i, d in enumerate(detections) if d.score >= threshold)
    failing = tuple(i for i in shown if rule.fails(detections[i]))
    return Verdict(FAIL if failing else PASS, shown, failing)
