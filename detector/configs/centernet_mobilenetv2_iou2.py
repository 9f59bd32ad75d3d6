# centernet_mobilenetv2_iou with the IoU size term weighted 2x (experiment).
_base_ = "./centernet_mobilenetv2_iou.py"

model = dict(bbox_head=dict(loss_wh_iou_weight=2.0))
