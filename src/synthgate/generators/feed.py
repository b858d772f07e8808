"""What the training loop reads and how fast: seeded batches of the train split, and the clock.

Batch ``k`` is positions ``k*B .. (k+1)*B`` of the concatenated per-epoch permutations (seeded
with ``(seed, epoch)``), so a resumed run reads exactly the batches the uninterrupted run would.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from synthgate.generators.common import mix_seed, to_model_space
from synthgate.generators.config import TrainConfig


class Feed:
    """Seeded batches of the train split: batch ``k`` is positions ``k*B .. (k+1)*B`` of the
    concatenated per-epoch permutations, so any batch can be recomputed from its index alone.
    Under DDP, rank ``r`` of ``W`` is given batch ``k*W + r`` of that stream when asked for ``k``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, tcfg: TrainConfig, device: torch.device,
                 memory_format: torch.memory_format, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed = len(images), tcfg.batch_size, tcfg.seed
        self.rank, self.world_size = rank, world_size
        self.device, self.memory_format = device, memory_format
        on_gpu = device.type == "cuda" and (
            tcfg.data_on_gpu == "always"
            or (tcfg.data_on_gpu == "auto" and images.nbytes < 0.25 * torch.cuda.mem_get_info(device)[0])
        )
        self.store = device if on_gpu else torch.device("cpu")
        self.images = torch.from_numpy(images).to(self.store)
        self.labels = torch.from_numpy(labels).to(self.store)
        self._perm: tuple[int, torch.Tensor] | None = None

    def _epoch(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, "epoch", epoch))
            self._perm = (epoch, torch.randperm(self.n, generator=g).to(self.store))
        return self._perm[1]

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos, parts = (k * self.world_size + self.rank) * self.batch_size, []
        while (need := self.batch_size - sum(len(p) for p in parts)) > 0:
            epoch, offset = divmod(pos, self.n)
            take = self._epoch(epoch)[offset : offset + need]
            parts.append(take)
            pos += len(take)
        idx = torch.cat(parts)
        x = to_model_space(self.images[idx].to(self.device, non_blocking=True))
        return x.contiguous(memory_format=self.memory_format), self.labels[idx].to(self.device, non_blocking=True)


class Clock:
    """Training throughput, excluding the first step (warm-up, compilation) and checkpoint/grid work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.t: float | None = None
        self.win_t = self.win_n = self.tot_t = self.tot_n = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self.t = time.perf_counter()

    def stop(self) -> None:
        if self.t is not None:
            self._sync()
            dt = time.perf_counter() - self.t
            self.win_t += dt
            self.tot_t += dt
            self.t = None

    def count(self, n: int) -> None:
        if self.t is not None:
            self.win_n += n
            self.tot_n += n

    def window_rate(self) -> float:
        rate = self.win_n / self.win_t if self.win_t > 0 else math.nan
        self.win_t = self.win_n = 0.0
        return rate

    def rate(self) -> float:
        return self.tot_n / self.tot_t if self.tot_t > 0 else math.nan
