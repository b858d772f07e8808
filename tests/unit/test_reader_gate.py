"""The reader study as gate evidence (issue 19, item 3): its bound over readers and images, the rule
``fidelity.max_reader_accuracy`` (skipped when null, failing without a study, with too few readers or
with readers who tell synthetic from real), and the study in an evaluation: refused for other
datasets, the readers' names kept out, the section in both reports and the tags on the version."""

import numpy as np
import pytest
from pydantic import ValidationError

from synthgate.errors import DataError
from synthgate.evaluation.readers.bound import accuracy_bound
from synthgate.evaluation.readers.evidence import reader_evidence
from synthgate.evaluation.readers.store import Answers
from synthgate.evaluation.readers.study import create_study
from synthgate.gates.decision import decide
from synthgate.gates.policy import GatePolicy
from tests.unit.test_gates import _evaluation
from tests.unit.test_reader_study import _dataset

RULE = "fidelity.max_reader_accuracy"


def test_the_bound_is_the_two_way_anova_bound_and_never_below_the_mean():
    from scipy.stats import t

    m = np.array([[1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]])
    b = accuracy_bound(m, 0.95)
    r, i, mean = 3, 4, m.mean()
    ms_r = i * ((m.mean(1) - mean) ** 2).sum() / (r - 1)
    ms_i = r * ((m.mean(0) - mean) ** 2).sum() / (i - 1)
    df = (ms_r + ms_i) ** 2 / (ms_r**2 / (r - 1) + ms_i**2 / (i - 1))
    assert b["mean"] == pytest.approx(mean) and b["df"] == pytest.approx(df)
    se = max(np.sqrt((ms_r + ms_i) / (r * i)), np.sqrt(mean * (1 - mean) / (r * i)))
    assert b["upper"] == pytest.approx(mean + t.ppf(0.95, df) * se)
    assert b["lower"] == pytest.approx(mean - t.ppf(0.95, df) * se)
    assert accuracy_bound(np.ones((5, 10)), 0.95)["upper"] == 1.0  # every answer right: no room below 1
    # images that are easy or hard for every reader widen the bound (a readers-only interval misses them)
    rng = np.random.default_rng(0)
    noise = (rng.random((6, 100)) < 0.5).astype(int)
    easy_hard = np.tile(rng.random(100) < 0.5, (6, 1)).astype(int)
    easy_hard[:, :5] = noise[:, :5]
    assert accuracy_bound(easy_hard, 0.95)["upper"] > accuracy_bound(noise, 0.95)["upper"] + 0.05
    with pytest.raises(ValueError, match="at least 2 of each"):
        accuracy_bound([[1, 0, 1]], 0.95)


def _with_readers(accuracies, images=100, seed=0, **over):
    rng = np.random.default_rng(seed)
    e = _evaluation()
    correct = [(rng.random(images) < a).astype(int).tolist() for a in accuracies]
    e["readers"] = {"correct": correct, "accuracy": {"mean": float(np.mean(correct)), "wilcoxon": {"p": 0.4}},
                    "n_images": images, "n_real": images // 2, "readers_added": len(accuracies),
                    "readers_finished": len(accuracies), **over}
    return e


def _policy(**fidelity):
    return GatePolicy.model_validate({"fidelity": fidelity})


def _rule(e, **fidelity):
    [r] = [x for x in decide(e, _policy(**fidelity)).rules if x.rule == RULE]
    return r


def test_the_rule_is_skipped_when_null_and_fails_without_a_study_or_with_too_few_readers_or_images():
    assert RULE in decide(_evaluation(), GatePolicy()).skipped
    r = _rule(_evaluation(), max_reader_accuracy=0.6)
    assert not r.passed and r.value is None
    assert r.reason == ("no reader study in the evaluation (evaluate.reader_study): the readers' accuracy is not "
                        "measured, so this rule cannot pass")
    r = _rule(_with_readers([0.5] * 4), max_reader_accuracy=0.6)
    assert not r.passed
    assert r.reason == ("4 reader(s) finished the study, fewer than the 5 the policy asks for (fidelity.min_readers): "
                        "too few to bound their accuracy")
    r = _rule(_with_readers([0.5] * 6, images=40), max_reader_accuracy=0.6)
    assert r.reason == "the study has 40 images, fewer than the 50 the policy asks for (fidelity.min_images)"
    for bad in (0.4, 1.0):
        with pytest.raises(ValidationError, match="greater than 0.5|less than 1"):
            _policy(max_reader_accuracy=bad)


