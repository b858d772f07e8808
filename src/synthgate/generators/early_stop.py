"""FID early stopping for the training loop (dumontschutte2021 S.3).

    "we computed the FID score after every 400T real images, and if there was no improvement for
    two consecutive evaluations, we stopped training" -- after a minimum number of images.

Here every ``train.fid_every`` steps (and at the last step) the EMA model samples ``fid_images``
images with the labels of as many real training images, and the FID between the two sets is
computed in the features of the reference encoder, the one the evaluation stage uses
(:func:`synthgate.evaluation.encoder.get_encoder`: cached by the dataset's content hash, so the
evaluation reuses it). Inception weights are neither downloadable here nor a good fit for medical
images (niehues2024, Limitations); the encoder's identity is recorded with the scores.

The best evaluation's EMA weights are kept (in memory and in every checkpoint), training stops
once ``fid_patience`` evaluations in a row did not improve on the best by more than
``fid_min_delta`` (never before ``fid_min_steps``), and the saved model is the best one, not the
last. The same real images and the same seeded noise are used at every evaluation, so the scores
of one run differ only through the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgate.errors import ConfigError
from synthgate.generators.common import mix_seed
from synthgate.generators.config import SampleConfig, TrainConfig


@dataclass
class FidState:
    """What early stopping knows after some evaluations; saved in every checkpoint."""

    history: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_fid: float = math.inf
    since_best: int = 0  # evaluations in a row without improvement
    stopped_at: int | None = None

    def update(self, step: int, value: float, tcfg: TrainConfig) -> bool:
        """Record the FID at ``step``; True when it is the new best. Sets ``stopped_at`` when the
        patience is used up (and ``step >= fid_min_steps``)."""
        self.history.append((int(step), float(value)))
        improved = math.isfinite(value) and value < self.best_fid - tcfg.fid_min_delta
        if improved:
            self.best_step, self.best_fid, self.since_best = int(step), float(value), 0
        else:
            self.since_best += 1
            if self.since_best >= tcfg.fid_patience and step >= tcfg.fid_min_steps:
                self.stopped_at = int(step)
        return improved

    def to_dict(self) -> dict[str, Any]:
        return {"history": [[s, v] for s, v in self.history], "best_step": self.best_step,
                "best_fid": self.best_fid if math.isfinite(self.best_fid) else None,
                "since_best": self.since_best, "stopped_at": self.stopped_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FidState:
        best = d.get("best_fid")
        return cls([(int(s), float(v)) for s, v in d.get("history", [])], d.get("best_step"),
                   math.inf if best is None else float(best), int(d.get("since_best", 0)), d.get("stopped_at"))


class FidMonitor:
    """FID of a generator's samples against a fixed set of real training images.

    ``encoder`` is a :class:`synthgate.evaluation.encoder.Encoder`; ``images``/``labels`` the real
    training split (uint8 NHWC, class indices). ``min(fid_images, len(images))`` real images are
    drawn once (seeded) and their features kept; each evaluation samples one image per drawn label,
    so real and synthetic sets have the same size and class mix.
    """

    def __init__(self, encoder: Any, images: np.ndarray, labels: np.ndarray, tcfg: TrainConfig,
                 sampling: SampleConfig | None = None) -> None:
        if len(images) < 2:
            raise ConfigError("train.fid_every: FID needs at least 2 training images",
                              hint="set train.fid_every: 0, or train on a larger dataset")
        n = min(tcfg.fid_images, len(images))
        rng = np.random.default_rng(mix_seed(tcfg.seed, "fid-real"))
        pick = np.sort(rng.choice(len(images), size=n, replace=False))
        self.encoder = encoder
        self.labels = np.asarray(labels)[pick]
        self.real_features = encoder.features(np.asarray(images[pick]))
        base = sampling or SampleConfig(per_class=1)
        # one image per drawn label, seeded identically at every evaluation
        self.sampling = base.model_copy(update={"seed": mix_seed(tcfg.seed, "fid-noise") % (2**31),
                                                "per_class": 1, "match_real": False, "total": None})
        self.n = n

    @property
    def encoder_id(self) -> str:
        return str(self.encoder.encoder_id)

    def __call__(self, task: Any, module: nn.Module) -> float:
        """FID of ``task.sample(module, ...)`` against the real features (lower is better)."""
        from synthgate.evaluation.fidelity import fid

        with torch.no_grad():
            fake = task.sample(module, self.labels, self.sampling)
        return fid(self.real_features, self.encoder.features(fake))

    def describe(self) -> dict[str, Any]:
        s = self.sampling
        return {"encoder_id": self.encoder_id, "images": self.n, "sampler": s.sampler, "sampler_steps": s.steps,
                "guidance_scale": s.guidance_scale}
