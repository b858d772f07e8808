import pytest

from synthgate.config import load_params
from synthgate.errors import ConfigError


@pytest.mark.parametrize("res", [0, -8, 30, 100])
def test_resolution_must_be_positive_multiple_of_8(res):
    with pytest.raises(ConfigError, match=r"prepare.resolution: resolution must be a positive multiple of 8"):
        load_params(None, {"prepare.resolution": res})


def test_unknown_key_and_wrong_type_are_named(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("prepare:\n  resolutoin: 64\nvalidate:\n  min_images_per_class: many\n")
    with pytest.raises(ConfigError) as e:
        load_params(p)
    assert "prepare.resolutoin: Extra inputs are not permitted" in e.value.message
    assert "validate.min_images_per_class" in e.value.message


def test_unknown_source_type_in_config():
    with pytest.raises(ConfigError, match="data.source.type"):
        load_params(None, {"data.source.type": "hdf5"})


def test_env_overrides_source_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNTHGATE_SOURCE_PATH", str(tmp_path / "x.npz"))
    assert load_params(None).data.source.path == tmp_path / "x.npz"
    assert load_params(None, {"data.source.path": "y"}).data.source.path.name == "y"


def test_project_params_yaml_is_valid():
    from tests.helpers import REPO

    p = load_params(REPO / "params.yaml")
    assert p.prepare.resolution == 32 and p.data.source.type == "auto"
    assert p.generator.size == "tiny" and p.sample.per_class == 50


def test_the_project_params_read_mednist_by_detection():
    from synthgate.data.sources import detect_type
    from tests.helpers import REPO

    p = load_params(REPO / "params.yaml")
    assert detect_type(p.data.source.path) == "mednist"


def test_unknown_top_level_section_is_refused_by_name(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("sample:\n  per_class: 5\nsampel:\n  per_class: 10\n")
    with pytest.raises(ConfigError) as e:
        load_params(p)
    assert f"{p}: sampel: Extra inputs are not permitted" in e.value.message
    assert load_params(None, {"sample.per_class": 5}).sample.per_class == 5


def test_duplicate_utility_seeds_are_refused_by_value():
    with pytest.raises(ConfigError) as e:
        load_params(None, {"evaluate.utility.seeds": [0, 3, 0, 3, 1]})
    assert "evaluate.utility.seeds: seeds must be distinct: 0, 3 repeated in [0, 3, 0, 3, 1]" in e.value.message
    assert load_params(None, {"evaluate.utility.seeds": [2, 0, 1]}).evaluate.utility.seeds == [2, 0, 1]


def test_sample_config_is_valid_with_its_own_defaults():
    from synthgate.generators.config import DEFAULT_PER_CLASS, SampleConfig

    assert SampleConfig().per_class == DEFAULT_PER_CLASS
    assert SampleConfig(match_real=True).per_class is None
    with pytest.raises(ValueError, match="set either per_class or match_real, not both"):
        SampleConfig(match_real=True, per_class=5)
    with pytest.raises(ValueError, match=r"set per_class \(images per class\) or match_real"):
        SampleConfig(per_class=None)
