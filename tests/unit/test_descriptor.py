"""The learned copy descriptor: its modifications, its training, its cache and identity."""

import numpy as np
import pytest
import torch

from synthgate.data.canonical import metadata_for, write_dataset
from synthgate.errors import ConfigError
from synthgate.evaluation.config import DescriptorConfig
from synthgate.evaluation.memorization.descriptor import (
    augment,
    get_descriptor,
    jpeg_like,
    load_descriptor,
    prepare_input,
    train_descriptor,
)
from tests.helpers import pattern

CPU = torch.device("cpu")


def _images(n, seed, size=16):
    return np.stack([np.asarray(pattern(seed * 1000 + i, (size, size)))[..., None] for i in range(n)])


def test_jpeg_like_compression_is_lossy_at_low_quality_only():
    x = prepare_input(_images(4, 1), 16)
    hi = jpeg_like(x, torch.full((4,), 95.0))
    lo = jpeg_like(x, torch.full((4,), 10.0))
    assert (hi - x).abs().mean() < 2.0 < (lo - x).abs().mean()
    assert lo.min() >= 0 and lo.max() <= 255 and lo.shape == x.shape


def test_augment_makes_a_modified_copy_in_range():
    x = prepare_input(_images(32, 2), 16)
    y = augment(x, x.flip(0), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
    assert (y - x).abs().mean() > 1.0  # modified


def test_descriptor_trains_and_separates_copies_from_other_images():
    train = _images(120, 3)
    net, history = train_descriptor(train, DescriptorConfig(steps=30, batch_size=32), CPU)
    assert history[-1]["step"] == 29 and history[-1]["infonce"] < history[0]["infonce"]
    from synthgate.evaluation.memorization.descriptor import standardise

    with torch.no_grad():
        z = net(standardise(prepare_input(train, 32)))
        noisy = np.clip(train + np.random.default_rng(0).normal(0, 8, train.shape), 0, 255).astype(np.uint8)
        zc = net(standardise(prepare_input(noisy, 32)))  # noisy copies
    assert torch.allclose(z.norm(dim=1), torch.ones(len(z)), atol=1e-5)
    same = (z * zc).sum(1)
    others = (z @ z.T).fill_diagonal_(float("nan"))
    # after 30 CPU steps a noisy copy is already closer to its source than a typical other image is
    assert (same > others.nanmedian(dim=1).values).float().mean() > 0.9


def test_descriptor_is_cached_by_dataset_and_refused_for_another(tmp_path):
    imgs = _images(60, 4)
    labels = np.repeat([0, 1], 30)
    meta = metadata_for(imgs, labels, ["a", "b"], "train", [f"s{i}" for i in range(60)])
    ds = write_dataset(tmp_path / "ds", imgs, meta, ["a", "b"], stage="test", config={}, inputs=[])
    cfg = DescriptorConfig(steps=3, batch_size=16, cache_dir=tmp_path / "cache")
    d1 = get_descriptor(ds, cfg, CPU)
    d2 = get_descriptor(ds, cfg, CPU)
    assert d1.descriptor_id == d2.descriptor_id and d1.identity()["dataset_content_hash"] == ds.content_hash
    f = d1.features(imgs[:5])
    assert f.shape == (5, 128) and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    with pytest.raises(ConfigError, match="copy descriptor was trained on dataset .* but the real dataset is"):
        load_descriptor(d1.path, CPU, expect_dataset="f" * 64)
