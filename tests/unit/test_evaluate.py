"""The evaluation stage on planted cases and bad inputs (tiny images, CPU)."""

import json

import numpy as np
import pytest

from synthgate.config import PrepareConfig, SourceConfig
from synthgate.data.canonical import load_dataset, metadata_for, write_dataset
from synthgate.data.prepare import prepare
from synthgate.errors import ConfigError, DataError
from synthgate.evaluation.config import EncoderConfig, EvaluateConfig, MemorizationConfig, UtilityConfig
from synthgate.evaluation.evaluate import evaluate, make_standin
from tests.helpers import make_folder


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    src = make_folder(tmp / "raw", {"a": 100, "b": 100, "c": 100}, mixed=False)
    prepare(SourceConfig(type="folder", path=src),
            PrepareConfig(resolution=16, split={"val": 0.15, "test": 0.3, "seed": 0}), tmp / "prepared")
    make_standin(tmp / "prepared", tmp / "real", tmp / "standin")
    return load_dataset(tmp / "real"), load_dataset(tmp / "standin"), tmp


def _cfg(tmp, **kw):
    return EvaluateConfig(
        device="cpu",
        encoder=EncoderConfig(epochs=2, batch_size=32, cache_dir=tmp / "encoders"),
        memorization=MemorizationConfig(planted=20, chunk=64),
        utility=UtilityConfig(epochs=1, batch_size=32, seeds=[0, 1, 2], **kw.pop("utility", {})),
        **kw,
    )


def _synthetic(root, images, labels, classes, **extra):
    meta = metadata_for(images, labels, classes, "train", [f"synthetic:{i}" for i in range(len(images))])
    return write_dataset(root, images, meta, classes, stage="sample", config={}, inputs=[],
                         extra={"synthetic": True, **extra})


def _replay(ds, kind):
    tr = ds.split_indices("train")  # a "generator" that replays its training set
    imgs = np.asarray(ds.images[tr])
    if kind == "flip":
        imgs = imgs[:, :, ::-1].copy()
    elif kind == "rot":
        imgs = np.rot90(imgs, 1, axes=(1, 2)).copy()
    return imgs, ds.labels()[tr]


@pytest.mark.parametrize("kind", ["exact", "flip", "rot"])
def test_replayed_training_images_are_caught(real, tmp_path, kind):
    ds, _, tmp = real
    imgs, labels = _replay(ds, kind)
    syn = _synthetic(tmp_path / "syn", imgs, labels, ds.classes)
    r = evaluate(ds.root, syn.root, _cfg(tmp, utility={"enabled": False}), tmp_path / "eval")
    s = r.data["summary"]
    assert s["pixel_near_copy_fraction"] >= 0.95
    assert s["membership_auc_pixel"] > 0.9
    if kind == "exact":
        assert s["feature_near_copy_fraction"] >= 0.95 and s["membership_auc"] > 0.9
    # the release gate refuses such a "generator" on its memorization rules
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy

    d = gate(r.path, GatePolicy(), tmp_path / "gate.json")
    failed = {x.rule for x in d.failures}
    assert not d.passed and {"memorization.max_pixel_near_copy_fraction",
                             "memorization.max_membership_auc_pixel"} <= failed


def test_real_held_out_scores_like_the_baseline_and_report_renders(real, tmp_path):
    ds, standin, tmp = real
    r = evaluate(ds.root, standin.root, _cfg(tmp), tmp_path / "eval")
    d = json.loads(r.path.read_text())
    assert d["evaluation_hash"] == r.evaluation_hash and len(r.evaluation_hash) == 64
    mem = d["memorization"]
    # ~45 held-out images calibrate the threshold (about their maximum): an honest set scores ~1/46
    assert mem["pixel"]["near_copy_fraction"] <= 0.1
    assert mem["feature"]["near_copy_fraction"] <= 0.1
    assert abs(d["summary"]["membership_auc"] - 0.5) < 0.25
    assert mem["planted_detection"]["exact"]["pixel"] == 1.0
    assert d["encoder"]["dataset_content_hash"] == ds.content_hash
    u = d["utility"]
    assert set(u["settings"]) == {"real", "synthetic", "augmented", "transfer"}
    assert len(u["runs"]["real"]) == 3
    for key in ("auc_gap", "mannwhitney_real_vs_synthetic_p", "augmented_wilcoxon_p", "delta_syn"):
        assert key in u["stats"]
    html = r.report_html.read_text()
    assert html.count('src="data:image/png;base64,') >= 8
    for section in ("Summary", "Fidelity", "Memorization and privacy", "Utility", "Variety and complexity"):
        assert f"<h2>{section}</h2>" in html
    assert set(d["timings"]) >= {"encoder", "fidelity", "memorization_pixel", "utility"}
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy

    decision = gate(r.path, GatePolicy(), tmp_path / "gate.json")
    failed = {x.rule for x in decision.failures}
    # ~45 members vs ~45 non-members: the membership AUCs are too noisy to gate on here
    assert not failed & {"memorization.max_pixel_near_copy_fraction", "memorization.max_feature_near_copy_fraction"}
    assert 0 <= d["memorization"]["membership"]["pixel_p"] <= 1


