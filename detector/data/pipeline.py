"""`build_dataset`: source annotations in, MMDetection-ready train/val folders out.

Steps: import (VOC / COCO / LabelMe, auto-detected) -> class map -> ROI crop ->
thin out negatives -> duplicate-aware stratified split -> expansion (train only
by default; val stays the original pictures so its scores mean something) ->
grey images + COCO JSON per split + `dataset.json` summary for the model card.

Output layout:
    OUT/train/images/*.png   OUT/train/annotations.json
    OUT/val/images/*.png     OUT/val/annotations.json
    OUT/dataset.json
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.data.annotations import AnnotatedImage
from detector.data.classmap import ClassMap
from detector.data.coco import load_coco, write_coco
from detector.data.expand import ExpandParams, expand
from detector.data.labelme import load_labelme_dir
from detector.data.roi import as_roi, check_roi, crop_region
from detector.data.split import duplicate_groups, split_train_val
from detector.data.voc import find_voc_folders, load_voc_dir
from detector.regions import Roi

FORMATS = ("voc", "coco", "labelme")
SPLITS = ("train", "val")


@dataclass
class SourceInfo:
    path: Path
    format: str
    images: list[AnnotatedImage] = field(default_factory=list)


def detect_format(source: Path) -> str:
    """'voc', 'coco' or 'labelme' from what the path holds."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source}")
    if source.is_file():
        if source.suffix.lower() == ".json":
            return "coco"
        raise ValueError(f"{source}: a source file must be a COCO .json; folders may hold VOC or LabelMe")
    try:
        find_voc_folders(source)
        return "voc"
    except FileNotFoundError:
        pass
    for json_path in sorted(source.glob("*.json")) + sorted(source.rglob("*.json"))[:50]:
        kind = _json_kind(json_path)
        if kind:
            return kind
    raise ValueError(
        f"cannot tell the annotation format of {source}: expected VOC XML "
        "(annotations/*.xml), a COCO .json or LabelMe .json files; pass --format"
    )


def _json_kind(json_path: Path) -> str | None:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("shapes"), list):
        return "labelme"
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        return "coco"
    return None


def coco_file_in(folder: Path) -> Path:
    """The COCO JSON of a folder: `annotations.json`, else the only COCO .json there."""
    if (folder / "annotations.json").is_file():
        return folder / "annotations.json"
    found = [p for p in sorted(folder.glob("*.json")) if _json_kind(p) == "coco"]
    if len(found) != 1:
        raise ValueError(f"{folder}: expected one COCO .json file, found {len(found)}; name the file itself")
    return found[0]


def load_source(source: Path, fmt: str = "auto", class_map: ClassMap | None = None) -> SourceInfo:
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source}")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "voc":
        images = load_voc_dir(source, class_map)
    elif fmt == "labelme":
        images = load_labelme_dir(source, class_map)
    elif fmt == "coco":
        json_path = source if source.is_file() else coco_file_in(source)
        images = load_coco(json_path, class_map=class_map)
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of auto, {', '.join(FORMATS)}")
    return SourceInfo(source, fmt, images)


def class_names(images: list[AnnotatedImage], class_map: ClassMap | None) -> list[str]:
    """Mapped classes in map order, then any other labels present, sorted."""
    first = class_map.target_classes() if class_map else []
    others = sorted({b.label for im in images for b in im.boxes} - set(first))
    return first + others


