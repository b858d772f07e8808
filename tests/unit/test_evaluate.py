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
        memorization=MemorizationConfig(planted=20, chunk=64, bootstrap=20,
                                        descriptor={"steps": 20, "batch_size": 32, "cache_dir": tmp / "encoders"}),
        utility=UtilityConfig(epochs=1, batch_size=32, seeds=[0, 1, 2, 3, 4], **kw.pop("utility", {})),
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


def test_replayed_training_images_are_caught(real, tmp_path):
    """A "generator" that replays its training set, a third as is, a third mirrored, a third rotated by 90
    degrees (one evaluation for the three kinds)."""
    ds, _, tmp = real
    parts = {kind: _replay(ds, kind) for kind in ("exact", "flip", "rot")}
    n = len(parts["exact"][0])
    third = np.array_split(np.arange(n), 3)
    imgs = np.concatenate([parts[k][0][i] for k, i in zip(parts, third, strict=True)])
    labels = np.concatenate([parts[k][1][i] for k, i in zip(parts, third, strict=True)])
    syn = _synthetic(tmp_path / "syn", imgs, labels, ds.classes)
    r = evaluate(ds.root, syn.root, _cfg(tmp, utility={"enabled": False}), tmp_path / "eval")
    s, m = r.data["summary"], r.data["memorization"]
    assert m["coverage"]["full"] and m["coverage"]["train_compared"] == n
    flagged = set(m["flags"]["indices"])
    start = 0
    for kind, i in zip(parts, third, strict=True):  # each replayed image named as a copy, whatever its kind
        assert len(flagged & set(range(start, start + len(i)))) >= 0.95 * len(i), kind
        start += len(i)
    assert s["flagged_copies"] >= 0.95 * n
    assert {x["train_index"] for x in m["most_significant"]} <= set(ds.split_indices("train").tolist())
    assert s["membership_auc_pixel"] > 0.9
    # the release gate refuses such a "generator" on its memorization rules
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy

    d = gate(r.path, GatePolicy(), tmp_path / "gate.json")
    failed = {x.rule for x in d.failures}
    assert not d.passed and {"memorization.max_flagged_copies", "memorization.max_membership_auc_pixel"} <= failed
    assert json.loads((tmp_path / "gate.json").read_text())["details"]["memorization"]["flagged"]


