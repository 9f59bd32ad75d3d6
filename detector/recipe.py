"""`python -m detector train --recipe NAME`: a whole training schedule in one command.

A recipe (`detector/recipes/NAME.toml`) names the labelled pictures, the
options of `python -m detector dataset` and one or more training stages, each
given as options of `python -m detector train`; stage N+1 starts from stage
N's model file. Everything runs in WORK_DIR:

    WORK_DIR/data/            the data set (split + expansion)
    WORK_DIR/stage1/ ...      one `train` work dir per stage (logs, checkpoints, curve.jsonl)
    WORK_DIR/model.pth + .md  the final model file and its card (or --out)
    WORK_DIR/recipe.json      what ran, CPU and wall time per step, AP50 against CPU time

Each step is the ordinary sub-command with the options the recipe lists, so
the card of every stage shows a command that repeats it by hand. `--resume`
skips the steps that finished and resumes the one that did not.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
REPO_ROOT = Path(__file__).resolve().parents[1]
# Options a recipe may not set: the recipe runner owns the paths and the model-file settings go in [model].
RESERVED = {"source", "out", "data", "work-dir", "init-from", "resume", "recipe", "launcher", "name", "threads", "device",
            "overwrite"}
MODEL_KEYS = {"flip-test", "nms-iou", "threshold", "keep"}


class RecipeError(ValueError):
    """A recipe file that cannot be run; the message names the file and the problem."""


@dataclass(frozen=True)
class Recipe:
    name: str  # model name written into the model file
    path: Path
    source: Path | None
    dataset: dict = field(default_factory=dict)  # `detector dataset` options
    model: dict = field(default_factory=dict)  # flip-test, nms-iou, threshold, keep: given to every stage
    stages: tuple[dict, ...] = ()  # `detector train` options per stage


def recipe_path(name: str) -> Path:
    """A recipe by .toml path, or by name in detector/recipes."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {path}")
        return path
    candidate = RECIPE_DIR / f"{path.stem}.toml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.toml")))
        raise FileNotFoundError(f"no recipe {name!r}; known: {known}")
    return candidate


