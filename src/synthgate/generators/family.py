"""Generator families behind one protocol, and the registry that names them.

A family is one module that defines a :class:`GeneratorFamily` object called ``FAMILY``: how to
check a resolution, build the training task (:class:`~synthgate.generators.task.TrainTask`), write
and read the trained network in the model folder, and sample from it. The training loop, the
model format (:mod:`synthgate.generators.model`), sampling, DDP, the registry and publishing only
talk to that object, so **a new family is one module and one line in** :data:`FAMILIES`.

This module imports neither torch nor any family: the configuration validates
``generator.type`` against :data:`FAMILIES` without loading a network library, and
:func:`get_family` imports a family's module the first time it is asked for.
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthgate.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
    from synthgate.generators.task import TrainTask
    from synthgate.progress import Reporter

#: ``generator.type`` -> the module that defines its ``FAMILY``, in the order the docs list them.
FAMILIES: dict[str, str] = {
    "diffusion": "synthgate.generators.diffusion",  # class-conditional DDPM UNet (diffusers)
    "gan": "synthgate.generators.gan",  # cpD-GAN (dumontschutte2021)
    "latent": "synthgate.generators.latent",  # KL/VQ autoencoder + UNet/DiT denoiser (niehues2024, benitodelvalle)
    "stylegan2": "synthgate.generators.stylegan2",  # StyleGAN2 with ADA (Karras et al. 2020; niehues2024's GAN)
}


class GeneratorFamily(abc.ABC):
    """What a generator family tells the rest of synthgate. Subclasses set the class attributes and
    implement the methods; none of them keeps state (one instance per family)."""

    #: the ``generator.type`` value
    name: str
    #: one line for the docs and error messages
    description: str
    #: the files (relative to the model folder) a saved model of this family needs
    files: tuple[str, ...]
    #: the file whose sha256 identifies the trained weights (lineage, registry, publish)
    weights: str
    #: the family's own ``generator.*`` settings (dotted below it) that shape the network: a checkpoint
    #: must match them besides :data:`~synthgate.generators.checkpoints.FINGERPRINT_FIELDS` to be resumed
    fingerprint_fields: tuple[str, ...] = ()

    @abc.abstractmethod
    def check_resolution(self, gcfg: GeneratorConfig, resolution: int) -> None:
        """Raise :class:`ConfigError` naming ``resolution`` and the sizes that work."""

    def describe(self, gcfg: GeneratorConfig, extras: dict[str, Any]) -> dict[str, Any]:
        """What ``synthgate_generator.json`` records of this model beside the common fields (the diffusion
        families: the objective, its samplers, a reflow model's parent); ``extras`` as for :meth:`write`."""
        return {}

    @abc.abstractmethod
    def make_task(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                  n_classes: int, device: torch.device) -> TrainTask:
        """The networks, optimisers and EMA for the shared training loop."""

    @abc.abstractmethod
    def write(self, folder: Path, module: nn.Module, extras: dict[str, Any]) -> None:
        """Write the trained (EMA) ``module`` into ``folder`` as :attr:`files`; ``extras`` are the
        task's :meth:`~synthgate.generators.task.TrainTask.save_extras` (e.g. the noise schedule)."""

    @abc.abstractmethod
    def load(self, model_dir: Path, gcfg: GeneratorConfig, info: dict[str, Any],
             device: torch.device) -> tuple[nn.Module, Any]:
        """The network saved in ``model_dir`` (eval mode, on ``device``) and what sampling needs
        beside it (e.g. the scheduler config; None if nothing). DataError naming a bad file."""

    @abc.abstractmethod
    def sample(self, module: nn.Module, context: Any, labels: np.ndarray, cfg: SampleConfig, *, n_classes: int,
               device: torch.device, amp: bool, reporter: Reporter | None = None) -> np.ndarray:
        """One image per label, uint8 (N, H, W, C), reproducible per image from ``cfg.seed``."""


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def unknown_family(name: object, field: str = "generator.type") -> ConfigError:
    return ConfigError(f"{field}: unknown model type {name!r}", hint=f"use one of: {', '.join(FAMILIES)}")


def get_family(name: str) -> GeneratorFamily:
    """The family registered as ``name`` (its module imported on first use)."""
    if name not in FAMILIES:
        raise unknown_family(name)
    family = importlib.import_module(FAMILIES[name]).FAMILY
    if not isinstance(family, GeneratorFamily) or family.name != name:
        raise TypeError(f"{FAMILIES[name]}.FAMILY must be a GeneratorFamily named {name!r}")
    return family