def test_real_held_out_scores_like_the_baseline_and_report_renders(real, tmp_path):
    ds, standin, tmp = real
    r = evaluate(ds.root, standin.root, _cfg(tmp), tmp_path / "eval")
    d = json.loads(r.path.read_text())
    assert d["evaluation_hash"] == r.evaluation_hash and len(r.evaluation_hash) == 64
    mem = d["memorization"]
    # real held-out images standing in for a generator: no copy flagged, exact planted copies all found
    assert mem["flags"]["count"] == 0 and mem["null_sufficient"] and mem["coverage"]["held_out"] == 90
    assert abs(d["summary"]["membership_auc"] - 0.5) < 0.25
    assert mem["planted"]["exact"]["rate"] == 1.0 and mem["planted"]["exact"]["source_found"] == 1.0
    assert d["encoder"]["dataset_content_hash"] == ds.content_hash
    u = d["utility"]
    assert set(u["settings"]) == {"real", "real_full", "synthetic", "augmented", "transfer"}
    assert len(u["runs"]["real"]) == 5 and u["paired"]["seeds"] == [0, 1, 2, 3, 4]
    for key in ("auc_gap", "auc_gap_upper", "mannwhitney_real_vs_synthetic_p", "augmented_wilcoxon_p", "delta_syn",
                "delta_syn_upper", "augmented_gain_lower"):
        assert key in u["stats"]
    # TRTR and TSTR on the same number of images per class; the full real split beside them
    assert {r["n_train"] for r in u["runs"]["real"]} == {r["n_train"] for r in u["runs"]["synthetic"]}
    f = u["train_sizes"]["resample_fraction"]
    assert u["train_sizes"]["matched_per_class"] == {
        c: max(1, int(f * min(n, u["train_sizes"]["real_full_per_class"][c])))
        for c, n in u["train_sizes"]["synthetic_train_per_class"].items()}
    assert set(u["paired"]["variance"]) == {"auc_gap", "delta_syn", "augmented_gain", "transfer_gain"}
    assert u["runs"]["real_full"][0]["n_train"] == len(ds.split_indices("train"))
    assert d["summary"]["auc_gap_upper"] == u["stats"]["auc_gap_upper"]
    html = r.report_html.read_text()
    assert html.count('src="data:image/png;base64,') >= 7
    for part in ("Flagged as copies at 0.005 (BH)", "mapped back", "Detectors and their nulls",
                 "Power: modified copies of training images drawn from the whole training split", "Clopper-Pearson",
                 "membership inference, copy descriptor"):
        assert part in html, part
    for section in ("Summary", "Fidelity", "Memorization and privacy", "Utility", "Variety and complexity"):
        assert f"<h2>{section}</h2>" in html
    # the stand-in's real dataset was not validated: the report says the null's split was not diagnosed
    assert d["real"]["split"]["diagnosis"] is None and set(d["real"]["split"]) == {"method", "groups", "diagnosis"}
    assert "The null's split</b>" in html and "Not diagnosed</span>" in html
    assert set(d["timings"]) >= {"encoder", "fidelity", "descriptor", "memorization", "utility"}
    # the public report: every section, but no real image and no training file name (the registry and the
    # published package get this one); the renderer does not even read a real image
    from synthgate.evaluation.evaluate import PUBLIC_REPORT
    from synthgate.evaluation.report import PUBLIC_MARK

    public = (r.path.parent / PUBLIC_REPORT).read_text()
    assert PUBLIC_MARK in public and PUBLIC_MARK not in html
    for section in ("Summary", "Fidelity", "Memorization and privacy", "Utility", "Variety and complexity"):
        assert f"<h2>{section}</h2>" in public
    assert public.count('src="data:image/png;base64,') < html.count('src="data:image/png;base64,')
    assert "mapped back" in html and "mapped back" not in public
    assert all(str(s) not in public for s in ds.meta["source"]) and "train_source" not in r.path.read_text()

    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy

    decision = gate(r.path, GatePolicy(), tmp_path / "gate.json")
    failed = {x.rule for x in decision.failures}
    gap_rule = next(x for x in decision.rules if x.rule == "utility.max_auc_gap")
    assert gap_rule.value == pytest.approx(u["stats"]["auc_gap_upper"])
    assert "one-sided 0.95 upper confidence bound" in gap_rule.reason and "over 5 seeds 0, 1, 2, 3, 4" in gap_rule.reason
    assert "training sets" in gap_rule.reason and "test split" in gap_rule.reason
    # the memorization rules that judge the images pass on honest images (the power rule depends on the data)
    assert not failed & {"memorization.max_flagged_copies", "memorization.copy_excess_test",
                         "memorization.max_membership_auc", "memorization.max_membership_auc_pixel",
                         "memorization.max_pixel_median_shift"}
    assert "synthetic.not_standin" in failed
    # the verdict stands at the top of the gate's copy of the report; the evaluation's own is unchanged
    assert "Release gate" not in r.report_html.read_text()
    html = (tmp_path / "report.html").read_text()
    assert html.index("Release gate: <span class=bad>FAILED</span>") < html.index("<h2>Summary</h2>")
    public = (tmp_path / "report_public.html").read_text()
    assert "synthgate:public-report" in public and public.index("Release gate: <span class=bad>FAILED</span>") < \
        public.index("<h2>Summary</h2>")
    assert "an honest generator fails these rules with probability at most 0.01" in html
    # issue #35: one decision page: every applied rule with value, threshold, kind of value and what it protects,
    # above the evidence; a title that says what the page is (and, for the public one, that it has no real image)
    top = html[:html.index("<h2>Summary</h2>")]
    for rule in decision.rules:
        assert f"<code>{rule.rule}</code>" in top, rule.rule
    assert "upper confidence bound (AUC trained on real minus AUC trained on synthetic)" in top
    assert "lower confidence bound (membership-inference AUC, copy-descriptor space)" in top
    assert "may not be released" in top and "Why each failing rule failed" in top
    assert "<title>Release decision: FAILED · Evaluation report: " in html and "internal: shows real patient images" in html
    assert "<title>Release decision: FAILED · Evaluation report: " in public and "(public: no real image)</title>" in public
    assert "{'model_dir'" not in html and "generator: " in html


