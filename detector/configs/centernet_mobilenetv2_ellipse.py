# centernet_mobilenetv2_iou with elliptical centre targets (CenterNetEllipseHead):
# NEU scratches are long and thin (median 26x130 px), and a round target sized
# by the short side punishes every peak along the scratch but the exact centre.
_base_ = "./centernet_mobilenetv2_iou.py"

model = dict(bbox_head=dict(type="CenterNetEllipseHead", ellipse_alpha=0.54))
