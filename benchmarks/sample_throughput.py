"""Sampling throughput: plain DDIM-50 against synthgate's fastest sampler (issue #3's benchmark).

    python benchmarks/sample_throughput.py --model models/generator/model --real data/validated \\
        --n 10000 --fast-steps 10
    python benchmarks/sample_throughput.py --n 64 --size tiny --resolution 16     # smoke test

Both samplers run the same UNet in one process. The baseline is a plain classifier-free-guided
DDIM loop (diffusers' ``DDIMScheduler``, 50 steps, compiled UNet on CUDA); synthgate's is
``LoadedGenerator.sample`` with DPM-Solver++ at ``--fast-steps``. With ``--real`` the two sample
sets are scored with the evaluation's FID (reference-encoder features) so the speed-up is
reported at matched quality (target: FID within 10% of DDIM-50's). Without ``--model`` a randomly
initialised base UNet measures speed only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthgate.generators.config import GeneratorConfig, SampleConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_ddim(unet: torch.nn.Module, sched_config, labels: np.ndarray, n_classes: int, shape: tuple[int, int, int],
               steps: int, guidance: float, batch: int, device: torch.device) -> np.ndarray:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(sched_config, timestep_spacing="trailing")
    out = []
    gen = torch.Generator(device).manual_seed(0)
    for i in range(0, len(labels), batch):
        y = torch.from_numpy(labels[i : i + batch]).to(device)
        x = torch.randn((len(y), *shape), generator=gen, device=device)
        sched.set_timesteps(steps, device=device)
        null = torch.full_like(y, n_classes)
        for t in sched.timesteps:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"), torch.no_grad():
                eps = unet(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample.float()
            cond, uncond = eps.chunk(2)
            x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, help="a synthgate diffusion model folder")
    ap.add_argument("--real", type=Path, help="real canonical dataset: adds FID for both sample sets")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", default="base", choices=["tiny", "small", "base"])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--fast-steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    from synthgate.generators.diffusion import build_scheduler, build_unet
    from synthgate.generators.model import load_generator

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from synthgate.generators.model import save_generator

            gcfg = GeneratorConfig(type="diffusion", size=args.size)
            unet = build_unet(gcfg, args.resolution, args.channels, args.classes)
            args.model = Path(tmp) / "model"
            save_generator(args.model, unet, gcfg, resolution=args.resolution, channels=args.channels,
                           classes=[f"c{k}" for k in range(args.classes)], dataset_hash="random-init", step=0,
                           extras={"scheduler": build_scheduler(gcfg)})
        gen = load_generator(args.model, device)
        n_classes = len(gen.classes)
        labels = np.arange(args.n) % n_classes
        shape = (gen.channels, gen.resolution, gen.resolution)
        net = torch.compile(gen.module) if args.compile and device.type == "cuda" else gen.module
        plain_ddim(net, gen.context, labels[: min(64, args.n)], n_classes, shape, 50, args.guidance,
                   args.batch, device)  # warm-up / compile
        _sync(device)
        t0 = time.perf_counter()
        a = plain_ddim(net, gen.context, labels, n_classes, shape, 50, args.guidance, args.batch, device)
        _sync(device)
        t_plain = time.perf_counter() - t0
        cfg = SampleConfig(per_class=1, sampler="dpmsolver++", steps=args.fast_steps, guidance_scale=args.guidance,
                           batch_size=args.batch, device=device.type)
        gen.sample(labels[: min(64, args.n)], cfg)
        _sync(device)
        t0 = time.perf_counter()
        b = gen.sample(labels, cfg)
        _sync(device)
        t_fast = time.perf_counter() - t0
    print(f"device {device}, {args.n} images {gen.resolution}x{gen.resolution}x{gen.channels}, guidance {args.guidance}")
    print(f"plain DDIM-50:             {t_plain:.2f} s  {args.n / t_plain:.1f} images/s")
    print(f"synthgate DPM-Solver++-{args.fast_steps}: {t_fast:.2f} s  {args.n / t_fast:.1f} images/s")
    print(f"ratio: {t_plain / t_fast:.2f}x")
    if args.real is not None:
        from synthgate.data.canonical import load_dataset
        from synthgate.evaluation.config import EncoderConfig
        from synthgate.evaluation.encoder import get_encoder
        from synthgate.evaluation.fidelity import fid

        real = load_dataset(args.real)
        enc = get_encoder(real, EncoderConfig(), device)
        ref = enc.features(np.asarray(real.images[real.split_indices("train")[:10000]]))
        fa, fb = fid(ref, enc.features(a)), fid(ref, enc.features(b))
        print(f"FID (encoder {enc.encoder_id}): DDIM-50 {fa:.3f}, DPM-Solver++-{args.fast_steps} {fb:.3f} "
              f"({(fb / fa - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