@pytest.mark.parametrize("over,why", [
    ({"n_real": 20}, "the study shows 20 real images of 100: chance is 0.5 only in a study half real"),
    ({"readers_added": 7}, "6 of 7 readers finished: every reader added must finish"),
    ({"readers_finished": 5}, "malformed (6 x 100, not readers_finished x n_images (5 x 100))"),
    ({"correct": [[2] * 100] * 6}, "malformed (entries other than 0 and 1)"),
    ({"correct": [[0] * 100] * 5 + [[0] * 99]}, "malformed (rows of different lengths)"),
])
def test_a_study_that_cannot_support_the_rule_fails_with_its_reason(over, why):
    r = _rule(_with_readers([0.5] * 6, **over), max_reader_accuracy=0.6)
    assert not r.passed and r.value is None and why in r.reason


def test_readers_at_chance_pass_and_readers_who_tell_either_way_or_one_expert_fail():
    chance = _with_readers([0.5] * 8)
    r = _rule(chance, max_reader_accuracy=0.65)
    b = accuracy_bound(chance["readers"]["correct"], 0.95)
    assert r.passed and r.value == pytest.approx(max(b["upper"], 1 - b["lower"])) and 0.5 < r.value < 0.65
    assert "over 8 readers and 100 images" in r.reason and "Wilcoxon p 0.4" in r.reason
    assert "no reader alone shown outside it" in r.reason
    r = _rule(_with_readers([0.75, 0.8, 0.7, 0.85, 0.8, 0.75]), max_reader_accuracy=0.65)
    assert not r.passed and r.value > 0.7 and "may tell synthetic from real" in r.reason
    # far below chance: they tell the images apart with the labels swapped
    r = _rule(_with_readers([0.1] * 5), max_reader_accuracy=0.65)
    assert not r.passed and r.value > 0.85 and "below it with the labels swapped" in r.reason
    # one expert among readers at chance: the mean alone would pass
    expert = _with_readers([0.5] * 9 + [0.95], seed=3)
    assert accuracy_bound(expert["readers"]["correct"], 0.95)["upper"] < 0.65
    r = _rule(expert, max_reader_accuracy=0.65)
    assert not r.passed and "reader 10 at 0.9" in r.reason and "outside [0.35, 0.65] on their own" in r.reason
    # the level is the policy's: a stricter level gives wider bounds
    strict = _rule(chance, max_reader_accuracy=0.65, reader_confidence=0.99)
    assert strict.value > _rule(chance, max_reader_accuracy=0.65).value


def test_a_balanced_pattern_does_not_make_the_bound_collapse_to_the_mean():
    # every reader right once of two images, each image right for half the readers: both mean squares 0
    m = np.array([[1, 0], [0, 1]] * 3)
    b = accuracy_bound(m, 0.95)
    assert b["mean"] == 0.5 and b["se"] == pytest.approx(np.sqrt(0.25 / 12)) and b["upper"] > 0.7


@pytest.fixture
def answered(tmp_path):
    """A study of 8 images answered by 5 readers (accuracies 1, 7/8, 6/8, 5/8, 7/8)."""
    real = _dataset(tmp_path / "real", {"train": 6, "test": 8})
    syn = _dataset(tmp_path / "syn", {"train": 10}, seed=7, stage="sample")
    s = create_study(real.root, syn.root, tmp_path / "study", n=8)
    key, store = s.key(), Answers(s)
    for k, wrong in enumerate([0, 1, 2, 3, 1]):
        r = store.add_reader(f"Dr. Reader{k}")
        for j, i in enumerate(r.order):
            truth = "real" if key[i]["real"] else "synthetic"
            store.answer(r.token, i, ("synthetic" if truth == "real" else "real") if j < wrong else truth)
    store.close()
    return real, syn, s


