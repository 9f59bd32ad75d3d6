"""Model cards: a Markdown page beside each model file, made from its metadata.

Everything on the card comes from the model file itself (training summary,
data set summary, validation results), so card and model cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from detector.model_file import ModelFile, load_model_file

NEU_DET_CITATION = (
    "K. Song, Y. Yan. A noise robust method based on completed local binary patterns for hot-rolled steel "
    "strip surface defects. Applied Surface Science 285 (2013) 858-864.\n"
    "- Y. He, K. Song, Q. Meng, Y. Yan. An end-to-end steel surface defect detection approach via fusing "
    "multiple hierarchical features. IEEE Trans. Instrum. Meas. 69(4) (2020) 1493-1504."
)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _int8_line(path: Path, classes: Sequence[str]) -> str:
    """The card's line on the int8 file beside the model: how it was made and, if measured, its AP50 against fp32."""
    import onnxruntime as ort

    from detector.quantize import int8_rule, noisy_ap50_drops

    props = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    info = json.loads(props.get("quantization", "{}"))
    line = (f"- int8 variant: `{path.name}` ({path.stat().st_size / 1e6:.1f} MB, ONNX Runtime static quantization "
            f"calibrated on {info.get('calibration_count', '?')} training pictures, made by `python -m detector quantize`")
    val = info.get("validation")
    if val:
        fp32, int8 = val["ap50"]["fp32"], val["ap50"]["int8"]
        line += ("; validation AP50 int8 (fp32): " + ", ".join(
            f"{c} {_fmt(int8[c])} ({_fmt(fp32[c])})" for c in classes if c in fp32) + f", on {val['n_images']} pictures")
        noisy = noisy_ap50_drops(val)
        if noisy:
            line += (f"; on {val['noisy_copies']['draws']} noisy copies of them, mean paired drop " + ", ".join(
                f"{c} {noisy[c][0]:.2f} points (sd {noisy[c][1]:.2f})" for c in classes if c in noisy))
        line += f"; {'within' if int8_rule(val)[0] else 'OVER'} the 1-point rule"
    return line + ")" + (f": `{info['command']}`" if info.get("command") else "")


def _recipe_lines(recipe: dict | None, classes: Sequence[str]) -> list[str]:
    """The recipe's record: the one command, its cost, and AP50 after every epoch against CPU time."""
    if not recipe:
        return []
    lines = [
        "",
        "## Recipe (the whole schedule in one command)",
        "",
        f"- Recipe: `{Path(recipe['recipe']).name}`; command: `{recipe['command']}`",
        f"- Cost of everything (data set, every stage with its validation, the final validation): "
        f"{recipe['cpu_s'] / 60:.1f} CPU-minutes ({recipe['cpu_s'] / 120:.1f} minutes of 2 cores), "
        f"{recipe['wall_s'] / 60:.1f} wall minutes",
        "- Validation AP50 after each epoch (station metric with NMS, single pass without flip test) against CPU time:",
        "",
        "| stage | epoch | CPU-minutes | wall minutes | " + " | ".join(f"{c} AP50" for c in classes) + " | mAP50 |",
        "|---" * (5 + len(classes)) + "|",
    ]
    for row in recipe.get("curve", []):
        lines.append(f"| {row['stage']} | {row['epoch']} | {row['cpu_s'] / 60:.1f} | {row['wall_s'] / 60:.1f} | "
                     + " | ".join(_fmt(row.get(f"station/ap50_{c}")) for c in classes)
                     + f" | {_fmt(row.get('station/mAP50'))} |")
    return lines


def _averaged_lines(averaged: dict | None) -> list[str]:
    """The ingredients of a weight average (`python -m detector average`); the sections above describe the first."""
    if not averaged:
        return []
    return [f"- Weights: the mean of {len(averaged['ingredients'])} runs' weights (`{averaged.get('command')}`, "
            f"{averaged.get('at')}); the training above is the first run's:",
            *[f"  - `{i.get('file')}` (sha256 `{i.get('sha256')}…`, validation mAP50 alone {_fmt(i.get('validation_map50'))}, "
              f"{_fmt((i.get('cpu_seconds_total') or 0) / 60)} CPU-minutes): "
              f"`{i.get('command')}`" for i in averaged["ingredients"]]]


