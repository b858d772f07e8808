"""Standard Inception-FID beside the encoder FID (``evaluate.inception_weights``): for comparison
with the literature only (ImageNet features are a poor fit for medical images, niehues2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthgate.data.canonical import CanonicalDataset
from synthgate.errors import DataError

INCEPTION_HINT = ("use the CUDA image (ghcr.io/synthgate/synthgate:VERSION-cuda: torchvision and torch-fidelity "
                  "installed), or unset evaluate.inception_weights; the reference-encoder FID is computed either way")


def check_inception_weights(weights: Path) -> str:
    """Refuse, before any work, an Inception-FID that cannot run: no weights file, a file that is not a
    plain state dict (read with ``weights_only=True``; torch-fidelity itself unpickles it fully), or
    an environment without torch-fidelity (it needs torchvision, which the CPU environment must not
    have). Returns the file's sha256: the identity recorded next to the score."""
    import torch

    from synthgate.errors import ConfigError
    from synthgate.utils import sha256_file

    weights = Path(weights)
    if not weights.is_file():
        raise DataError(f"{weights}: Inception weights file not found",
                        hint="unset evaluate.inception_weights, or put the pt_inception-2015-12-05 weights there")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{weights}: not a PyTorch weights file ({str(e).splitlines()[0][:200]})",
                        hint="give the FID Inception weights (pt_inception-2015-12-05-6726825d.pth)") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{weights}: not a state dict of tensors",
                        hint="give the FID Inception weights (pt_inception-2015-12-05-6726825d.pth)")
    try:
        import torch_fidelity.feature_extractor_inceptionv3  # noqa: F401
    except Exception as e:  # ImportError, or torchvision failing to load next to this torch
        raise ConfigError(
            "evaluate.inception_weights: standard Inception-FID needs torch-fidelity (and torchvision), which this "
            f"environment does not have ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})",
            hint=INCEPTION_HINT) from None
    return sha256_file(weights)


def _inception_fid(real: CanonicalDataset, idx: np.ndarray, syn: np.ndarray, weights: Path,
                   test_idx: np.ndarray | None = None) -> dict[str, Any]:
    """Standard Inception-FID (torchmetrics with torch-fidelity's FID Inception network, weights from a
    local file: ``feature_extractor_weights_path``) of ``syn`` against ``real.images[idx]``, and, as
    the baseline, of the real ``test_idx`` images against the same reference. Grey images are repeated
    to 3 channels; torch-fidelity resizes to 299x299 as the TF original does."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    sha = check_inception_weights(weights)
    try:
        m = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights),
                                     reset_real_features=False)
    except RuntimeError as e:  # load_state_dict: missing/unexpected keys, shapes
        raise DataError(f"{weights}: not the FID Inception-v3 weights ({str(e).splitlines()[0][:200]})",
                        hint="give pt_inception-2015-12-05-6726825d.pth (torch-fidelity's FID Inception)") from None

    def rgb(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t

    def fake_fid(images: np.ndarray) -> float:
        m.reset()  # keeps the real statistics (reset_real_features=False)
        for i in range(0, len(images), 256):
            m.update(rgb(images[i : i + 256]), real=False)
        return float(m.compute())

    for i in range(0, len(idx), 256):
        m.update(rgb(np.asarray(real.images[idx[i : i + 256]])), real=True)
    out: dict[str, Any] = {"fid": fake_fid(syn), "weights": str(weights), "weights_sha256": sha,
                           "n_real": int(len(idx)), "n_synthetic": int(len(syn))}
    if test_idx is not None and len(test_idx) >= 2:
        out["real_test_vs_train"] = fake_fid(np.asarray(real.images[test_idx]))
    return out
