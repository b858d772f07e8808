"""The one place a device name from the configuration becomes a ``torch.device``."""

from __future__ import annotations

import torch

from synthgate.errors import ConfigError


def resolve_device(name: str, field: str = "device") -> torch.device:
    """``auto`` -> the GPU when torch sees one, else the CPU; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{field}: cuda requested but torch sees no CUDA GPU on this machine",
            hint=f"set {field}: auto (the GPU when there is one) or cpu",
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"{field}: unknown device {name!r}", hint="use auto, cpu or cuda")
    return torch.device(name)