def _verdict_lines(verdicts: list[dict] | None) -> list[str]:
    """What the station would say about each validation picture (`detector.evaluate.PictureVerdicts`)."""
    from detector.evaluate import listed_names

    lines = []
    for v in verdicts or []:
        escapes, rejects = v.get("escapes", []), v.get("false_rejects", [])
        found = "; ".join(f"{name} found on {row.get('found')} of {row.get('pictures')} pictures"
                          for name, row in v.get("classes", {}).items())
        lines += [
            "",
            f"PASS/FAIL per picture at threshold {v.get('threshold')} (FAIL when any detection reaches it, the "
            f"station's default rule): {v.get('defect_pictures')} defect pictures, {len(escapes)} of them PASS "
            f"(escapes{listed_names(escapes, 10)}); {v.get('clean_pictures')} clean pictures, "
            f"{len(rejects)} of them FAIL (false rejects{listed_names(rejects, 10)})." + (f" {found}." if found else ""),
        ]
    return lines


def render_model_card(model: ModelFile, model_path: Path) -> str:
    meta, train = model.metadata, model.metadata.training
    data = train.get("dataset", {})
    val = train.get("validation", {})
    lines = [
        f"# Model card: {meta.name}",
        "",
        f"- File: `{model_path.name}` (sha256 `{model.sha256[:16]}…`, {model_path.stat().st_size / 1e6:.1f} MB)",
        *[f"- Same model for the station runtime: `{o.name}` (ONNX, {o.stat().st_size / 1e6:.1f} MB, made by "
          f"`python -m detector export`)" for o in [model_path.with_suffix(".onnx")] if o.is_file()],
        *[_int8_line(q, meta.class_names) for q in [model_path.with_suffix(".int8.onnx")] if q.is_file()],
        f"- Created: {meta.created}",
        "- Architecture: MMDetection CenterNet "
        f"({model.model_cfg['backbone']['type']} backbone, CTResNetNeck without DCN, {model.model_cfg['bbox_head']['type']}), "
        f"input {meta.input_size}x{meta.input_size} grey (letterboxed, replicated to 3 channels)",
        f"- Classes: {', '.join(meta.class_names)}; default threshold {meta.default_threshold}",
        "- Inference: " + ("flip test on (heatmaps and sizes averaged over the picture and its horizontal and "
                           "vertical mirror images: one 3x batch per picture)" if meta.flip_test else "single pass")
        + (f"; class-wise NMS of the boxes at IoU {meta.nms_iou}" if meta.nms_iou is not None
           else "; no NMS (every heatmap peak is a box)"),
        f"- Pretrained start: {train.get('pretrained', 'n/a')}",
        *[f"  - fine-tuned from: `{st.get('name')}` (sha256 `{st.get('sha256')}…`, {st.get('config')}, "
          f"{(st.get('train_seconds') or 0) / 60:.1f} min, {st.get('epochs_run')} epochs, started from "
          f"{st.get('pretrained')}): `{st.get('command')}`" for st in reversed(train.get("lineage", []))],
        *([f"- Training time of all stages together: "
           f"{(train.get('train_seconds', 0) + sum(st.get('train_seconds') or 0 for st in train['lineage'])) / 60:.1f} min"]
          if train.get("lineage") else []),
        f"- Config: `detector/configs/{train.get('config', '?')}.py`",
        "",
        "## Training",
        "",
        f"- Hardware: {train.get('hardware', train.get('device', 'n/a'))}, {train.get('threads', '?')} torch threads"
        + (f" in each of {train['processes']} processes (torchrun)" if train.get("processes", 1) > 1 else ""),
        f"- Time: {train.get('train_seconds', 0) / 60:.1f} min for {train.get('epochs_run', '?')} of "
        f"{train.get('epochs_planned', '?')} planned epochs (time budget {train.get('time_budget_minutes') or 'none'} min) "
        f"(batch {train.get('batch_size', '?')}, AdamW lr {train.get('lr', '?')}"
        + (f", size branch at {train['size_lr_mult']:g}x that lr" if train.get("size_lr_mult") is not None else "")
        + ", cosine decay"
        + (f", each step at a random size {train['multi_scale'][0]}-{train['multi_scale'][1]} px"
           if train.get("multi_scale") else "")
        + (", weights averaged (EMA" + (f", constant momentum {train['ema_momentum']}" if train.get("ema_momentum") else "")
           + ")" if train.get("ema") else "") + ")",
        *([f"- CPU time: {train['cpu_seconds_total'] / 60:.1f} CPU-minutes (user + system time of the training process, "
           f"all threads; {train['wall_seconds_total'] / 60:.1f} wall minutes), precision {train.get('precision', 'fp32')}"]
          if train.get("cpu_seconds_total") else []),
        (f"- Model made from the last epoch ({train.get('best_checkpoint')}): a fixed schedule, nothing picked on the "
         "validation split" if train.get("kept") == "last"
         else f"- Best checkpoint (by validation AP50): {train.get('best_checkpoint', 'n/a')}"),
        "- Validation AP50 per epoch (MMDetection's COCO metric): "
        + ", ".join(f"{row.get('step')}: {row.get('coco/bbox_mAP_50', 0):.3f}" for row in train.get("val_history", [])),
        f"- Command: `{train.get('command', 'n/a')}`",
        *[f"- Changed after training ({c.get('at')}): {', '.join(f'{k} = {v}' for k, v in c.get('changes', {}).items())}: "
          f"`{c.get('command')}`" for c in train.get("settings_changes", [])],
        *_averaged_lines(train.get("averaged")),
        *_recipe_lines(train.get("recipe"), meta.class_names),
        "",
        "## Data",
        "",
        *[f"- Source: `{s['path']}` ({s['format']}, {s['images']} pictures)" for s in data.get("sources", [])],
        f"- Class map: `{data.get('class_map')}`; split and expansion options: "
        f"`{json.dumps(data.get('options', {}), sort_keys=True)}`",
        f"- Counts per split: `{json.dumps(data.get('splits', {}), sort_keys=True)}`",
        f"- Negatives (pictures without a box of these classes): `{json.dumps(data.get('negatives', {}), sort_keys=True)}`",
        "- Licence: NEU-DET states no licence; it is published for research use with a request to cite:",
        f"- {NEU_DET_CITATION}",
        "",
        "## Validation (own split, never trained on)",
        "",
        f"IoU {val.get('iou_threshold', 0.5)}; AP50 = area under the precision-recall curve (all-point "
        "interpolation), `difficult` boxes ignored; AP = COCO mAP@[.5:.95]. "
        + ("The model is the last epoch of a fixed schedule: nothing was picked on this split. " if train.get("kept") == "last"
           else "The best epoch was picked on this same split, so the figures lean slightly optimistic. ")
        +
        f"Measured {'with' if val.get('flip_test') else 'without'} flip test, "
        + (f"with NMS at IoU {val['nms_iou']}." if val.get("nms_iou") else "without NMS."),
        "",
        "| class | AP50 | AP@[.5:.95] | GT boxes |",
        "|---|---|---|---|",
    ]
    for name, row in val.get("classes", {}).items():
        lines.append(f"| {name} | {_fmt(row.get('ap50'))} | {_fmt(row.get('ap'))} | {row.get('n_gt', '?')} |")
    lines += [
        f"| **mean** | **{_fmt(val.get('map50'))}** | **{_fmt(val.get('map'))}** | |",
        *_verdict_lines(val.get("verdicts")),
        "",
        "## Limits",
        "",
        "- Trained on 200x200 hot-rolled steel strip pictures; other surfaces, scales or lighting need "
        "fine-tuning on the plant's own images (`python -m detector dataset` + `train`).",
        "- `pit` boxes follow NEU-DET's convention: one box around a cluster of pits, not one per pit.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_path: Path, out: Path | None = None) -> Path:
    model_path = Path(model_path)
    out = out or model_path.with_suffix(".md")
    out.write_text(render_model_card(load_model_file(model_path), model_path), encoding="utf-8")
    return out
