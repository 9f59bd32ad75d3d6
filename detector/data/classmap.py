"""Renaming source classes to the project's classes, e.g. `scratches=scratch,pitted_surface=pit`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from detector.data.annotations import AnnotatedImage, Box


@dataclass(frozen=True)
class ClassMap:
    """Source label -> target label. Several sources may share one target.

    Boxes of unmapped classes are dropped unless `keep_unmapped` is set, in which
    case they keep their original name. Images are never dropped: an image whose
    boxes are all removed is still a valid negative example.
    """

    mapping: dict[str, str] = field(default_factory=dict)
    keep_unmapped: bool = False

    def map_label(self, label: str) -> str | None:
        label = label.strip()
        if label in self.mapping:
            return self.mapping[label]
        return label if self.keep_unmapped else None

    def map_boxes(self, boxes: list[Box]) -> list[Box]:
        mapped = []
        for box in boxes:
            target = self.map_label(box.label)
            if target is not None:
                mapped.append(replace(box, label=target))
        return mapped

    def apply(self, images: list[AnnotatedImage]) -> list[AnnotatedImage]:
        return [
            AnnotatedImage(im.image_path, im.width, im.height, self.map_boxes(im.boxes))
            for im in images
        ]

    def target_classes(self) -> list[str]:
        """Target names in the order they first appear in the map (no duplicates)."""
        return list(dict.fromkeys(self.mapping.values()))

    def to_text(self) -> str:
        return ",".join(f"{src}={dst}" for src, dst in self.mapping.items())


def parse_class_map(text: str | None, keep_unmapped: bool = False) -> ClassMap | None:
    """Parse `src=dst,src2=dst2`. None or blank text means "no mapping" (returns None)."""
    if text is None or not text.strip():
        return None
    mapping: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue  # tolerate a trailing comma
        if item.count("=") != 1:
            raise ValueError(
                f"bad class-map entry {item!r}: expected SOURCE=TARGET, "
                "e.g. 'scratches=scratch,pitted_surface=pit'"
            )
        src, dst = (part.strip() for part in item.split("="))
        if not src or not dst:
            raise ValueError(f"bad class-map entry {item!r}: empty class name")
        if src in mapping and mapping[src] != dst:
            raise ValueError(f"class {src!r} is mapped twice ({mapping[src]!r} and {dst!r})")
        mapping[src] = dst
    if not mapping:
        raise ValueError(f"class map {text!r} has no SOURCE=TARGET entries")
    return ClassMap(mapping, keep_unmapped)
