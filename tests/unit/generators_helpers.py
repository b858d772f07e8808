"""Tiny canonical datasets and settings for the generator tests (CPU, seconds)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from synthgate.data.canonical import CanonicalDataset, write_dataset
from synthgate.generators.config import GeneratorConfig, TrainConfig


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: these networks are tiny, and on a shared 2-core machine a busy
    neighbour makes multi-threaded kernels wait on each other (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def smooth_images(n: int, res: int, channels: int, seed: int) -> np.ndarray:
    """``n`` smooth random uint8 images (N, res, res, channels)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, res, res, channels), np.uint8)
    for i in range(n):
        for c in range(channels):
            small = Image.fromarray((rng.random((4, 4)) * 255).astype(np.uint8))
            out[i, :, :, c] = np.asarray(small.resize((res, res), Image.Resampling.BICUBIC))
    return out


def make_dataset(root: Path, per_class: dict[str, int] | None = None, res: int = 16, channels: int = 1,
                 seed: int = 0, val_every: int = 5) -> CanonicalDataset:
    """A canonical dataset: every ``val_every``-th image of a class goes to val, the rest to train."""
    per_class = per_class or {"lung": 10, "bone": 8}
    classes = list(per_class)
    labels = np.repeat(np.arange(len(classes)), list(per_class.values()))
    split = ["val" if (i % val_every == val_every - 1) else "train" for k in per_class.values() for i in range(k)]
    meta = pd.DataFrame({"split": split, "label": labels, "label_name": [classes[k] for k in labels]})
    return write_dataset(root, smooth_images(len(labels), res, channels, seed), meta, classes,
                         stage="test", config={}, inputs=[])


def tiny(kind: str = "diffusion", **kw: object) -> GeneratorConfig:
    return GeneratorConfig(type=kind, size="tiny", **kw)  # type: ignore[arg-type]


def quick(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"steps": 4, "batch_size": 4, "log_every": 2, "checkpoint_every": 2,
                               "sample_grid_every": 0, "mlflow": False, "device": "cpu"}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


class RecordingReporter:
    """A Reporter that remembers what it was told."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int | None]] = []
        self.messages: list[str] = []
        self.advanced = 0

    def task(self, description: str, total: int | None):  # noqa: ANN201
        self.tasks.append((description, total))

        @contextlib.contextmanager
        def cm():  # noqa: ANN202
            def advance(n: int = 1) -> None:
                self.advanced += n

            yield advance

        return cm()

    def info(self, message: str) -> None:
        self.messages.append(message)


# Fixtures shared by the training-loop tests; a module uses them with
# `from tests.unit.generators_helpers import dataset_fixture, one_thread_fixture` (with a noqa for F401).
@pytest.fixture(autouse=True, scope="module", name="_one_thread")
def one_thread_fixture() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module", name="dataset")
def dataset_fixture(tmp_path_factory: pytest.TempPathFactory) -> CanonicalDataset:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")
