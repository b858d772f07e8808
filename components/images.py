"""The container images the components run in: the project's own image, tagged with its version.

``SYNTHGATE_IMAGE`` / ``SYNTHGATE_CUDA_IMAGE`` override them when the components are imported,
i.e. at compile time (``SYNTHGATE_IMAGE=registry.local/synthgate:0.1.0-cpu make pipelines``).
The committed YAML in ``pipelines/compiled/`` uses the defaults.
"""

from __future__ import annotations

import os

from synthgate import __version__

REPOSITORY = "ghcr.io/synthgate/synthgate"
#: CPU steps (prepare, validate, evaluate, gate, register, promote, publish).
DEFAULT_IMAGE = f"{REPOSITORY}:{__version__}-cpu"
#: GPU steps (train, sample; publish when it samples from the registered model).
DEFAULT_CUDA_IMAGE = f"{REPOSITORY}:{__version__}-cuda"

IMAGE = os.environ.get("SYNTHGATE_IMAGE") or DEFAULT_IMAGE
CUDA_IMAGE = os.environ.get("SYNTHGATE_CUDA_IMAGE") or DEFAULT_CUDA_IMAGE
