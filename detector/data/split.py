"""Seeded, stratified train/val split that never separates identical pictures.

Why group duplicates: NEU-DET ships `patches_101.jpg` and `patches_105.jpg`, the
same picture annotated twice. One in train and one in val would let the model be
validated on a picture it was trained on. Pictures are grouped when their decoded
grey pixels are identical, or when their 32x32 thumbnails differ by at most
`near_tolerance` grey levels on average (catches re-encoded copies; on NEU-DET
the closest *different* pictures are about 2.7 levels apart).

Why stratify: each group is filed under its rarest class (or "negative" when it
has no boxes), and every stratum is split at `val_fraction`, so a rare class is
not left out of val by bad luck.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import cv2
import numpy as np

from detector.data.annotations import AnnotatedImage
from detector.data.imagefiles import read_grey

NEGATIVE = "negative"
THUMB_SIZE = 32


def duplicate_groups(images: list[AnnotatedImage], near_tolerance: float = 1.0) -> list[list[int]]:
    """Indices of images grouped by identical / near-identical pixels (singletons included)."""
    parent = list(range(len(images)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(j)] = find(i)

    by_hash: dict[str, int] = {}
    thumbs_by_shape: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for i, image in enumerate(images):
        pixels = read_grey(image.image_path)
        digest = hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()
        if digest in by_hash:
            union(by_hash[digest], i)
            continue
        by_hash[digest] = i
        if near_tolerance > 0:
            thumbs_by_shape.setdefault(pixels.shape[:2], []).append((i, _thumbnail(pixels)))
    for entries in thumbs_by_shape.values():
        _union_near(entries, near_tolerance, union)
    groups: dict[int, list[int]] = {}
    for i in range(len(images)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _thumbnail(pixels: np.ndarray) -> np.ndarray:
    small = cv2.resize(pixels, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32).ravel()


def _union_near(entries: list[tuple[int, np.ndarray]], tolerance: float, union) -> None:
    if len(entries) < 2:
        return
    ids = [i for i, _ in entries]
    thumbs = np.stack([t for _, t in entries])
    for row in range(len(ids) - 1):
        distance = np.abs(thumbs[row + 1 :] - thumbs[row]).mean(axis=1)
        for offset in np.nonzero(distance <= tolerance)[0]:
            union(ids[row], ids[row + 1 + offset])


def stratum(labels: set[str], frequency: Counter) -> str:
    """The group's rarest label (ties broken by name), or NEGATIVE if it has none."""
    if not labels:
        return NEGATIVE
    return min(labels, key=lambda label: (frequency[label], label))


def split_train_val(
    images: list[AnnotatedImage],
    val_fraction: float,
    seed: int,
    near_tolerance: float = 1.0,
    groups: list[list[int]] | None = None,
) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """(train, val), each in input order. Same inputs and seed -> same split.

    `groups` (from `duplicate_groups`) may be passed in to avoid decoding twice.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = [list(g) for g in (groups if groups is not None else duplicate_groups(images, near_tolerance))]
    # Sort by name so the outcome does not depend on the order images came in.
    groups.sort(key=lambda g: min((images[i].name, str(images[i].image_path)) for i in g))
    group_labels = [set().union(*(images[i].labels() for i in g)) for g in groups]
    frequency = Counter(label for labels in group_labels for label in labels)
    strata: dict[str, list[int]] = {}
    for index, labels in enumerate(group_labels):
        strata.setdefault(stratum(labels, frequency), []).append(index)
    rng = np.random.default_rng(seed)
    val_ids: set[int] = set()
    for name in sorted(strata):
        members = strata[name]
        order = rng.permutation(len(members))
        target = round(sum(len(groups[members[k]]) for k in order) * val_fraction)
        taken = 0
        for k in order:
            if taken >= target:
                break
            group = groups[members[k]]
            val_ids.update(group)
            taken += len(group)
    train = [im for i, im in enumerate(images) if i not in val_ids]
    val = [im for i, im in enumerate(images) if i in val_ids]
    return train, val