def test_the_evidence_is_recomputed_from_the_study_and_names_no_reader(answered, tmp_path):
    real, syn, s = answered
    ev = reader_evidence(s.root, real, syn)
    assert ev["readers_finished"] == 5 and ev["n_images"] == 8
    assert list(ev["per_reader"]) == [f"reader {k}" for k in range(1, 6)] and "Dr." not in str(ev)
    assert [sum(row) for row in ev["correct"]] == [8, 7, 6, 5, 7]
    assert ev["accuracy_bounds_95"]["upper"] == pytest.approx(accuracy_bound(ev["correct"], 0.95)["upper"])
    assert not any("image_id" in x for x in ev["most_called_synthetic"])  # the key of a study that goes on
    assert not (s.root / "reader_study.json").exists()  # evaluate does not write into the study folder
    # an edited reader_study.json changes nothing: the study is analyzed again
    (s.root / "reader_study.json").write_text('{"accuracy": {"mean": 0.5}}')
    assert reader_evidence(s.root, real, syn)["correct"] == ev["correct"]


def test_a_study_of_other_datasets_is_refused_naming_both_hashes(answered, tmp_path):
    real, syn, s = answered
    other = _dataset(tmp_path / "other", {"train": 10}, seed=9, stage="sample")
    with pytest.raises(DataError) as e:
        reader_evidence(s.root, real, other)
    assert (f"the reader study shows the synthetic dataset {syn.content_hash[:16]}, but this evaluation is of the "
            f"synthetic dataset {other.content_hash[:16]}: its readers judged other images") in str(e.value)
    with pytest.raises(DataError, match="shows the real dataset"):
        reader_evidence(s.root, other, syn)


def _rewrite_key(study, edit):
    """Edit the key and re-hash it into study.json, as someone rewriting both files would."""
    import hashlib
    import json

    from synthgate.evaluation.readers.study import KEY

    key = json.loads((study.root / KEY).read_bytes())
    edit(key["images"])
    raw = json.dumps(key, indent=1).encode()
    (study.root / KEY).chmod(0o600)
    (study.root / KEY).write_bytes(raw)
    manifest = json.loads((study.root / "study.json").read_text())
    manifest["key_sha256"] = hashlib.sha256(raw).hexdigest()
    (study.root / "study.json").write_text(json.dumps(manifest))


def test_a_study_rewritten_consistently_is_still_refused_image_by_image(answered, tmp_path):
    """study.json and the key re-hashed together: the images themselves must be the evaluated ones."""
    real, syn, s = answered
    a_real, shown = next((i, v["index"]) for i, v in s.key().items() if v["real"])
    train = int(real.split_indices("train")[0])
    _rewrite_key(s, lambda k: k[a_real].update(index=train))  # a training image posing as a test image
    with pytest.raises(DataError, match=f"image {a_real}: index {train} is not an image of the evaluated real "
                                        "dataset's test split"):
        reader_evidence(s.root, real, syn)
    other = next(int(i) for i in real.split_indices("test") if int(i) != shown and int(i) != train)
    _rewrite_key(s, lambda k: k[a_real].update(index=other))
    with pytest.raises(DataError, match="the PNG the readers saw is not image"):
        reader_evidence(s.root, real, syn)


def test_the_version_tags_carry_the_headline():
    from synthgate.registry.registry import _reader_tags, register

    assert hasattr(register, "__wrapped__")  # register keeps turning MLflow's 401/403 into AccessDenied
    assert _reader_tags(None) == {"reader_study": "none"}
    tags = _reader_tags({"readers_finished": 6, "n_images": 100, "study_sha256": "ab" * 32,
                         "accuracy": {"mean": 0.53, "wilcoxon": {"p": 0.21}},
                         "accuracy_bounds_95": {"lower": 0.48, "upper": 0.58}})
    assert tags == {"reader_study": f"6 readers, 100 images, study {'ab' * 8}", "reader_study.accuracy_mean": "0.5300",
                    "reader_study.accuracy_bounds_95": "[0.4800, 0.5800]", "reader_study.wilcoxon_p": "0.21"}
