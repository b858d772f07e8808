"""Every generator family side by side (issue 16, item 3): the same data, the same wall-clock
training budget, the same evaluation (``synthgate evaluate``), one table with the pixel DDPM of the
same run as the baseline.

    python benchmarks/generators.py                                  # MedNIST 32x32, 600 s per family
    python benchmarks/generators.py --budget 120 --families diffusion latent-kl-unet

Each family trains for ``--budget`` seconds of wall-clock time (``train.max_seconds``; a latent
family's autoencoder training counts against it, also when an earlier latent family of the run
trained it into the cache: the denoiser gets what is left), then samples
``--sample-per-class`` images per class with its own sampler settings from ``params.yaml`` and is
evaluated against the validated real data with ``params.yaml``'s ``evaluate`` settings (the
reference encoder and copy descriptor are trained once and shared). Printed per family: training
steps and images/s, sampling images/s (ratio to the pixel DDPM), FID in the reference encoder
(ratio to the pixel DDPM; the real test split's FID is the floor), precision/recall, the utility
gap with its one-sided upper bound, synthetic images flagged as copies, the weakest planted-copy
power, and each autoencoder's test-split PSNR and MS-SSIM. ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
#: name -> params overrides; the latent variants of niehues2024 (KL / VQ) and benitodelvalle (UNet / DiT)
FAMILIES: dict[str, dict[str, Any]] = {
    "diffusion": {"generator.type": "diffusion"},
    "gan": {"generator.type": "gan"},
    "latent-kl-unet": {"generator.type": "latent", "generator.denoiser": "unet", "generator.autoencoder.kind": "kl"},
    "latent-vq-unet": {"generator.type": "latent", "generator.denoiser": "unet", "generator.autoencoder.kind": "vq"},
    "latent-kl-dit": {"generator.type": "latent", "generator.denoiser": "dit", "generator.autoencoder.kind": "kl",
                      "generator.patch_size": 2},
}


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def run_family(name: str, params_path: Path, base: dict[str, Any], real: Path, work: Path, budget: float
               ) -> dict[str, Any]:
    """Train, sample and evaluate one family within ``budget`` seconds of training."""
    from synthgate import stages
    from synthgate.config import load_params
    from synthgate.data.canonical import load_dataset
    from synthgate.generators.autoencoder import get_autoencoder
    from synthgate.generators.common import resolve_device

    p = load_params(params_path, {**base, **FAMILIES[name]})
    row: dict[str, Any] = {"family": name}
    left, ae_seconds = budget, 0.0
    if p.generator.type == "latent":  # the autoencoder's training counts against the budget
        t0 = time.perf_counter()
        ae = get_autoencoder(load_dataset(real), p.generator.autoencoder, p.generator.size,
                             resolve_device(p.train.device, "train.device"))
        # charged what training it took, also when another latent family trained it into the cache
        ae_seconds = float(ae.info.get("train_seconds") or (time.perf_counter() - t0))
        left = max(1.0, budget - ae_seconds)
        rec = ae.info.get("reconstruction") or {}
        row |= {"autoencoder": ae.info["autoencoder_id"], "ae_seconds": round(ae_seconds, 1),
                "ae_psnr": rec.get("psnr"), "ae_ms_ssim": rec.get("ms_ssim")}
    p = load_params(params_path, {**base, **FAMILIES[name], "train.max_seconds": left})
    t0 = time.perf_counter()
    tr = stages.train(p, dataset=real, out=work / name / "run", resume=False)
    row |= {"train_steps": tr.steps, "train_images_per_second": tr.images_per_second,
            "train_seconds": round(time.perf_counter() - t0 + ae_seconds, 1)}
    t0 = time.perf_counter()
    syn = stages.sample(p, model=tr.model_dir, out=work / name / "samples", real=real)
    row["sample_images_per_second"] = syn.manifest["num_images"] / (time.perf_counter() - t0)
    ev = stages.evaluate(p, real=real, synthetic=syn.root, out=work / name / "evaluation")
    s = ev.data["summary"]
    row |= {k: s.get(k) for k in ("fid", "fid_real_baseline", "precision", "recall", "auc_real", "auc_synthetic",
                                  "auc_gap", "auc_gap_upper", "flagged_copies", "planted_min_detection")}
    row["parameters"] = json.loads((tr.model_dir / "synthgate_generator.json").read_text())["parameters"]
    return row


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table; ratios against the pixel DDPM (``diffusion``) of the same run."""
    base = next((r for r in rows if r["family"] == "diffusion"), rows[0])
    cols = ["family", "parameters (denoiser)", "train steps", "train img/s", "sample img/s (ratio)", "FID (ratio)",
            "precision / recall", "utility gap (upper bound)", "flagged copies", "planted power (weakest)",
            "autoencoder PSNR / MS-SSIM"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        sr = r["sample_images_per_second"] / base["sample_images_per_second"]
        fr = (r["fid"] / base["fid"]) if r.get("fid") and base.get("fid") else None
        ae = f"{_f(r.get('ae_psnr'), 2)} dB / {_f(r.get('ae_ms_ssim'))}" if r.get("ae_psnr") is not None else "–"
        cells = [r["family"], f"{r['parameters'] / 1e6:.2f}M", str(r["train_steps"]),
                 f"{r['train_images_per_second']:.1f}", f"{r['sample_images_per_second']:.1f} ({sr:.2f})",
                 f"{r['fid']:.4g} ({_f(fr, 2)})" if r.get("fid") is not None else "–", f"{_f(r.get('precision'))} / {_f(r.get('recall'))}",
                 f"{_f(r.get('auc_gap'))} ({_f(r.get('auc_gap_upper'))})", _f(r.get("flagged_copies")),
                 _f(r.get("planted_min_detection"), 2), ae]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "mednist" / "MedNIST.tar.gz")
    ap.add_argument("--per-class", type=int, default=1000, help="prepare.max_per_class")
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per family (wall clock)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--sample-per-class", type=int, default=50)
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthgate-generators"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="further params overrides (dotted keys, YAML values), e.g. evaluate.encoder.epochs=1")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from synthgate import stages
    from synthgate.config import load_params

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    base = {"data.source.path": str(args.source), "prepare.max_per_class": args.per_class,
            "train.steps": 10**7, "train.checkpoint_every": 10**7, "train.sample_grid_every": 0, "train.mlflow": False,
            "sample.per_class": args.sample_per_class, "generator.autoencoder.cache_dir": str(work / "autoencoders"),
            "evaluate.encoder.cache_dir": str(work / "encoders"),
            "evaluate.memorization.descriptor.cache_dir": str(work / "encoders"), **_overrides(args.set)}
    p = load_params(args.params, base)
    ds = stages.prepare(p, out=work / "prepared")
    real = stages.validate(p, dataset=ds.root, out=work / "validated", report_dir=work / "validation").dataset.root
    rows = []
    for name in (["diffusion"] if "diffusion" not in args.families else []) + args.families:
        t0 = time.perf_counter()
        rows.append(run_family(name, args.params, base, real, work, args.budget))
        print(f"{name}: {time.perf_counter() - t0:.0f} s (train, sample, evaluate)", flush=True)
    print(f"\nMedNIST {p.prepare.resolution}x{p.prepare.resolution}, {args.per_class} images per class, "
          f"{args.budget:g} s of training per family, {torch.get_num_threads()} threads; "
          "ratio: against the pixel DDPM (diffusion) of this run\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
