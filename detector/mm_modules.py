"""Small MMDetection registry additions the configs import (custom_imports)."""

from __future__ import annotations

from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class AddBorder(BaseTransform):
    """Record a zero border: CenterNetHead subtracts `border` from every box.

    MMDetection's own CenterNet test pipeline sets it through
    RandomCenterCropPad; our letterbox pads only bottom/right, so it is zero.
    """

    def transform(self, results: dict) -> dict:
        results["border"] = (0, 0, 0, 0)
        return results


import time  # noqa: E402

from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402


@HOOKS.register_module()
class TimeBudgetHook(Hook):
    """Stop training after the epoch in which `minutes` of wall time ran out.

    Used to compare models under the same CPU budget and to keep CI runs short.
    """

    priority = "LOW"

    def __init__(self, minutes: float):
        self.seconds = float(minutes) * 60.0
        self._start = 0.0

    def before_train(self, runner) -> None:
        self._start = time.monotonic()

    def after_train_epoch(self, runner) -> None:
        elapsed = time.monotonic() - self._start
        if elapsed >= self.seconds:
            runner.logger.info(f"time budget of {self.seconds / 60:.1f} min used up after epoch {runner.epoch}; stopping")
            runner.train_loop.stop_training = True


from mmdet.models.backbones import MobileNetV2  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402


@MODELS.register_module()
class MobileNetV2Trunk(MobileNetV2):
    """MMDetection's MobileNetV2 without the stages after its last output.

    CenterNet reads only layer7 (stride 32, 320 channels); the stock backbone
    still runs its 1280-channel conv2, whose unused weights also break
    distributed training (parameters without gradients).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        last = max(self.out_indices)
        for name in self.layers[last + 1:]:
            delattr(self, name)
        self.layers = self.layers[: last + 1]