def test_the_public_report_never_reads_a_real_image(real, tmp_path, monkeypatch):
    """Whatever the report shows, the public renderer cannot show a real image: it never reads one."""
    import synthgate.evaluation.report as report

    class Guard:
        def __init__(self, real):
            self.real = real

        @property
        def images(self):
            raise AssertionError("the public report read a real image")

    render = report.render_report
    seen = []

    def guarded(data, a, public=False):
        if public:
            a = {**a, "real_images": Guard(a["real_images"])}
            seen.append(True)
        return render(data, a, public=public)

    monkeypatch.setattr(report, "render_report", guarded)
    ds, standin, tmp = real
    evaluate(ds.root, standin.root, _cfg(tmp, utility={"enabled": False}), tmp_path / "e")
    assert seen == [True] and "synthgate:public-report" in (tmp_path / "e" / "report_public.html").read_text()


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
    enc_dir = next(d for d in (tmp / "encoders").iterdir() if "copydesc" not in d.name)
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
    # issue #35: a synthetic set missing a class started a full evaluation without a word
    y = standin.labels()
    one = np.flatnonzero(y == 0)
    missing = _synthetic(tmp_path / "missing", np.asarray(standin.images)[one], y[one], ds.classes)
    with pytest.raises(DataError, match=rf"no image of {len(ds.classes) - 1} of the real dataset's {len(ds.classes)} "
                                        rf"classes \({', '.join(ds.classes[1:])}\)") as e:
        evaluate(ds.root, missing.root, cfg, tmp_path / "e")
    assert "sample every class" in e.value.hint and not (tmp_path / "e").exists()
    pick = np.r_[[np.flatnonzero(y == k)[0] for k in range(len(ds.classes))], np.flatnonzero(y == 0)[1:2]]
    few = _synthetic(tmp_path / "few", np.asarray(standin.images)[pick], y[pick], ds.classes)
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


def test_evidence_that_cannot_certify_is_said_and_fails_the_gate(real, tmp_path):
    """Bad input: a training side cut by max_train, and a held-out null smaller than the tail model needs."""
    ds, standin, tmp = real
    cfg = _cfg(tmp, utility={"enabled": False})
    cfg = cfg.model_copy(update={"memorization": cfg.memorization.model_copy(
        update={"max_train": 50, "max_held_out": 40, "planted": 5})})
    r = evaluate(ds.root, standin.root, cfg, tmp_path / "e")
    m = r.data["memorization"]
    assert m["coverage"] | {"train_compared": 50, "full": False, "held_out": 40} == m["coverage"]
    assert m["null_sufficient"] is False and m["held_out_needed"] == 60
    assert "40 held-out images: the tail model needs at least 60" in m["detectors"]["pixel"]["null"]["note"]
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy

    failed = {x.rule: x.reason for x in gate(r.path, GatePolicy(), tmp_path / "gate.json").failures}
    assert failed["memorization.full_coverage"].startswith(
        f"the copy search compared the synthetic images with 50 of {len(ds.split_indices('train'))} training images")
    assert failed["memorization.held_out_sufficient"].startswith(
        "40 real held-out images calibrate the copy null, fewer than the 60 its tail model needs")


def test_a_patient_in_train_and_a_held_out_split_is_refused(real, tmp_path):
    ds, standin, tmp = real
    meta = ds.meta.copy()
    meta["group"] = [f"P{i:04d}" for i in range(len(meta))]
    tr, te = ds.split_indices("train"), ds.split_indices("test")
    meta.loc[meta.index[te[0]], "group"] = meta["group"].iloc[tr[3]]  # one patient in train and test
    grouped = write_dataset(tmp_path / "grouped", np.asarray(ds.images), meta, ds.classes, stage="test", config={},
                            inputs=[])
    with pytest.raises(DataError, match=f"patient group '{meta['group'].iloc[tr[3]]}' has images in the train and "
                                        "test splits: the held-out baseline of the copy search must not contain "
                                        "training patients") as e:
        evaluate(grouped.root, standin.root, _cfg(tmp), tmp_path / "e")
    assert "grouped by patient" in e.value.hint
    assert not (tmp_path / "e").exists()


