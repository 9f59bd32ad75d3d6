"""Training throughput (images/s) of a CenterNet config on this machine.

    .venv/bin/python benchmarks/bench_train.py [--config centernet_mobilenetv2_ellipse] [--input-size 256]
                                              [--batch-size 16] [--iters 5] [--threads N] [--precision fp32|bf16]
                                              [--frozen-stages N]

Times full training steps (forward, loss, backward, AdamW update) on
generated grey pictures with two boxes each; data loading is excluded, so
this is the model's own cost. As `python -m detector train` runs them: weights
channels-last, and with `--precision bf16` the forward pass under bfloat16
autocast (detector.mm_modules.Bf16OptimWrapper). Prints images/s of wall time
and of CPU time (user + system, all threads).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="centernet_mobilenetv2_ellipse")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--frozen-stages", type=int, default=-1,
                        help="as `detector train --frozen-stages`: those stages get no gradients")
    args = parser.parse_args()

    import torch
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.structures import InstanceData

    from detector.backends import build_mmdet_model
    from detector.configs import config_path

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(str(config_path(args.config)))
    cfg.model.backbone.frozen_stages = args.frozen_stages
    size = args.input_size or cfg.input_size
    model = build_mmdet_model(cfg.model.to_dict())
    model.train()
    model.to(memory_format=torch.channels_last)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    rng = np.random.default_rng(0)
    inputs = torch.from_numpy(rng.normal(0, 1, (args.batch_size, 3, size, size)).astype(np.float32))
    samples = []
    for _ in range(args.batch_size):
        s = DetDataSample(metainfo=dict(img_shape=(size, size), batch_input_shape=(size, size), pad_shape=(size, size)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[20.0, 30.0, 60.0, 150.0], [100.0, 100.0, 180.0, 170.0]]) * size / 256,
            labels=torch.tensor([0, 1]),
        )
        samples.append(s)

    def step() -> None:
        with autocast:
            losses = model.loss(inputs, samples)
        loss = sum(v for v in losses.values())
        optim.zero_grad()
        loss.backward()
        optim.step()

    step()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        step()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = args.iters * args.batch_size
    print(f"{args.config} input {size}x{size} batch {args.batch_size} threads {torch.get_num_threads()} {args.precision}"
          f" frozen stages {args.frozen_stages}: {n / seconds:.1f} images/s ({seconds / args.iters * 1000:.0f} ms per step),"
          f" {n / cpu:.1f} images per CPU-second")


if __name__ == "__main__":
    main()