def keep_negatives(images: list[AnnotatedImage], fraction: float, seed: int) -> list[AnnotatedImage]:
    """All images with boxes plus a seeded `fraction` of those without (input order kept)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"negatives fraction must be in [0, 1], got {fraction}")
    negatives = sorted((im for im in images if not im.boxes), key=lambda im: (im.name, str(im.image_path)))
    count = round(len(negatives) * fraction)
    chosen_ids = np.random.default_rng(seed).permutation(len(negatives))[:count]
    chosen = {id(negatives[i]) for i in chosen_ids}
    return [im for im in images if im.boxes or id(im) in chosen]


def split_counts(images: list[AnnotatedImage], classes: list[str]) -> dict:
    boxes = Counter(b.label for im in images for b in im.boxes)
    with_class = Counter(label for im in images for label in im.labels())
    return {
        "images": len(images),
        "negative_images": sum(1 for im in images if not im.boxes),
        "boxes": {c: boxes[c] for c in classes},
        "images_with_class": {c: with_class[c] for c in classes},
        "difficult_boxes": sum(1 for im in images for b in im.boxes if b.difficult),
    }


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    parts = [out_dir / s for s in SPLITS] + [out_dir / "dataset.json"]
    existing = [p for p in parts if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a data set ({existing[0].name}); use --overwrite")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def build_dataset(
    sources: list[Path],
    out_dir: Path,
    *,
    fmt: str = "auto",
    class_map: ClassMap | None = None,
    roi: Roi | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    expand_variants: int = 0,
    expand_params: ExpandParams | None = None,
    negatives_fraction: float = 1.0,
    expand_val: bool = False,
    min_visible: float = 0.3,
    overwrite: bool = False,
) -> dict:
    """Build OUT/{train,val} and OUT/dataset.json; returns the summary written there."""
    if not sources:
        raise ValueError("give at least one source")
    params = (expand_params or ExpandParams()).validate()
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val fraction must be at least 0 and below 1, got {val_fraction}")
    if not 0 <= negatives_fraction <= 1:
        raise ValueError(f"negatives fraction must be in [0, 1], got {negatives_fraction}")
    if expand_variants < 0:
        raise ValueError(f"expand variants must be 0 or more, got {expand_variants}")
    infos = [load_source(Path(s), fmt, class_map) for s in sources]
    images = [im for info in infos for im in info.images]
    if not images:
        raise ValueError("no annotated images found in " + ", ".join(str(s) for s in sources))
    if roi is not None:  # fail before anything is written
        for image in images:
            check_roi(roi, image.width, image.height, image.image_path.name)
    classes = class_names(images, class_map)
    out_dir = Path(out_dir)
    _prepare_out(out_dir, overwrite)
    with tempfile.TemporaryDirectory(prefix="roi_", dir=out_dir) as tmp:
        if roi is not None:
            images = crop_region(images, roi, Path(tmp), min_visible)
        negatives_found = sum(1 for im in images if not im.boxes)
        groups = duplicate_groups(images)
        train, val = split_train_val(images, val_fraction, seed, groups=groups)
        # Thin negatives in training only: validation keeps every defect-free
        # picture, so its false-positive count stays what the line would see.
        train = keep_negatives(train, negatives_fraction, seed)
        written = {
            "train": expand(train, out_dir / "train/images", expand_variants, seed, params),
            "val": expand(val, out_dir / "val/images", expand_variants if expand_val else 0, seed, params),
        }
    for split in SPLITS:
        write_coco(written[split], classes, out_dir / split / "annotations.json")
    summary = {
        "format_version": 1,
        "sources": [
            {"path": str(i.path.resolve()), "format": i.format, "images": len(i.images)} for i in infos
        ],
        "classes": classes,
        "class_map": class_map.to_text() if class_map else None,
        "keep_unmapped": bool(class_map and class_map.keep_unmapped),
        "options": {
            "roi": as_roi(roi).to_list() if roi is not None else None,
            "val_fraction": val_fraction,
            "seed": seed,
            "expand_variants": expand_variants,
            "expand_val": expand_val,
            "expand_params": params.to_dict(),
            "negatives_fraction": negatives_fraction,
            "min_visible": min_visible,
        },
        "negatives": {"found": negatives_found, "kept_in_train": sum(1 for im in train if not im.boxes),
                      "in_val": sum(1 for im in val if not im.boxes)},
        "duplicate_groups": [sorted(images[i].name for i in g) for g in groups if len(g) > 1],
        "source_images": {"train": len(train), "val": len(val)},
        "splits": {split: split_counts(written[split], classes) for split in SPLITS},
        "files": {split: f"{split}/annotations.json" for split in SPLITS},
    }
    (out_dir / "dataset.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def summary_table(summary: dict) -> str:
    """Plain-text table: boxes (images) per class and split."""
    rows = [("class", *SPLITS)]
    for name in summary["classes"]:
        rows.append((name, *(
            f"{summary['splits'][s]['boxes'][name]} ({summary['splits'][s]['images_with_class'][name]} img)"
            for s in SPLITS
        )))
    rows.append(("no boxes", *(f"{summary['splits'][s]['negative_images']} img" for s in SPLITS)))
    rows.append(("all images", *(str(summary["splits"][s]["images"]) for s in SPLITS)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