def test_a_reader_study_goes_into_the_evaluation_its_reports_and_the_gate(real, tmp_path, monkeypatch):
    """Issue 19: the study of these datasets, answered by six readers, in evaluation.json (readers anonymous), in
    both reports, and judged by fidelity.max_reader_accuracy; a study of other images is refused before any work."""
    from synthgate.evaluation.readers.store import Answers
    from synthgate.evaluation.readers.study import create_study
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy

    ds, standin, tmp = real
    study = create_study(ds.root, standin.root, tmp_path / "study", n=20, seed=1)
    key, store = study.key(), Answers(study)
    for k in range(6):  # readers who call every image right: they tell synthetic from real
        r = store.add_reader(f"Dr. Name{k}")
        for i in r.order:
            store.answer(r.token, i, "real" if key[i]["real"] else "synthetic")
    store.close()
    res = evaluate(ds.root, standin.root, _cfg(tmp, utility={"enabled": False}, reader_study=study.root),
                   tmp_path / "e")
    rd = res.data["readers"]
    assert rd["readers_finished"] == 6 and res.data["summary"]["reader_accuracy"] == 1.0
    assert "Dr. Name" not in (tmp_path / "e" / "evaluation.json").read_text()
    for name in ("report.html", "report_public.html"):
        page = (tmp_path / "e" / name).read_text()
        assert "<h2>Reader study</h2>" in page and "reader 6" in page and "Dr. Name" not in page
    policy = GatePolicy.model_validate({"fidelity": {"max_reader_accuracy": 0.6, "min_images": 20}})
    [rule] = [x for x in gate(res.path, policy, tmp_path / "gate.json").rules if x.rule == "fidelity.max_reader_accuracy"]
    assert not rule.passed and rule.value == 1.0
    # another synthetic set than the study's: refused before the encoder is trained
    import synthgate.evaluation.encoder as encoder

    monkeypatch.setattr(encoder, "get_encoder", lambda *a, **k: pytest.fail("work began before the check"))
    imgs, labels = _replay(ds, "exact")
    pick = np.r_[[np.flatnonzero(labels == k)[:14] for k in range(len(ds.classes))]].ravel()  # every class
    other = _synthetic(tmp_path / "other", imgs[pick], labels[pick], ds.classes)
    with pytest.raises(DataError, match="its readers judged other images"):
        evaluate(ds.root, other.root, _cfg(tmp, utility={"enabled": False}, reader_study=study.root), tmp_path / "x")


def test_the_published_report_opens_with_the_signed_release():
    """insert_release: a pure function of the report and the signed release (the gatekeeper recomputes it byte
    for byte); an override names who, when, why and the failing rules; the registered report sits below in a
    sandboxed frame, so that nothing in it (a fake banner, styles that hide, a script, a second <body>) can touch
    the release above it."""
    import html as html_mod

    from synthgate.gates.page import RELEASE_END, RELEASE_START, insert_release

    page = "<html><body><h1>Evaluation</h1></body></html>"
    rel = {"model": "m<x>", "version": "3", "verdict": "override", "signed_at": "2026-12-07T15:00:00+00:00",
           "policy_hash": "ab" * 32, "failing_rules": ["memorization.min_planted_detection"],
           "override": {"user": "alice", "reason": "teaching <only>"}}
    out = insert_release(page, rel)
    assert out == insert_release(page, rel) and out.index(RELEASE_START) < out.index("<iframe sandbox ")
    assert "Released by OVERRIDE" in out and "<b>alice</b>" in out and "teaching &lt;only&gt;" in out
    assert "memorization.min_planted_detection" in out and "m&lt;x&gt; version 3" in out and "abababababababab" in out
    assert f'srcdoc="{html_mod.escape(page, quote=True)}"' in out and "<h1>" not in out
    crafted = ('<html><head><style>.release{display:none}</style><script>alert(1)</script></head>'
               f'<body><p title="<body>">{RELEASE_START}<b>Released: the release gate PASSED</b>{RELEASE_END}</p>'
               '<template><body></template></body></html>')
    got = insert_release(crafted, rel)
    outer = got[: got.index("<iframe sandbox ")]
    assert outer.count(RELEASE_START) == 1 and "PASSED" not in outer and "<script" not in got.replace(
        "&lt;script", "") and "display:none" not in outer
    assert got.endswith('"></iframe></body></html>') and got.count("<iframe") == 1
    passed = insert_release(page, {**rel, "verdict": "passed", "override": None})
    assert "the release gate PASSED" in passed and "OVERRIDE" not in passed
    assert "This release predates the signed rule table" in passed
    # issue #33/#35: the rules as the gatekeeper signed them stand in the release, above the pipeline's report
    rules = [{"rule": "memorization.min_planted_detection", "passed": False, "value": 0.3, "threshold": 0.9,
              "comparison": ">="},
             {"rule": "samples.min_synthetic_images", "passed": True, "value": 300.0, "threshold": 100.0,
              "comparison": ">="}]
    signed = insert_release(page, {**rel, "rules": rules})
    outer = signed[: signed.index("<iframe sandbox ")]
    assert outer.index(RELEASE_START) < outer.index("<code>memorization.min_planted_detection</code>") < \
        outer.index(RELEASE_END)
    assert "<td class=bad>FAIL</td><td>0.30</td><td>≥ 0.90</td>" in outer and "<td>300</td><td>≥ 100</td>" in outer
    assert "what it protects" in outer and "part of what it signed" in outer
