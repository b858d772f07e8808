"""The generator-family protocol: every registered family answers it, an unknown type is refused
with the registered names, and a family defined outside synthgate needs one registry line to be
trained (with checkpoints and resume), saved, loaded, sampled and fingerprinted like the others."""

import numpy as np
import pytest

from synthgate.config import load_params
from synthgate.errors import ConfigError
from synthgate.generators import family as fam
from synthgate.generators.config import GeneratorConfig, SampleConfig
from synthgate.generators.model import load_generator, read_generator_info, weights_path
from synthgate.generators.sample import sample
from synthgate.generators.train import train
from synthgate.utils import sha256_file
from tests.unit.generators_helpers import dataset_fixture, one_thread_fixture, quick  # noqa: F401 (fixtures)


@pytest.mark.parametrize("name", list(fam.FAMILIES))
def test_every_registered_family_answers_the_protocol(name):
    f = fam.get_family(name)
    assert isinstance(f, fam.GeneratorFamily) and f.name == name and f.description
    assert f.weights in f.files
    with pytest.raises(ConfigError, match="prepare.resolution: 6x6"):
        f.check_resolution(GeneratorConfig(type=name, size="tiny"), 6)


def test_an_unknown_type_names_the_registered_families(tmp_path):
    with pytest.raises(ConfigError, match=r"generator.type: unknown model type 'vae'") as e:
        fam.get_family("vae")
    assert "diffusion, gan, latent, stylegan2" in e.value.hint
    p = tmp_path / "params.yaml"
    p.write_text("generator: {type: vae}\n")
    with pytest.raises(ConfigError) as e:
        load_params(p)
    assert "unknown model type 'vae': input should be 'diffusion', 'gan', 'latent' or 'stylegan2'" in e.value.message


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(fam.FAMILIES, "toy", "tests.unit.toy_family")  # the one line a new family adds
    return GeneratorConfig(type="toy", size="tiny")


def test_a_new_family_is_one_module_and_one_registry_line(toy, dataset, tmp_path):
    first = train(dataset.root, toy, quick(steps=4, checkpoint_every=2), tmp_path / "run")
    assert first.steps == 4
    resumed = train(dataset.root, toy, quick(steps=6, checkpoint_every=2), tmp_path / "run")
    assert resumed.resumed_from == 4 and resumed.steps == 6
    info = read_generator_info(resumed.model_dir)
    assert info["type"] == "toy" and info["generator"]["type"] == "toy"
    assert info["files"] == {"toy.pt": sha256_file(weights_path(resumed.model_dir, "toy"))}
    gen = load_generator(resumed.model_dir, "cpu")
    cfg = SampleConfig(per_class=3, seed=1)
    a = gen.sample(np.array([0, 1, 1]), cfg)
    assert a.shape == (3, dataset.resolution, dataset.resolution, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, gen.sample(np.array([0, 1, 1]), cfg))  # seeded per image
    out = sample(resumed.model_dir, cfg.model_copy(update={"device": "cpu"}), tmp_path / "samples")
    assert out.manifest["generator"]["type"] == "toy"
    assert out.manifest["inputs"][0]["sha256"] == sha256_file(resumed.model_dir / "toy.pt")


def test_a_family_checks_its_own_resolution(toy, tmp_path):
    from tests.unit.generators_helpers import make_dataset

    big = make_dataset(tmp_path / "big", res=72)
    with pytest.raises(ConfigError, match="72 is too large for the toy family"):
        train(big.root, toy, quick(steps=1), tmp_path / "run")
