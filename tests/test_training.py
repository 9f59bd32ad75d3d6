"""Training through the real CLI on generated pictures (the CPU path CI can run)."""

from __future__ import annotations

import json

import pytest
import torch

from detector import Detector
from detector.cli import main
from detector.model_file import load_model_file
from synthetic import make_voc_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_voc_dataset(root / "src", n_images=12, size=128)
    assert main(["dataset", "--source", str(root / "src"), "--out", str(root / "data"),
                 "--class-map", "scratches=scratch,pitted_surface=pit", "--val-fraction", "0.34"]) == 0
    args = ["train", "--data", str(root / "data"), "--work-dir", str(root / "work"), "--input-size", "128",
            "--batch-size", "4", "--threads", "2", "--device", "cpu"]
    assert main([*args, "--epochs", "1"]) == 0
    return root, args


def _in_work_dir(args, root, name):
    """The fixture's train arguments with another work dir, so a test does not resume the shared one."""
    return [str(root / name) if a == str(root / "work") else a for a in args]


def test_training_writes_a_loadable_model_file_and_card(trained):
    root, _ = trained
    model_path = root / "work" / "model.pth"
    # The station's model file is plain data: it must open with weights_only=True.
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    assert payload["format"] == "metal-inspection-centernet"
    meta = load_model_file(model_path).metadata
    assert meta.class_names == ("scratch", "pit") and meta.input_size == 128
    assert meta.training["pretrained"] == "mobilenet_v2_imagenet"
    assert meta.training["dataset"]["splits"]["train"]["images"] == 9  # 12 generated, a third held out
    assert set(meta.training["validation"]["classes"]) == {"scratch", "pit"}
    card = (root / "work" / "model.md").read_text()
    assert "Validation" in card and "| scratch |" in card and "Song" in card
    # What the station would say about each validation picture, at the model's own threshold.
    (verdicts,) = meta.training["validation"]["verdicts"]
    assert verdicts["threshold"] == meta.default_threshold
    counted = verdicts["defect_pictures"] + verdicts["clean_pictures"] + verdicts["not_counted"]
    assert counted == meta.training["validation"]["n_images"] == 3 and verdicts["defect_pictures"] > 0
    assert f"PASS/FAIL per picture at threshold {meta.default_threshold}" in card
    assert f"{verdicts['defect_pictures']} defect pictures, {len(verdicts['escapes'])} of them PASS" in card
    det = Detector(model_path, device="cpu")
    dets = det.detect(root / "src" / "images" / "scratches_0.jpg", threshold=0.0)
    assert len(dets) == 100  # top-k peaks at threshold 0: the whole decoder ran


def test_validation_runs_every_epoch_and_resume_continues(trained):
    root, args = trained
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    scalars = sorted((root / "work").glob("*/vis_data/scalars.json"))
    val_rows = [json.loads(line) for s in scalars for line in s.read_text().splitlines() if "coco/bbox_mAP_50" in line]
    assert [row["step"] for row in val_rows] == [1, 2]  # epoch 2 resumed from epoch 1's checkpoint
    meta = load_model_file(root / "work" / "model.pth").metadata
    assert meta.training["epochs_run"] == 2


def test_checkpoint_allow_list_refuses_other_attributes():
    from mmengine.logging import HistoryBuffer

    from detector.train import _history_buffer_method

    assert _history_buffer_method(HistoryBuffer, "mean") is HistoryBuffer.mean
    with pytest.raises(ValueError, match="refusing"):
        _history_buffer_method(HistoryBuffer, "__init__")
    with pytest.raises(ValueError, match="refusing"):
        _history_buffer_method(torch, "load")


def test_missing_data_set_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--work-dir", str(tmp_path / "w")]) == 2
    assert "annotations.json missing" in capsys.readouterr().err


