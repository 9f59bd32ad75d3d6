"""Reviewed inspections -> a training set, with a report people can act on. No Qt.

The gallery's "Export training set…" and `python -m app export-training-set`
both run `export_reviewed` and show its `lines()`: how many inspections were
exported, which were skipped and why, and, when none were, what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from app.review import export_training_set
from app.store import GalleryFilter, InspectionLog


@dataclass(frozen=True)
class TrainingExport:
    summary: dict  # export_training_set's: images, boxes, skipped, classes, annotations
    reviewed: int  # reviewed inspections in the filter (the ones the export looked at)
    matching: int  # all inspections in the filter, reviewed or not

    @property
    def exported(self) -> int:
        return int(self.summary["images"])

    @property
    def skipped(self) -> list[str]:
        """One "#id: why" per reviewed inspection left out."""
        return [str(s) for s in self.summary["skipped"]]

    def headline(self) -> str:
        s = self.summary
        if self.exported:
            return (f"exported {s['images']} reviewed pictures with {s['boxes']} boxes "
                    f"({', '.join(s['classes']) or 'no classes'}) to {s['annotations']}")
        if not self.reviewed:
            return (f"nothing exported: no reviewed inspections in this filter ({self.matching} inspections match it): "
                    "review some first")
        return f"nothing exported: all {self.reviewed} reviewed inspections in this filter were skipped"

    def lines(self) -> list[str]:
        """The headline, then one line per inspection: exported out of reviewed, and each skipped one with why."""
        out = [self.headline()]
        if self.reviewed:
            out.append(f"{self.exported} of {self.reviewed} reviewed inspections exported, {len(self.skipped)} skipped"
                       + (":" if self.skipped else ""))
            out += [f"  skipped {s}" for s in self.skipped]
        return out


def export_reviewed(store: InspectionLog, out_dir: str | Path, flt: GalleryFilter | None = None,
                    crop_to_region: bool = True) -> TrainingExport:
    """Export the reviewed inspections matching `flt` (its reviewed/not-reviewed choice is ignored)."""
    flt = flt or GalleryFilter()
    matching = store.gallery_count(replace(flt, reviewed=None))
    reviewed = store.gallery_count(replace(flt, reviewed=True))
    summary = export_training_set(store, out_dir, flt, crop_to_region=crop_to_region)
    return TrainingExport(summary, reviewed, matching)
