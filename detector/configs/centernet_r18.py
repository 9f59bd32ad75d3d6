# CenterNet on ResNet-18 from random init (no ImageNet ResNet-18 can be had
# without a download), the baseline the MobileNetV2 start is compared with.
_base_ = "./centernet_base.py"

model = dict(
    backbone=dict(
        type="ResNet",
        depth=18,
        norm_eval=False,
        norm_cfg=dict(type="BN"),
        init_cfg=None,
    ),
    neck=dict(in_channels=512),
)
pretrained = None