def test_fine_tune_from_a_station_model_file(trained):
    root, args = trained
    start = root / "work" / "model.pth"
    out = root / "tuned.pth"
    args = _in_work_dir(args, root, "tuned_work")
    assert main([*args, "--epochs", "1", "--init-from", str(start), "--out", str(out)]) == 0
    meta = load_model_file(out).metadata
    assert meta.training["pretrained"] == "model file model.pth"
    start_meta = load_model_file(start)
    (stage,) = meta.training["lineage"]  # the card can tell what this fine-tune builds on
    assert stage["sha256"] == start_meta.sha256[:16] and stage["train_seconds"] == start_meta.metadata.training["train_seconds"]
    assert "Training time of all stages together" in out.with_suffix(".md").read_text()
    # MMEngine loaded exactly the start model's weights (not ImageNet's) before training.
    init = torch.load(root / "tuned_work" / "init_weights.pth", weights_only=True)["state_dict"]
    start_state = load_model_file(start).state_dict
    assert init.keys() == start_state.keys()
    assert all(torch.equal(init[k], start_state[k]) for k in init)
    run_log = next((root / "tuned_work").glob("*/*.log")).read_text()
    assert "Load checkpoint from" in run_log and "init_weights.pth" in run_log


def _fine_tune(trained, name, *options):
    """One epoch from the fixture's model file with `options`: (weights before, weights after, new model file)."""
    root, args = trained
    start, out = root / "work" / "model.pth", root / f"{name}.pth"
    args = _in_work_dir(args, root, f"{name}_work")
    assert main([*args, "--epochs", "1", "--init-from", str(start), "--out", str(out), *options]) == 0
    return load_model_file(start).state_dict, load_model_file(out).state_dict, out


def _unchanged(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix)]
    assert keys
    return all(torch.equal(before[k], after[k]) for k in keys)


def test_frozen_stages_keep_their_starting_weights(trained):
    before, after, out = _fine_tune(trained, "frozen", "--frozen-stages", "1")
    assert load_model_file(out).metadata.training["frozen_stages"] == 1
    # The stem and the first block group: weights and BatchNorm statistics untouched.
    assert _unchanged(before, after, "backbone.conv1.") and _unchanged(before, after, "backbone.layer1.")
    assert not _unchanged(before, after, "backbone.layer2.") and not _unchanged(before, after, "bbox_head.")


def test_weight_decay_reaches_the_optimizer(trained):
    root, args = trained
    args = _in_work_dir(args, root, "wd_work")
    out = root / "wd.pth"
    assert main([*args, "--epochs", "1", "--out", str(out), "--weight-decay", "0.05"]) == 0
    assert load_model_file(out).metadata.training["weight_decay"] == 0.05
    # The optimizer that trained saved its settings in the checkpoint: every group decayed at 0.05, not the config's 1e-4.
    state = torch.load(root / "wd_work" / "epoch_1.pth", map_location="cpu", weights_only=False)["optimizer"]
    assert {group["weight_decay"] for group in state["param_groups"]} == {0.05}


def test_negative_weight_decay_is_a_clear_error(trained, capsys):
    root, args = trained
    args = _in_work_dir(args, root, "bad_wd_work")
    assert main([*args, "--epochs", "1", "--weight-decay", "-0.1"]) == 2
    assert "--weight-decay must be 0 or more" in capsys.readouterr().err


def test_size_lr_mult_zero_keeps_the_loaded_size_branch(trained):
    before, after, out = _fine_tune(trained, "size_lr", "--size-lr-mult", "0")
    assert load_model_file(out).metadata.training["size_lr_mult"] == 0.0
    assert "size branch at 0x that lr" in out.with_suffix(".md").read_text()
    # lr 0 for the size branch (AdamW's decay is scaled by the lr too); the rest of the head trained.
    assert _unchanged(before, after, "bbox_head.wh_head.") and not _unchanged(before, after, "bbox_head.heatmap_head.")
    # The fixture's run kept the configs' 10x.
    root, _ = trained
    assert load_model_file(root / "work" / "model.pth").metadata.training["size_lr_mult"] == 10.0


def test_negative_size_lr_mult_is_a_clear_error(trained, capsys):
    root, args = trained
    args = _in_work_dir(args, root, "bad_size_lr_work")
    assert main([*args, "--epochs", "1", "--size-lr-mult", "-1"]) == 2
    assert "--size-lr-mult must be 0 or more" in capsys.readouterr().err