def test_encoder_is_cached_by_dataset_hash(real, tmp_path):
    ds, standin, tmp = real
    cfg = _cfg(tmp, utility={"enabled": False})
    a = evaluate(ds.root, standin.root, cfg, tmp_path / "e1").data["encoder"]
    b = evaluate(ds.root, standin.root, cfg, tmp_path / "e2").data["encoder"]
    assert a == b


def test_encoder_of_another_dataset_version_is_refused(real, tmp_path):
    ds, standin, tmp = real
    cfg = _cfg(tmp, utility={"enabled": False})
    evaluate(ds.root, standin.root, cfg, tmp_path / "e")
    enc_dir = next((tmp / "encoders").iterdir())
    other = write_dataset(tmp_path / "other", np.asarray(ds.images)[::-1].copy(), ds.meta.iloc[::-1].copy(),
                          ds.classes, stage="test", config={}, inputs=[])
    cfg2 = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"weights": enc_dir})})
    with pytest.raises(ConfigError, match="encoder was trained on dataset .* but the real dataset is") as e:
        evaluate(other.root, standin.root, cfg2, tmp_path / "e2")
    assert "--retrain-encoder" in e.value.hint


def test_mismatched_sets_are_refused(real, tmp_path):
    ds, standin, tmp = real
    cfg = _cfg(tmp)
    rng = np.random.default_rng(0)
    big = _synthetic(tmp_path / "big", rng.integers(0, 255, (10, 32, 32, 1), dtype=np.uint8), np.zeros(10, int),
                     ds.classes)
    with pytest.raises(DataError, match="synthetic images are 32x32 but the real ones are 16x16"):
        evaluate(ds.root, big.root, cfg, tmp_path / "e")
    rgb = _synthetic(tmp_path / "rgb", rng.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8), np.zeros(10, int),
                     ds.classes)
    with pytest.raises(DataError, match=r"synthetic images have 3 channel\(s\), the real ones 1"):
        evaluate(ds.root, rgb.root, cfg, tmp_path / "e")
    extra = _synthetic(tmp_path / "extra", rng.integers(0, 255, (10, 16, 16, 1), dtype=np.uint8),
                       np.r_[np.zeros(5, int), np.full(5, 3)], [*ds.classes, "tumour"])
    with pytest.raises(DataError, match=r"synthetic class\(es\) \['tumour'\] do not exist in the real dataset"):
        evaluate(ds.root, extra.root, cfg, tmp_path / "e")
    few = _synthetic(tmp_path / "few", np.asarray(standin.images[:4]), standin.labels()[:4], ds.classes)
    with pytest.raises(DataError, match="need more than k images"):
        evaluate(ds.root, few.root, cfg, tmp_path / "e")


def test_nan_images_are_refused(real, tmp_path):
    ds, standin, tmp = real
    imgs = np.asarray(standin.images)
    meta = metadata_for(imgs, standin.labels(), ds.classes, "train", [f"s{i}" for i in range(len(imgs))])
    meta.loc[3, "nan_fraction"] = 1.0
    syn = write_dataset(tmp_path / "nan", imgs, meta, ds.classes, stage="sample", config={}, inputs=[])
    with pytest.raises(DataError, match=r"1 image\(s\) had NaN pixels, e.g. s3"):
        evaluate(ds.root, syn.root, _cfg(tmp), tmp_path / "e")


def test_inception_fid_bad_inputs_are_refused_before_any_work(real, tmp_path):
    """evaluate.inception_weights: a missing file, a file that is not a state dict, and (in this CPU
    environment, which must not have torchvision) the missing torch-fidelity, each refused by
    evaluate() before the encoder is trained. The score itself is checked in the CUDA image
    (tests/containers/test_cuda_image.py), which has torch-fidelity."""
    import importlib.util

    import torch

    ds, standin, tmp = real
    out = tmp_path / "e"
    with pytest.raises(DataError, match="inception.pth: Inception weights file not found"):
        evaluate(ds.root, standin.root, _cfg(tmp, inception_weights=tmp_path / "inception.pth"), out)
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    with pytest.raises(DataError, match="junk.pth: not a PyTorch weights file"):
        evaluate(ds.root, standin.root, _cfg(tmp, inception_weights=junk), out)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(DataError, match="list.pth: not a state dict of tensors"):
        evaluate(ds.root, standin.root, _cfg(tmp, inception_weights=listed), out)
    weights = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    if importlib.util.find_spec("torch_fidelity") is None:
        with pytest.raises(ConfigError, match="standard Inception-FID needs torch-fidelity") as e:
            evaluate(ds.root, standin.root, _cfg(tmp, inception_weights=weights), out)
        assert "CUDA image" in e.value.hint and "reference-encoder FID" in e.value.hint
    assert not out.exists()  # refused before writing anything
