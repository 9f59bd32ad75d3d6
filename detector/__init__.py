"""Scratch and pit detection for metal parts (MMDetection CenterNet). No Qt here."""

from __future__ import annotations

from detector.api import Detector, detect
from detector.detection import Detection
from detector.model_file import ModelMetadata

__all__ = ["Detection", "Detector", "ModelMetadata", "detect"]