def test_frozen_stages_out_of_range_is_a_clear_error(trained, capsys):
    root, args = trained
    args = _in_work_dir(args, root, "bad_work")
    assert main([*args, "--epochs", "1", "--frozen-stages", "-2"]) == 2
    assert "--frozen-stages must be -1 or more" in capsys.readouterr().err


def test_frozen_stages_refused_for_a_backbone_without_stages():
    from mmengine.config import Config

    from detector.train import _freeze_backbone

    cfg = Config(dict(model=dict(backbone=dict(type="HourglassNet"))))  # no frozen_stages argument
    with pytest.raises(ValueError, match="HourglassNet cannot freeze stages"):
        _freeze_backbone(cfg, 1)
    cfg = Config(dict(model=dict(backbone=dict(type="MobileNetV2Trunk"))))  # takes it through **kwargs
    _freeze_backbone(cfg, 2)
    assert cfg.model.backbone.frozen_stages == 2


def test_multi_scale_resizes_each_training_batch_and_its_boxes():
    import random

    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.logging import MessageHub
    from mmengine.structures import InstanceData

    from detector.configs import config_path
    from detector.train import _set_multi_scale

    register_all_modules()
    cfg = Config.fromfile(str(config_path("centernet_mobilenetv2_ellipse")))
    _set_multi_scale(cfg, (64, 128))
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    hub, box = MessageHub.get_current_instance(), [10.0, 20.0, 50.0, 80.0]

    def batch(step, training):
        hub.update_info("iter", step)
        sample = DetDataSample(metainfo=dict(img_shape=(96, 96), pad_shape=(96, 96)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([box]), labels=torch.tensor([0]))
        out = preprocessor(dict(inputs=[torch.zeros(3, 96, 96, dtype=torch.uint8)], data_samples=[sample]), training)
        return out["inputs"].shape[-2:], out["data_samples"][0]

    random.seed(0)
    sizes = set()
    for step in range(30):
        (h, w), sample = batch(step, training=True)
        sizes.add(h)
        assert h == w and sample.batch_input_shape == (h, w)
        # The boxes move with the pixels, so the targets are drawn where the defect now is.
        assert sample.gt_instances.bboxes[0].tolist() == pytest.approx([v * h / 96 for v in box])
    assert sizes == {64, 96, 128}
    assert batch(30, training=False)[0] == (96, 96)  # validation and the station stay at the input size


def test_multi_scale_is_recorded_and_bad_ranges_are_clear_errors(trained, capsys):
    _, _, out = _fine_tune(trained, "multi_scale", "--multi-scale", "96,160")
    assert load_model_file(out).metadata.training["multi_scale"] == [96, 160]
    assert "each step at a random size 96-160 px" in out.with_suffix(".md").read_text()
    root, args = trained
    args = _in_work_dir(args, root, "bad_multi_scale_work")
    assert main([*args, "--epochs", "1", "--multi-scale", "100,160"]) == 2
    assert "--multi-scale needs MIN,MAX: multiples of 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--epochs", "1", "--multi-scale", "160"])
    assert "expected MIN,MAX in pixels" in capsys.readouterr().err


def test_threshold_out_of_range_is_a_clear_error(trained, capsys):
    root, args = trained
    with pytest.raises(SystemExit):
        main([*_in_work_dir(args, root, "bad_threshold_work"), "--epochs", "1", "--threshold", "1.5"])
    assert "a threshold must be within 0..1, got 1.5" in capsys.readouterr().err


