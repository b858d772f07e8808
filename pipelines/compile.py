"""Compile the pipelines to the YAML that the Kubeflow UI uploads: ``python -m pipelines.compile``.

Writes ``pipelines/compiled/``:

- ``synthesis.yaml``      the synthesis pipeline; train and sample request an ``nvidia.com/gpu`` on a
                          GPU node (node selector ``nvidia.com/gpu.present=true``, toleration)
- ``synthesis-cpu.yaml``  the same without GPU requests (a cluster without GPUs; slow training)
- ``publish.yaml``        publish the version holding an alias, sampling on a GPU node
- ``publish-cpu.yaml``    the same on CPU

``--check`` compiles to a temporary folder and exits 1 naming every stale or missing file (CI).
Output is deterministic: the same sources give the same bytes. Defaults come from ``params.yaml``
and ``gates.yaml``; images from ``components.images`` (``SYNTHGATE_IMAGE`` / ``SYNTHGATE_CUDA_IMAGE``
override them, and then differ from the committed files).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPILED = Path(__file__).resolve().parent / "compiled"


def targets(cache_training: bool = False) -> dict[str, Callable[[], Any]]:
    """File name -> a function building that pipeline."""
    from pipelines import publish, synthesis

    return {
        "synthesis.yaml": lambda: synthesis.build(gpu=True, cache_training=cache_training),
        "synthesis-cpu.yaml": lambda: synthesis.build(gpu=False, cache_training=cache_training),
        "publish.yaml": lambda: publish.build(gpu=True),
        "publish-cpu.yaml": lambda: publish.build(gpu=False),
    }


def compile_all(out: Path = COMPILED, cache_training: bool = False) -> list[Path]:
    """Compile every pipeline into ``out``; returns the files written."""
    from kfp import compiler

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in targets(cache_training).items():
        path = out / name
        tmp = path.with_name(f".{path.stem}.tmp.yaml")
        compiler.Compiler().compile(build(), str(tmp))
        tmp.replace(path)
        written.append(path)
    return written


def stale(out: Path = COMPILED, cache_training: bool = False) -> list[str]:
    """The compiled files in ``out`` that differ from a fresh compile (or are missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = compile_all(Path(tmp), cache_training)
        return [f.name for f in fresh if not (out / f.name).exists()
                or (out / f.name).read_bytes() != f.read_bytes()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a compiled file is stale; write nothing")
    ap.add_argument("--cache-training", action="store_true",
                    help="let KFP cache the train step for equal inputs (off: every run trains)")
    ap.add_argument("--out", type=Path, default=COMPILED, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale(args.out, args.cache_training)
        if bad:
            print("stale compiled pipelines: " + ", ".join(str(args.out / b) for b in bad)
                  + "\n  recompile with `make pipelines` (python -m pipelines.compile) and commit the result",
                  file=sys.stderr)
            return 1
        print(f"compiled pipelines in {args.out} are up to date")
        return 0
    for path in compile_all(args.out, args.cache_training):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
