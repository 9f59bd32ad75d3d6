# CenterNet for grey steel-surface pictures: the parts every variant shares.
# Variants override `model.backbone`, `model.neck.in_channels` and, where they
# start from pretrained weights, `load_from`. Paths (data_root, work_dir) are
# filled in by `python -m detector train`.

custom_imports = dict(imports=["detector.mm_modules"], allow_failed_imports=False)

classes = ("scratch", "pit")  # order = label index = heatmap channel
input_size = 192  # square network input; NEU pictures are 200 px and defects large: best AP per CPU-minute
data_root = ""  # folder written by `python -m detector dataset`

model = dict(
    type="CenterNet",
    data_preprocessor=dict(
        type="DetDataPreprocessor",
        # Grey pictures arrive as three identical channels, so the ImageNet
        # statistics still apply channel by channel.
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
    ),
    backbone=dict(),  # set by each variant
    neck=dict(
        type="CTResNetNeck",
        in_channels=None,  # channels of the backbone's last output
        num_deconv_filters=(128, 64, 64),
        num_deconv_kernels=(4, 4, 4),
        use_dcn=False,  # plain convs: DCNv2 costs ~60% more CPU time and does not export to ONNX
    ),
    bbox_head=dict(
        type="CenterNetHead",
        num_classes=len(classes),
        in_channels=64,
        feat_channels=64,
        loss_center_heatmap=dict(type="GaussianFocalLoss", loss_weight=1.0),
        loss_wh=dict(type="L1Loss", loss_weight=0.1),
        loss_offset=dict(type="L1Loss", loss_weight=1.0),
    ),
    train_cfg=None,
    test_cfg=dict(topk=100, local_maximum_kernel=3, max_per_img=100),
)

# Crop, scale, rotation and brightness/contrast are expanded offline by
# `python -m detector dataset --expand`; online we add only cheap flips and
# photometric jitter so every epoch still sees slightly different pixels.
train_pipeline = [
    dict(type="LoadImageFromFile", color_type="color"),
    dict(type="LoadAnnotations", with_bbox=True),
    # Probabilities per direction; the remaining 25% stay unflipped.
    dict(type="RandomFlip", prob=[0.25, 0.25, 0.25], direction=["horizontal", "vertical", "diagonal"]),
    dict(type="Resize", scale=(input_size, input_size), keep_ratio=True),
    dict(type="Pad", size=(input_size, input_size), pad_val=dict(img=(114, 114, 114))),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile", color_type="color"),
    dict(type="Resize", scale=(input_size, input_size), keep_ratio=True),
    dict(type="Pad", size=(input_size, input_size), pad_val=dict(img=(114, 114, 114))),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="AddBorder"),  # CenterNetHead reads img_meta["border"]
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor", "border"),
    ),
]

train_dataloader = dict(
    batch_size=16,
    num_workers=0,  # 2-core machines: workers only compete with the model for the cores
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type="CocoDataset",
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file="train/annotations.json",
        data_prefix=dict(img="train/images/"),
        filter_cfg=dict(filter_empty_gt=False),  # pictures with no defect teach "no defect"
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="CocoDataset",
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file="val/annotations.json",
        data_prefix=dict(img="val/images/"),
        test_mode=True,
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader

val_evaluator = dict(
    type="CocoMetric",
    ann_file=None,  # set to data_root/val/annotations.json by the trainer
    metric="bbox",
    classwise=True,
    format_only=False,
)
test_evaluator = val_evaluator

max_epochs = 35
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")

# AdamW converges in far fewer epochs than CenterNet's SGD schedule, which is
# what a CPU budget needs.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2),
    # The size branch must output widths/heights of 5-50 feature cells from a
    # std-0.001 init; Adam moves a weight by ~lr per step whatever the loss
    # weight, so at the shared lr it needs thousands of steps to get there
    # (measured: scratch AP50 stayed ~0 for 4 epochs). 10x lr for that branch.
    paramwise_cfg=dict(custom_keys={"bbox_head.wh_head": dict(lr_mult=10.0)}),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]

default_scope = "mmdet"
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(
        type="CheckpointHook",
        interval=1,
        max_keep_ckpts=2,
        save_best="coco/bbox_mAP_50",
        rule="greater",
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="DetVisualizationHook"),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="DetLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(type="LogProcessor", window_size=10, by_epoch=True)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
