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
    assert b["upper"] == pytest.approx(mean + t.ppf(0.95, df) * np.sqrt((ms_r + ms_i) / (r * i)))
    assert accuracy_bound(np.ones((5, 10)), 0.95)["upper"] == 1.0  # every answer right: no room below 1
    # images that are easy or hard for every reader widen the bound (a readers-only interval misses them)
    rng = np.random.default_rng(0)
    noise = (rng.random((6, 100)) < 0.5).astype(int)
    easy_hard = np.tile(rng.random(100) < 0.5, (6, 1)).astype(int)
    easy_hard[:, :5] = noise[:, :5]
    assert accuracy_bound(easy_hard, 0.95)["upper"] > accuracy_bound(noise, 0.95)["upper"] + 0.05
    with pytest.raises(ValueError, match="at least 2 of each"):
        accuracy_bound([[1, 0, 1]], 0.95)


def _with_readers(accuracies, images=100, seed=0):
    rng = np.random.default_rng(seed)
    e = _evaluation()
    correct = [(rng.random(images) < a).astype(int).tolist() for a in accuracies]
    e["readers"] = {"correct": correct, "accuracy": {"mean": float(np.mean(correct)), "wilcoxon": {"p": 0.4}}}
    return e


def _policy(**fidelity):
    return GatePolicy.model_validate({"fidelity": fidelity})


def test_the_rule_is_skipped_when_null_and_fails_without_a_study_or_with_too_few_readers():
    assert RULE in decide(_evaluation(), GatePolicy()).skipped
    [r] = [x for x in decide(_evaluation(), _policy(max_reader_accuracy=0.6)).rules if x.rule == RULE]
    assert not r.passed and r.value is None
    assert r.reason == ("no reader study in the evaluation (evaluate.reader_study): the readers' accuracy is not "
                        "measured, so this rule cannot pass")
    [r] = [x for x in decide(_with_readers([0.5] * 4), _policy(max_reader_accuracy=0.6)).rules if x.rule == RULE]
    assert not r.passed
    assert r.reason == ("4 reader(s) finished the study, fewer than the 5 the policy asks for (fidelity.min_readers): "
                        "too few to bound their accuracy")
    with pytest.raises(ValidationError, match="greater than 0.5"):
        _policy(max_reader_accuracy=0.4)


def test_readers_at_chance_pass_and_readers_who_tell_fail_on_the_recomputed_bound():
    chance = _with_readers([0.5] * 8)
    d = decide(chance, _policy(max_reader_accuracy=0.65))
    [r] = [x for x in d.rules if x.rule == RULE]
    expected = accuracy_bound(chance["readers"]["correct"], 0.95)["upper"]
    assert r.passed and r.value == pytest.approx(expected) and 0.5 < expected < 0.65
    assert "over 8 readers and 100 images" in r.reason and "Wilcoxon p 0.4" in r.reason
    telling = _with_readers([0.75, 0.8, 0.7, 0.85, 0.8, 0.75])
    [r] = [x for x in decide(telling, _policy(max_reader_accuracy=0.65)).rules if x.rule == RULE]
    assert not r.passed and r.value > 0.7
    assert "better than the policy allows" in r.reason
    # the level is the policy's: a stricter level gives a higher bound
    [r99] = [x for x in decide(chance, _policy(max_reader_accuracy=0.65, reader_confidence=0.99)).rules
             if x.rule == RULE]
    assert r99.value > expected


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
    ev = reader_evidence(s.root, real.content_hash, syn.content_hash)
    assert ev["readers_finished"] == 5 and ev["n_images"] == 8
    assert list(ev["per_reader"]) == [f"reader {k}" for k in range(1, 6)] and "Dr." not in str(ev)
    assert [sum(row) for row in ev["correct"]] == [8, 7, 6, 5, 7]
    assert ev["accuracy_bound_95"]["upper"] == pytest.approx(accuracy_bound(ev["correct"], 0.95)["upper"])
    # an edited reader_study.json changes nothing: the study is analyzed again
    (s.root / "reader_study.json").write_text('{"accuracy": {"mean": 0.5}}')
    assert reader_evidence(s.root, real.content_hash, syn.content_hash)["correct"] == ev["correct"]


def test_a_study_of_other_datasets_is_refused_naming_both_hashes(answered, tmp_path):
    real, syn, s = answered
    other = _dataset(tmp_path / "other", {"train": 10}, seed=9, stage="sample")
    with pytest.raises(DataError) as e:
        reader_evidence(s.root, real.content_hash, other.content_hash)
    assert (f"the reader study shows the synthetic dataset {syn.content_hash[:16]}, but this evaluation is of the "
            f"synthetic dataset {other.content_hash[:16]}: its readers judged other images") in str(e.value)
    with pytest.raises(DataError, match="shows the real dataset"):
        reader_evidence(s.root, other.content_hash, syn.content_hash)


def test_the_version_tags_carry_the_headline():
    from synthgate.registry.registry import _reader_tags

    assert _reader_tags(None) == {"reader_study": "none"}
    tags = _reader_tags({"readers_finished": 6, "n_images": 100, "study_sha256": "ab" * 32,
                         "accuracy": {"mean": 0.53, "wilcoxon": {"p": 0.21}}, "accuracy_bound_95": {"upper": 0.58}})
    assert tags == {"reader_study": f"6 readers, 100 images, study {'ab' * 8}", "reader_study.accuracy_mean": "0.5300",
                    "reader_study.accuracy_upper_95": "0.5800", "reader_study.wilcoxon_p": "0.21"}