def _options(table: dict, parser: argparse.ArgumentParser, where: str, path: Path) -> dict:
    known = {opt[2:] for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
    for key, value in table.items():
        if key in RESERVED or key not in known:
            why = "set by the recipe runner" if key in RESERVED else "not an option of this step"
            raise RecipeError(f"{path}: [{where}] {key!r}: {why}")
        if not isinstance(value, (bool, int, float, str)):
            raise RecipeError(f"{path}: [{where}] {key!r} must be a number, text or true/false, got {value!r}")
    return dict(table)


def load_recipe(name: str) -> Recipe:
    import tomllib

    from detector.cli import build_parser

    path = recipe_path(name)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from exc
    commands = build_parser()._subparsers._group_actions[0].choices
    unknown = set(raw) - {"name", "source", "dataset", "model", "stage"}
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; a recipe has name, source, [dataset], [model], [[stage]]")
    stages = raw.get("stage")
    if not isinstance(stages, list) or not stages:
        raise RecipeError(f"{path}: no [[stage]]: a recipe trains at least one stage")
    model = raw.get("model", {})
    if set(model) - MODEL_KEYS:
        raise RecipeError(f"{path}: [model] {sorted(set(model) - MODEL_KEYS)}: [model] holds only {sorted(MODEL_KEYS)}")
    for i, stage in enumerate(stages, 1):
        if set(stage) & MODEL_KEYS:
            raise RecipeError(f"{path}: [[stage]] {i}: {sorted(set(stage) & MODEL_KEYS)} belong in [model]")
        if not isinstance(stage.get("epochs"), int) or stage["epochs"] < 1:
            raise RecipeError(f"{path}: [[stage]] {i}: 'epochs' must be a whole number of at least 1")
    return Recipe(
        name=str(raw.get("name") or path.stem),
        path=path,
        source=(REPO_ROOT / raw["source"]) if raw.get("source") else None,
        dataset=_options(raw.get("dataset", {}), commands["dataset"], "dataset", path),
        model=_options(model, commands["train"], "model", path),
        stages=tuple(_options(s, commands["train"], f"stage {i}", path) for i, s in enumerate(stages, 1)),
    )


def as_argv(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not False:
            argv += [f"--{key}", str(value)]
    return argv


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_age() -> float:
    """Wall seconds since this process started (Linux /proc; 0 where that is not there)."""
    import os

    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def run_recipe(recipe: Recipe, source: Path, work_dir: Path, *, out: Path | None = None, resume: bool = False,
               seed: int = 0, device: str = "auto", threads: int | None = None, command: str = "") -> int:
    """Run `recipe` on the labelled pictures at `source` in `work_dir`; the exit status of the step that failed, or 0.

    `out`: the final model file (default WORK_DIR/model.pth). `resume` skips
    the finished steps and resumes the one that was not. `seed`, `device` and
    `threads` go to every training stage; `command` is recorded in recipe.json.
    """
    from detector.cli import main

    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "recipe.json"
    state = json.loads(state_path.read_text()) if resume and state_path.is_file() else {}
    state.update(recipe=str(recipe.path), source=str(Path(source).resolve()), command=command)
    state.setdefault("steps", {})
    # Starting Python, torch and this command: counted once, on the first run of a work dir.
    state["steps"].setdefault("startup", {"cpu_s": round(cpu_seconds(), 1), "wall_s": round(process_age(), 1)})

    def save_state() -> None:
        from detector.model_file import portable_paths

        # Repository-relative, like the model file's record: a run directory is copied between machines.
        state_path.write_text(json.dumps(portable_paths(state), indent=2))

    data = work / "data"
    if "data" not in state["steps"] or not (data / "dataset.json").is_file():
        cpu, wall = cpu_seconds(), time.monotonic()
        code = main(["dataset", "--source", str(source), "--out", str(data), "--overwrite", *as_argv(recipe.dataset)])
        if code:
            return code
        state["steps"]["data"] = {"cpu_s": round(cpu_seconds() - cpu, 1), "wall_s": round(time.monotonic() - wall, 1)}
        save_state()

    common = ["--data", str(data), "--name", recipe.name, *as_argv(recipe.model), "--seed", str(seed)]
    common += ["--device", device] + (["--threads", str(threads)] if threads else [])
    previous = None
    for i, stage in enumerate(recipe.stages, 1):
        stage_dir = work / f"stage{i}"
        key = f"stage{i}"
        if key not in state["steps"] or not (stage_dir / "model.pth").is_file():
            argv = ["train", *common, "--work-dir", str(stage_dir), *as_argv(stage)]
            if previous is not None:
                argv += ["--init-from", str(previous)]
            resuming = resume and (stage_dir / "last_checkpoint").is_file()
            code = main([*argv, "--resume"] if resuming else argv)
            if code:
                return code
            state["steps"][key] = _stage_summary(stage_dir / "model.pth")
            save_state()
        previous = stage_dir / "model.pth"

    out = (out or work / "model.pth").resolve()
    state["curve"] = combined_curve(state, len(recipe.stages), work)
    state["cpu_s"] = round(sum(step["cpu_s"] for step in state["steps"].values()), 1)
    state["wall_s"] = round(sum(step["wall_s"] for step in state["steps"].values()), 1)
    state["validation"] = _final_validation(previous)
    save_state()
    _write_final_model(previous, out, state)
    print(f"recipe {recipe.path.name}: model {out}; {state['cpu_s'] / 60:.1f} CPU-minutes, {state['wall_s'] / 60:.1f} "
          f"wall minutes; per step: " + ", ".join(f"{k} {v['cpu_s'] / 60:.1f}" for k, v in state["steps"].items()))
    return 0


def _stage_summary(model_path: Path) -> dict:
    from detector.model_file import load_model_file

    training = load_model_file(model_path).metadata.training
    return {"cpu_s": training.get("cpu_seconds_total") or 0.0, "wall_s": training.get("wall_seconds_total") or 0.0,
            "epochs_run": training.get("epochs_run")}


def combined_curve(state: dict, n_stages: int, work: Path) -> list[dict]:
    """Validation after each epoch of every stage, against the recipe's CPU time up to that point."""
    from detector.train import read_curve

    before = [state["steps"][k] for k in ("startup", "data")]
    rows, epoch = [], 0
    offset, wall_offset = sum(s["cpu_s"] for s in before), sum(s["wall_s"] for s in before)
    for i in range(1, n_stages + 1):
        for row in read_curve(work / f"stage{i}"):
            rows.append({"stage": i, "epoch": epoch + row["epoch"], "cpu_s": round(offset + row["cpu_s"], 1),
                         "wall_s": round(wall_offset + row["wall_s"], 1),
                         **{k: v for k, v in row.items() if k.startswith(("station/", "coco/bbox_mAP_50"))}})
        step = state["steps"][f"stage{i}"]
        offset, wall_offset, epoch = offset + step["cpu_s"], wall_offset + step["wall_s"], epoch + (step["epochs_run"] or 0)
    return rows


def _final_validation(model_path: Path) -> dict:
    from detector.model_file import load_model_file

    val = load_model_file(model_path).metadata.training.get("validation", {})
    return {"map50": val.get("map50"), "ap50": {k: v.get("ap50") for k, v in val.get("classes", {}).items()},
            "flip_test": val.get("flip_test"), "nms_iou": val.get("nms_iou"), "n_images": val.get("n_images")}


def _write_final_model(last_stage: Path, out: Path, state: dict) -> None:
    """The last stage's model file, with the recipe's record added, and its card."""
    from dataclasses import replace

    from detector.model_card import write_model_card
    from detector.model_file import load_model_file, save_model_file

    model = load_model_file(last_stage)
    training = {**model.metadata.training, "recipe": {k: state[k] for k in ("recipe", "command", "cpu_s", "wall_s", "curve")}}
    model.metadata = replace(model.metadata, training=training)
    save_model_file(out, model)
    write_model_card(out)