def test_constant_ema_momentum_averages_from_the_loaded_model(trained):
    root, args = trained
    start = root / "work" / "model.pth"
    out = root / "ema.pth"
    args = _in_work_dir(args, root, "ema_work")
    assert main([*args, "--epochs", "1", "--init-from", str(start), "--out", str(out),
                 "--ema", "--ema-momentum", "0.001"]) == 0
    assert load_model_file(out).metadata.training["ema_momentum"] == 0.001
    assert "constant momentum 0.001" in out.with_suffix(".md").read_text()
    before, kept = load_model_file(start).state_dict, load_model_file(out).state_dict
    # MMEngine saves the average as the checkpoint's weights and the trained ones beside it.
    raw = torch.load(root / "ema_work" / "epoch_1.pth", map_location="cpu", weights_only=False)["ema_state_dict"]
    head = [k for k in before if k.startswith("bbox_head.") and before[k].is_floating_point()]
    moved = sum((raw["module." + k] - before[k]).abs().sum() for k in head)
    averaged = sum((kept[k] - before[k]).abs().sum() for k in head)
    # The average begins at the first step's weights (taken at 1% of the lr in warm-up) and
    # then moves by 0.1% per step; the ramp would sit at momentum ~0.99, i.e. on the trained weights.
    assert moved > 0 and averaged < 0.3 * moved


def test_ema_momentum_out_of_range_or_without_ema_is_a_clear_error(trained, capsys):
    root, args = trained
    args = _in_work_dir(args, root, "bad_ema_work")
    assert main([*args, "--epochs", "1", "--ema", "--ema-momentum", "1.5"]) == 2
    assert "--ema-momentum must be between 0 and 1" in capsys.readouterr().err
    assert main([*args, "--epochs", "1", "--ema-momentum", "0.01"]) == 2
    assert "--ema-momentum needs --ema" in capsys.readouterr().err


def test_average_of_two_fine_tunes_is_their_mean_and_runs(trained, capsys):
    root, _ = trained
    _, a_sd, a = _fine_tune(trained, "avg_a", "--seed", "1")
    _, b_sd, b = _fine_tune(trained, "avg_b", "--seed", "2")
    out = root / "avg.pth"
    capsys.readouterr()
    assert main(["average", str(a), str(b), "--out", str(out), "--validate", str(root / "data" / "val")]) == 0
    printed = capsys.readouterr().out
    assert "the mean of 2 models' weights" in printed and "validation: {\"scratch\": " in printed and "mAP50 " in printed
    assert "defect pictures PASS" in printed  # escapes and false rejects, re-measured with the AP
    avg = load_model_file(out)
    moved = [k for k in a_sd if torch.is_floating_point(a_sd[k]) and not torch.equal(a_sd[k], b_sd[k])]
    assert moved  # the seeds gave two different networks, so the test below tells a mean from a copy
    for key in a_sd:
        if torch.is_floating_point(a_sd[key]):
            assert torch.allclose(avg.state_dict[key], (a_sd[key] + b_sd[key]) / 2, atol=1e-6), key
        else:
            assert torch.equal(avg.state_dict[key], a_sd[key]), key
    record = avg.metadata.training["averaged"]
    assert [i["sha256"] for i in record["ingredients"]] == [load_model_file(p).sha256[:16] for p in (a, b)]
    assert set(avg.metadata.training["validation"]["classes"]) == {"scratch", "pit"}  # measured, not copied
    assert "mean of 2 runs' weights" in out.with_suffix(".md").read_text()
    dets = Detector(out, device="cpu").detect(root / "src" / "images" / "scratches_0.jpg", threshold=0.0)
    assert len(dets) == 100


def test_average_refuses_runs_from_different_starts(trained, capsys):
    root, _ = trained
    scratch_run = root / "work" / "model.pth"  # from ImageNet weights: no parent model file
    _, _, tuned = _fine_tune(trained, "avg_c")
    out = root / "bad_avg.pth"
    assert main(["average", str(tuned), str(scratch_run), "--out", str(out)]) == 1
    assert "different model" in capsys.readouterr().err and not out.exists()
    assert main(["average", str(scratch_run), str(tuned), "--out", str(out)]) == 1
    assert "no lineage" in capsys.readouterr().err and not out.exists()
    assert main(["average", str(tuned), "--out", str(out)]) == 1
    assert "at least two" in capsys.readouterr().err
    assert main(["average", str(tuned), str(tuned), "--out", str(out)]) == 1
    assert "same model" in capsys.readouterr().err and not out.exists()
    assert main(["average", str(tuned), str(tuned), "--out", str(tuned)]) == 2
    assert "must not be one of" in capsys.readouterr().err
