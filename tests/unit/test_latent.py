"""The latent family (issue 16): KL and VQ autoencoders trained once per dataset version and cached,
their reconstruction quality recorded, a UNet or DiT denoiser on their latents trained, resumed
exactly, saved with its autoencoder, loaded and sampled; and each bad input the issue names."""

import shutil

import numpy as np
import pytest
import torch

from synthgate.errors import ConfigError, DataError
from synthgate.generators import autoencoder as ae_mod
from synthgate.generators.config import AutoencoderConfig, GeneratorConfig, SampleConfig
from synthgate.generators.model import load_generator, read_generator_info
from synthgate.generators.sample import sample
from synthgate.generators.train import train
from synthgate.utils import sha256_file
from tests.unit.generators_helpers import make_dataset, one_thread_fixture, quick  # noqa: F401 (fixtures)
from tests.unit.test_train_loop import flat_state

CPU = torch.device("cpu")


def latent(tmp_path, kind="kl", denoiser="unet", steps=20, **kw):
    ae = AutoencoderConfig(kind=kind, steps=steps, batch_size=8, cache_dir=tmp_path / "autoencoders",
                           **kw.pop("autoencoder", {}))
    return GeneratorConfig(type="latent", size="tiny", denoiser=denoiser, patch_size=1, autoencoder=ae, **kw)


@pytest.fixture
def ds(tmp_path):
    return make_dataset(tmp_path / "ds", {"lung": 12, "bone": 10}, res=16, val_every=4)


def test_the_autoencoder_is_trained_once_per_dataset_version_and_recorded(ds, tmp_path):
    acfg = AutoencoderConfig(kind="kl", steps=150, batch_size=8, cache_dir=tmp_path / "ae", lr=2e-3)
    first = ae_mod.get_autoencoder(ds, acfg, "tiny", CPU)
    info = first.info
    assert info["dataset_content_hash"] == ds.content_hash and info["kind"] == "kl"
    assert info["weights_sha256"] == sha256_file(first.folder / ae_mod.WEIGHTS)
    assert info["reconstruction"]["split"] == "val" and info["reconstruction"]["images"] == 5  # no test split here
    # it learned something: its reconstructions beat the mean training image by a wide margin
    val = np.asarray(ds.images[ds.split_indices("val")]).astype(np.float64) / 255
    mean = np.asarray(ds.images[ds.split_indices("train")]).astype(np.float64).mean(0) / 255
    psnr_mean = 10 * np.log10(1 / np.mean((val - mean) ** 2))
    assert info["reconstruction"]["psnr"] > psnr_mean + 3, (info["reconstruction"], psnr_mean)
    assert 0 < info["reconstruction"]["ms_ssim"] <= 1
    # the scaled latents of the training images have unit spread
    x = torch.from_numpy(np.asarray(ds.images[ds.split_indices("train")])).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert float(first.encode(x).std()) == pytest.approx(1.0, rel=1e-3)
    assert first.encode(x).shape == (len(x), 4, 4, 4)  # downsample 4, 4 latent channels
    again = ae_mod.get_autoencoder(ds, acfg, "tiny", CPU)  # from the cache: the same weights, not retrained
    assert again.folder == first.folder and again.weights_sha256 == first.weights_sha256
    other = make_dataset(tmp_path / "other", {"lung": 12, "bone": 10}, res=16, seed=5)
    with pytest.raises(DataError, match=rf"trained on dataset version {ds.content_hash[:16]}, not on "
                                        rf"{other.content_hash[:16]}"):
        ae_mod.load_autoencoder(first.folder, CPU, expect_dataset=other.content_hash)


