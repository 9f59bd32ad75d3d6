"""The result message every output sends: one JSON object per logged inspection.

Documented by resources/result.schema.json (tests check real payloads against it).
Built from the log row alone, so a result sent again after a restart is the same
message, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 1  # bump when a field changes meaning or goes; new optional fields keep it
DEFAULT_REGION = "default"  # the name given to the single region of a row logged without regions


def result_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """The message for one inspection, from the row `InspectionStore.get()` gives back.

    `defects`: the detections at or above their decision threshold (the log also
    keeps weaker ones, for QA); `fails` says which made the part fail.
    """
    regions = [{"name": str(r["name"]), "box": [int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])],
                "threshold": float(r["threshold"]), "verdict": str(r["verdict"])} for r in row.get("regions") or ()]
    if not regions:  # a whole-frame inspection: its one region is the row's
        regions = [{"name": DEFAULT_REGION, "box": [int(row["roi_x"]), int(row["roi_y"]), int(row["roi_w"]), int(row["roi_h"])],
                    "threshold": float(row["threshold"]), "verdict": str(row["verdict"])}]
    default_region = regions[0]["name"] if len(regions) == 1 else None
    defects = [{"class": str(d["label"]), "score": round(float(d["score"]), 4),
                "box": [round(float(d[k]), 1) for k in ("x1", "y1", "x2", "y2")],
                "region": d["region"] if d.get("region") is not None else default_region, "fails": bool(d["fails"])}
               for d in row.get("detections") or () if d["shown"]]
    defects.sort(key=lambda d: -d["score"])
    return {
        "schema_version": SCHEMA_VERSION,
        "uid": str(row["uid"]),
        "seq": int(row["id"]),
        "time": str(row["created_at"]),
        "station": str(row["station"]),
        "recipe": str(row.get("recipe") or ""),
        "recipe_version": int(row.get("recipe_version") or 0),
        "part_id": str(row["part_id"]),
        "job_id": str(row.get("job_id") or ""),
        "trigger": str(row.get("trigger") or "operator"),
        "operator": str(row["operator"]),
        "source": str(row["source"]),
        "verdict": str(row["verdict"]),
        "regions": regions,
        "defects": defects,
        "frame": {"width": int(row["frame_w"]), "height": int(row["frame_h"])},
        "model_id": str(row["model_id"]),
        "model_version": str(row["model_version"]),
        "threshold": float(row["threshold"]),
        "inference_ms": None if row["inference_ms"] is None else round(float(row["inference_ms"]), 2),
        "note": str(row.get("note") or ""),
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The payload as compact UTF-8 JSON (what goes on the wire)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
