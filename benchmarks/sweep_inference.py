"""AP50 of one model under each inference setting: input size, flip test, NMS IoU.

    .venv/bin/python benchmarks/sweep_inference.py --model MODEL.pth --split SPLIT_DIR \
        [--sizes 224,256,288,320] [--nms 0.3,0.4,0.5,0.6,0.7,off] [--flip on,off] [--threads 2]

SPLIT_DIR is a split folder of `python -m detector dataset` (annotations.json + images/).
Pick settings on pictures held out from training (not the validation split the
model is reported on), then set them with `python -m detector model`. The
network runs once per size and flip setting; NMS is applied to its outputs
afterwards. Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _floats_or_off(text: str) -> list[float | None]:
    return [None if v.strip() == "off" else float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model file (.pth; an .onnx runs only at its own input size)")
    parser.add_argument("--split", type=Path, required=True, help="split folder: annotations.json + images/")
    parser.add_argument("--sizes", default="256", help="network input sizes, comma-separated (multiples of 32)")
    parser.add_argument("--nms", default="0.5", help="NMS IoUs, comma-separated; 'off' for none")
    parser.add_argument("--flip", default="on", help="on, off or on,off")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from detector.api import Detector
    from detector.data.coco import load_coco
    from detector.evaluate import EVAL_SCORE_THRESHOLD, evaluate_detections, image_key
    from detector.images import load_grey

    det = Detector(args.model, threads=args.threads)
    images = load_coco(args.split / "annotations.json")
    greys = [load_grey(str(img.image_path)) for img in images]
    for size in (int(s) for s in args.sizes.split(",")):
        for flip in (f.strip() == "on" for f in args.flip.split(",")):
            maps = []
            for start in range(0, len(greys), 16):
                maps += det.network_maps(greys[start:start + 16], input_size=size, flip_test=flip)
            for nms in _floats_or_off(args.nms):
                found = det.decode_maps(maps, EVAL_SCORE_THRESHOLD, nms)
                dets = {image_key(img): d for img, d in zip(images, found)}
                result = evaluate_detections(images, dets, list(det.metadata.class_names))
                print(json.dumps({"size": size, "flip": flip, "nms_iou": nms,
                                  **{f"ap50_{c}": round(r.ap50, 3) for c, r in result.classes.items()},
                                  "map50": round(result.map50, 3), "coco_map": round(result.map, 3)}), flush=True)


if __name__ == "__main__":
    main()
