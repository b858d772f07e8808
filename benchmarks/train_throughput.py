"""Training throughput: a plain diffusers loop against synthgate's training loop, same model,
same batch, one process (issue #3's benchmark).

    python benchmarks/train_throughput.py                  # GPU: 35.8M UNet, 64x64x3, batch 256
    python benchmarks/train_throughput.py --size tiny --resolution 16 --batch 16 --steps 6 --no-compile

The plain loop is the diffusers example's recipe: class-conditional UNet2DModel, DDPM epsilon
loss, bf16 autocast, torch.compile, fused AdamW, data already on the device. synthgate's loop is
``synthgate.generators.train.train`` on a canonical dataset of the same shape (its EMA,
checkpoint-free timing window and data feed included). Prints images/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthgate.data.canonical import metadata_for, write_dataset
from synthgate.generators.config import GeneratorConfig, TrainConfig
from synthgate.generators.diffusion import build_scheduler, build_unet
from synthgate.generators.train import train


def plain_loop(gcfg: GeneratorConfig, args: argparse.Namespace, device: torch.device) -> float:
    unet = build_unet(gcfg, args.resolution, args.channels, args.classes).to(device)
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    sched = build_scheduler(gcfg)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=fused)
    model = torch.compile(unet) if args.compile else unet
    x = torch.rand(args.batch, args.channels, args.resolution, args.resolution, device=device) * 2 - 1
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    alphas = sched.alphas_cumprod.to(device)

    def step() -> None:
        noise = torch.randn_like(x)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = model(noisy, t, class_labels=y).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def synthgate_loop(gcfg: GeneratorConfig, args: argparse.Namespace, device: torch.device) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        n = max(args.batch * 4, 64)
        images = rng.integers(0, 256, (n, args.resolution, args.resolution, args.channels), dtype=np.uint8)
        labels = np.arange(n) % args.classes
        classes = [f"c{k}" for k in range(args.classes)]
        meta = metadata_for(images, labels, classes, "train", [f"bench:{i}" for i in range(n)])
        write_dataset(Path(tmp) / "ds", images, meta, classes, stage="bench", config={}, inputs=[])
        tcfg = TrainConfig(steps=args.steps + args.warmup, batch_size=args.batch, device=device.type,
                           compile=args.compile, checkpoint_every=10**9, sample_grid_every=0, mlflow=False,
                           log_every=max(1, args.steps // 4))
        result = train(Path(tmp) / "ds", gcfg, tcfg, Path(tmp) / "run", resume=False)
        return float(result.images_per_second)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base", choices=["tiny", "small", "base"])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        args.compile = False
    gcfg = GeneratorConfig(type="diffusion", size=args.size)
    n_params = sum(p.numel() for p in build_unet(gcfg, args.resolution, args.channels, args.classes).parameters())
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), UNet "
          f"{n_params / 1e6:.1f}M, {args.resolution}x{args.resolution}x{args.channels}, batch {args.batch}, "
          f"compile {args.compile}")
    plain = plain_loop(gcfg, args, device)
    print(f"plain diffusers loop: {plain:.1f} images/s")
    ours = synthgate_loop(gcfg, args, device)
    print(f"synthgate loop:       {ours:.1f} images/s")
    print(f"ratio synthgate/plain: {ours / plain:.2f}x")


if __name__ == "__main__":
    main()