@pytest.mark.parametrize(("kind", "denoiser"), [("kl", "unet"), ("vq", "dit")])
def test_a_resumed_latent_run_equals_the_uninterrupted_one(kind, denoiser, ds, tmp_path):
    gcfg = latent(tmp_path, kind, denoiser)
    full = train(ds.root, gcfg, quick(steps=6, checkpoint_every=3), tmp_path / "full")
    part = train(ds.root, gcfg, quick(steps=3, checkpoint_every=3), tmp_path / "split")
    resumed = train(ds.root, gcfg, quick(steps=6, checkpoint_every=3), tmp_path / "split")
    assert part.steps == 3 and resumed.resumed_from == 3 and resumed.steps == 6
    a, b = flat_state(full.checkpoint), flat_state(resumed.checkpoint)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    info = read_generator_info(resumed.model_dir)
    assert info["type"] == "latent" and info["generator"]["denoiser"] == denoiser
    bundled = ae_mod.load_autoencoder(resumed.model_dir / "vae", CPU, expect_dataset=ds.content_hash)
    assert info["files"][f"vae/{ae_mod.WEIGHTS}"] == bundled.weights_sha256 and bundled.kind == kind
    cfg = SampleConfig(steps=3, per_class=2, seed=4)
    gen = load_generator(resumed.model_dir, "cpu")
    images = gen.sample(np.array([0, 1, 1]), cfg)
    assert images.shape == (3, 16, 16, 1) and images.dtype == np.uint8 and images.std() > 0
    np.testing.assert_array_equal(images, gen.sample(np.array([0, 1, 1]), cfg))  # seeded per image
    np.testing.assert_array_equal(images, load_generator(full.model_dir, "cpu").sample(np.array([0, 1, 1]), cfg))
    out = sample(resumed.model_dir, cfg.model_copy(update={"device": "cpu"}), tmp_path / "samples")
    assert out.manifest["generator"]["type"] == "latent" and out.manifest["num_images"] == 4


def run_ae_sha(run):
    return read_generator_info(run.model_dir)["files"][f"vae/{ae_mod.WEIGHTS}"]


def test_bad_inputs_name_what_is_wrong(ds, tmp_path):
    with pytest.raises(ConfigError, match=r"prepare.resolution: 18x18 images cannot be encoded by a downsample-4 "
                                          r"autoencoder"):
        train(make_dataset(tmp_path / "odd", res=18).root, latent(tmp_path), quick(), tmp_path / "r0")
    with pytest.raises(ConfigError, match=r"generator.patch_size: 3 does not divide the latent side 4 \(resolution "
                                          r"16 / downsample 4\)"):
        train(ds.root, latent(tmp_path, denoiser="dit").model_copy(update={"patch_size": 3}), quick(), tmp_path / "r1")
    run = train(ds.root, latent(tmp_path), quick(steps=2, checkpoint_every=2), tmp_path / "run")
    other = ae_mod.get_autoencoder(ds, AutoencoderConfig(kind="kl", steps=5, batch_size=8, seed=2,
                                                         cache_dir=tmp_path / "other-ae"), "tiny", CPU)
    # resuming on the latents of another autoencoder (the cached one was replaced) is refused
    cached, = (tmp_path / "autoencoders").iterdir()
    for f in (ae_mod.WEIGHTS, ae_mod.INFO):
        shutil.copyfile(other.folder / f, cached / f)
    with pytest.raises(ConfigError, match="the checkpoint's denoiser was trained on the latents of autoencoder "
                                          f"{run_ae_sha(run)[:16]}, but this run's autoencoder is "
                                          f"{other.weights_sha256[:16]}"):
        train(ds.root, latent(tmp_path), quick(steps=4, checkpoint_every=2), tmp_path / "run")
    # sampling with another autoencoder than the bundled one, or without one
    model = tmp_path / "model-copy"
    shutil.copytree(run.model_dir, model)
    shutil.copyfile(other.folder / ae_mod.WEIGHTS, model / "vae" / ae_mod.WEIGHTS)
    shutil.copyfile(other.folder / ae_mod.INFO, model / "vae" / ae_mod.INFO)
    with pytest.raises(DataError, match="are not the ones this model was trained with"):
        load_generator(model, "cpu")
    shutil.rmtree(model / "vae")
    with pytest.raises(DataError, match=r"vae/config.json: missing from the latent model"):
        load_generator(model, "cpu")


def test_the_cli_trains_and_samples_a_latent_model(tmp_path, cli):
    """`synthgate train --type latent` with the autoencoder settings from params.yaml, then `synthgate sample`."""
    import yaml

    make_dataset(tmp_path / "ds", {"lung": 12, "bone": 10}, res=16, val_every=4)
    params = {"generator": {"size": "tiny", "denoiser": "dit", "patch_size": 2,
                            "autoencoder": {"kind": "vq", "steps": 10, "batch_size": 8}},
              "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "sample_grid_every": 0, "mlflow": False,
                        "device": "cpu"},
              "sample": {"per_class": 2, "steps": 2, "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, out, err = cli("train", "--dataset", "ds", "--type", "latent", "--out", "run", cwd=tmp_path)
    assert code == 0, err
    assert "trained 2 steps" in out
    assert (tmp_path / "data" / "autoencoders").is_dir()  # generator.autoencoder.cache_dir, relative to the project
    code, out, err = cli("sample", "--model", "run/model", "--out", "samples", "--real", "ds", cwd=tmp_path)
    assert code == 0, err
    assert "sampled 4 synthetic images" in out
