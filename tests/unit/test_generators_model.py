import json

import numpy as np
import pytest
import torch

from synthgate.config import parse_model
from synthgate.data.canonical import METADATA_COLUMNS, load_dataset
from synthgate.errors import ConfigError, DataError
from synthgate.generators.config import GeneratorConfig, SampleConfig
from synthgate.generators.diffusion import DiffusionTask
from synthgate.generators.gan import GanTask
from synthgate.generators.model import INFO, load_generator
from synthgate.generators.sample import class_counts, sample
from synthgate.generators.stylegan2 import StyleGan2Task
from synthgate.utils import sha256_file
from tests.unit.generators_helpers import make_dataset, quick, single_thread, tiny

CPU = torch.device("cpu")
CLASSES = ["lung", "bone"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(params=["diffusion", "gan", "stylegan2"])
def saved(request, tmp_path):
    torch.manual_seed(0)
    task_cls = {"diffusion": DiffusionTask, "gan": GanTask, "stylegan2": StyleGan2Task}[request.param]
    task = task_cls(tiny(request.param), quick(), 16, 1, 2, CPU)
    module = task.ema_module()
    model_dir = task.save(tmp_path / "model", module, classes=CLASSES, dataset_hash="abc", step=7)
    return task, module, model_dir


def test_save_load_roundtrip_samples_identically(saved):
    task, module, model_dir = saved
    info = json.loads((model_dir / INFO).read_text())
    assert info["type"] == task.gcfg.type and info["classes"] == CLASSES and info["step"] == 7
    assert info["dataset_content_hash"] == "abc" and info["resolution"] == 16 and info["channels"] == 1
    assert set(info["files"]) and all(len(h) == 64 for h in info["files"].values())
    gen = load_generator(model_dir, "cpu")
    assert gen.classes == CLASSES and gen.type == task.gcfg.type
    cfg = SampleConfig(sampler="ddim", steps=3, per_class=2, seed=3)
    labels = np.array([0, 1, 1])
    np.testing.assert_array_equal(gen.sample(labels, cfg), task.sample(module, labels, cfg))
    assert gen.sample(np.array([], int), cfg).shape == (0, 16, 16, 1)
    with pytest.raises(ConfigError, match="labels must lie in 0..1"):
        gen.sample(np.array([2]), cfg)


def test_diffusion_model_dir_is_diffusers_layout(saved):
    task, _, model_dir = saved
    if task.gcfg.type == "diffusion":
        assert (model_dir / "unet" / "config.json").exists() and (model_dir / "scheduler").is_dir()
    else:
        assert (model_dir / "generator.pt").exists()


def test_missing_or_unknown_files_name_the_file(saved, tmp_path):
    task, _, model_dir = saved
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}.*{INFO} missing"):
        load_generator(tmp_path / "nope", "cpu")
    weights = model_dir / ("unet/diffusion_pytorch_model.safetensors" if task.gcfg.type == "diffusion" else "generator.pt")
    weights.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot load"):
        load_generator(model_dir, "cpu")
    weights.unlink()
    with pytest.raises(DataError, match=f"{weights}: missing"):
        load_generator(model_dir, "cpu")
    info = json.loads((model_dir / INFO).read_text())
    (model_dir / INFO).write_text(json.dumps({**info, "type": "vae"}))
    with pytest.raises(DataError, match="unknown generator type 'vae'"):
        load_generator(model_dir, "cpu")
    (model_dir / INFO).write_text(json.dumps({**info, "format": "other/v9"}))
    with pytest.raises(DataError, match="unknown generator format"):
        load_generator(model_dir, "cpu")


def test_sample_writes_a_canonical_synthetic_dataset(tmp_path):
    torch.manual_seed(0)
    real = make_dataset(tmp_path / "real", {"lung": 10, "bone": 5}, val_every=5)  # train: 8 lung, 4 bone
    task = DiffusionTask(tiny(), quick(), 16, 1, 2, CPU)
    model_dir = task.save(tmp_path / "model", task.ema_module(), classes=real.classes,
                          dataset_hash=real.content_hash, step=3)
    cfg = SampleConfig(sampler="dpmsolver++", steps=2, match_real=True, total=6, batch_size=4)
    syn = sample(model_dir, cfg, tmp_path / "syn", real_dataset=real.root)
    again = load_dataset(tmp_path / "syn")
    assert again.content_hash == syn.content_hash and again.images.shape == (6, 16, 16, 1)
    assert syn.counts()["train"] == {"lung": 4, "bone": 2} and set(syn.meta["split"]) == {"train"}
    assert set(METADATA_COLUMNS) <= set(syn.meta.columns) and not syn.meta.isna().any().any()
    assert syn.meta["source"].tolist() == [f"synthetic:diffusion-tiny-step3:{i}" for i in range(6)]
    assert (syn.meta["delentropy"] > 0).all()
    m = syn.manifest
    assert m["synthetic"] is True and m["stage"] == "sample" and m["sampler"]["sampler"] == "dpmsolver++"
    assert m["generator"] == {"model_dir": str(model_dir), "name": "diffusion-tiny-step3", "type": "diffusion",
                              "step": 3, "dataset_content_hash": real.content_hash,
                              "weights_sha256": m["inputs"][0]["sha256"], "objective": "ddpm",
                              "sampler": "dpmsolver++", "steps": 2, "network_evaluations": 2, "guidance_scale": 1.5}
    assert m["inputs"][0]["sha256"] == sha256_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    per_class = sample(model_dir, SampleConfig(steps=2, per_class=2), tmp_path / "syn2")
    assert per_class.counts()["train"] == {"lung": 2, "bone": 2}


def test_class_counts_follow_the_real_distribution(tmp_path):
    real = make_dataset(tmp_path / "real", {"a": 6, "b": 3, "c": 1}, val_every=100)
    assert class_counts(real.classes, SampleConfig(match_real=True), real).tolist() == [6, 3, 1]
    assert class_counts(real.classes, SampleConfig(match_real=True, total=7), real).tolist() == [4, 2, 1]
    assert class_counts(real.classes, SampleConfig(per_class=5)).tolist() == [5, 5, 5]
    with pytest.raises(ConfigError, match="match_real"):
        class_counts(real.classes, SampleConfig(match_real=True))
    with pytest.raises(DataError, match="classes"):
        class_counts(["x", "y", "z"], SampleConfig(match_real=True), real)


def test_settings_are_validated_with_field_names():
    with pytest.raises(ConfigError, match="type"):
        parse_model(GeneratorConfig, {"type": "vae"}, "params.yaml")
    with pytest.raises(ConfigError, match="bogus"):
        parse_model(GeneratorConfig, {"bogus": 1}, "params.yaml")
    with pytest.raises(ConfigError, match="per_class or match_real"):
        parse_model(SampleConfig, {"per_class": 3, "match_real": True}, "params.yaml")
    with pytest.raises(ConfigError, match="set per_class"):
        parse_model(SampleConfig, {"per_class": None}, "params.yaml")
    assert parse_model(SampleConfig, {}, "params.yaml").per_class == 100  # valid with its own defaults (#15)
