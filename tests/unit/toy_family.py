"""A generator family defined outside synthgate, for the protocol test: the smallest thing that
is a real conditional generator (a learned image per class plus seeded noise). It is registered
with one line (``FAMILIES["toy"] = "tests.unit.toy_family"``) and nothing else in synthgate changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgate.generators.common import per_image_noise, to_uint8
from synthgate.generators.family import GeneratorFamily
from synthgate.generators.task import TrainTask, make_optimizer


class ClassImages(nn.Module):
    def __init__(self, n_classes: int, channels: int, resolution: int) -> None:
        super().__init__()
        self.shape = (channels, resolution, resolution)
        self.images = nn.Parameter(torch.zeros(n_classes, channels * resolution * resolution))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.images[labels].view(len(labels), *self.shape)


class ToyTask(TrainTask):
    def __init__(self, gcfg: Any, tcfg: Any, resolution: int, channels: int, n_classes: int,
                 device: torch.device) -> None:
        from diffusers.training_utils import EMAModel

        super().__init__(gcfg, tcfg, resolution, channels, n_classes, device)
        self.net = ClassImages(n_classes, channels, resolution).to(device)
        self.forward = self.net
        self.opt = make_optimizer(self.net.parameters(), device, tcfg.lr, (0.9, 0.999), 0.0)
        self.modules, self.optimizers, self.lrs = {"net": self.net}, {"net": self.opt}, {"net": tcfg.lr}
        self.ema_target = self.net
        self.ema = EMAModel(self.net.parameters(), decay=tcfg.ema_decay)
        self.wrapped = False

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
        (x, y), = batches
        loss = (self.forward(y) - x).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ema.step(self.net.parameters())
        return {"loss": loss.detach()}

    def sample(self, module: nn.Module, labels: np.ndarray, cfg: Any) -> np.ndarray:
        return FAMILY.sample(module, None, labels, cfg, n_classes=self.n_classes, device=self.device, amp=False)

    def wrap_ddp(self, ddp: Callable[[nn.Module], nn.Module], compiled: Callable[[nn.Module], nn.Module]) -> None:
        self.forward = compiled(ddp(self.net))
        self.wrapped = True


class ToyFamily(GeneratorFamily):
    name = "toy"
    description = "one learned image per class plus seeded noise (tests only)"
    files = ("toy.pt",)
    weights = "toy.pt"

    def check_resolution(self, gcfg: Any, resolution: int) -> None:
        if resolution > 64:
            from synthgate.errors import ConfigError

            raise ConfigError(f"prepare.resolution: {resolution} is too large for the toy family (at most 64)")

    def make_task(self, gcfg: Any, tcfg: Any, resolution: int, channels: int, n_classes: int,
                  device: torch.device) -> ToyTask:
        return ToyTask(gcfg, tcfg, resolution, channels, n_classes, device)

    def write(self, folder: Path, module: nn.Module, extras: dict[str, Any]) -> None:
        torch.save({"images": module.images.detach().cpu(), "shape": list(module.shape)}, folder / "toy.pt")

    def load(self, model_dir: Path, gcfg: Any, info: dict[str, Any], device: torch.device) -> tuple[nn.Module, Any]:
        state = torch.load(model_dir / "toy.pt", weights_only=True)
        c, r, _ = state["shape"]
        net = ClassImages(len(info["classes"]), c, r)
        net.images.data.copy_(state["images"])
        return net.to(device).eval(), None

    def sample(self, module: nn.Module, context: Any, labels: np.ndarray, cfg: Any, *, n_classes: int,
               device: torch.device, amp: bool, reporter: Any = None) -> np.ndarray:
        with torch.no_grad():
            y = torch.as_tensor(labels, dtype=torch.long, device=device)
            noise = per_image_noise(module.shape, cfg.seed, 0, len(y), "toy").to(device)
            return to_uint8((module(y) + 0.05 * noise).clamp(-1, 1))


FAMILY = ToyFamily()
