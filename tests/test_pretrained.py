"""torchvision's ImageNet MobileNetV2 file maps completely onto MMDetection's backbone."""

from __future__ import annotations

import pytest
import torch

from detector.pretrained import MOBILENET_V2_SHA256, mobilenet_v2_file, mobilenet_v2_key_map, mobilenet_v2_to_mmdet


def test_weights_file_is_torchvisions():
    import hashlib

    assert hashlib.sha256(mobilenet_v2_file().read_bytes()).hexdigest() == MOBILENET_V2_SHA256


def test_every_backbone_tensor_is_filled_with_the_right_shape():
    from mmdet.models.backbones import MobileNetV2

    state = mobilenet_v2_to_mmdet(prefix="")
    backbone = MobileNetV2(out_indices=(7,))
    result = backbone.load_state_dict(state, strict=True)  # raises on any missing/unexpected/mis-shaped key
    assert not result.missing_keys and not result.unexpected_keys
    # BN statistics came across too, not just conv weights.
    assert not torch.allclose(backbone.layer7[0].linear_conv.bn.running_var, torch.ones(320))


def test_classifier_is_dropped_and_mapping_is_one_to_one():
    keys = list(torch.load(mobilenet_v2_file(), map_location="cpu", weights_only=True))
    mapping = mobilenet_v2_key_map(keys)
    assert all(k.startswith("features.") for k in mapping)
    assert any(k.startswith("classifier.") for k in keys)
    assert len(set(mapping.values())) == len(mapping)


@pytest.mark.parametrize("bad", ["resnet18_imagenet", ""])
def test_unknown_pretrained_name(tmp_path, bad):
    from detector.pretrained import PretrainedWeightsError, write_mmdet_checkpoint

    with pytest.raises(PretrainedWeightsError):
        write_mmdet_checkpoint(bad, tmp_path / "x.pth")
