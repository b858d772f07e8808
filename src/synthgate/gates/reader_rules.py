"""The reader-study rule ``fidelity.max_reader_accuracy``, recomputed from the readers x images matrix
of right answers that ``evaluation.json`` records (:mod:`synthgate.evaluation.readers.evidence`).

It passes only when the readers demonstrably cannot tell the synthetic images from real ones: the
study is half real (else chance is not 0.5), every reader added finished it (no reader left out),
at least ``min_readers`` readers and ``min_images`` images, the readers' mean accuracy lies within
[1 - max, max] on both one-sided bounds at ``reader_confidence`` (two one-sided tests: an accuracy
well below 0.5 means readers tell the images apart with the labels swapped), and no single reader
is shown to be outside [1 - max, max] by exact binomial tests at the same level, Bonferroni over the
readers (the mean can hide an expert among readers at chance).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthgate.gates.policy import FidelityRules
from synthgate.gates.rules import RuleResult

RULE = "fidelity.max_reader_accuracy"


def _malformed(readers: dict[str, Any]) -> str | None:
    correct = readers.get("correct")
    if not isinstance(correct, list) or not correct or not all(isinstance(r, list) for r in correct):
        return "no readers x images matrix of right answers"
    if len({len(r) for r in correct}) != 1:
        return "rows of different lengths"
    if not all(x in (0, 1) and not isinstance(x, bool) for r in correct for x in r):
        return "entries other than 0 and 1"
    if len(correct) != readers.get("readers_finished") or len(correct[0]) != readers.get("n_images"):
        return (f"{len(correct)} x {len(correct[0])}, not readers_finished x n_images "
                f"({readers.get('readers_finished')} x {readers.get('n_images')})")
    return None


def _refusal(readers: Any, f: FidelityRules) -> str | None:
    """Why the recorded study cannot support the rule, or ``None``."""
    if not isinstance(readers, dict):
        return ("no reader study in the evaluation (evaluate.reader_study): the readers' accuracy is not measured, "
                "so this rule cannot pass")
    bad = _malformed(readers)
    if bad:
        return f"the evaluation's reader record is malformed ({bad}): re-run `synthgate evaluate --reader-study`"
    n, n_real = readers["n_images"], readers.get("n_real")
    if n_real is None or 2 * n_real != n:
        return (f"the study shows {n_real} real images of {n}: chance is 0.5 only in a study half real "
                "(create it with the default --real-fraction 0.5)")
    added, finished = readers.get("readers_added"), readers["readers_finished"]
    if added != finished:
        return (f"{finished} of {added} readers finished: every reader added must finish (leaving readers out "
                "could choose the result)")
    if finished < f.min_readers:
        return (f"{finished} reader(s) finished the study, fewer than the {f.min_readers} the policy asks for "
                "(fidelity.min_readers): too few to bound their accuracy")
    if n < f.min_images:
        return (f"the study has {n} images, fewer than the {f.min_images} the policy asks for (fidelity.min_images)")
    return None


def reader_rule(evaluation: dict[str, Any], f: FidelityRules, rules: list[RuleResult], skipped: list[str]) -> None:
    from synthgate.evaluation.readers.bound import accuracy_bound, reader_tests

    if f.max_reader_accuracy is None:
        skipped.append(RULE)
        return
    readers = evaluation.get("readers")
    why = _refusal(readers, f)
    if why or not isinstance(readers, dict):
        rules.append(RuleResult(RULE, False, None, f.max_reader_accuracy, "<=", why or "no reader study"))
        return
    correct = np.asarray(readers["correct"], np.int64)
    b = accuracy_bound(correct, f.reader_confidence)
    experts = reader_tests(correct, f.max_reader_accuracy, 1 - f.reader_confidence)
    value = max(b["upper"], 1 - b["lower"])  # the farther bound, as an accuracy above chance
    ok = value <= f.max_reader_accuracy and not experts
    w = (readers.get("accuracy") or {}).get("wilcoxon") or {}
    reason = (f"readers' accuracy {b['mean']:.3f} over {b['readers']} readers and {b['images']} images, one-sided "
              f"{f.reader_confidence:g} bounds [{b['lower']:.3f}, {b['upper']:.3f}]"
              + (f"; Wilcoxon p {w['p']:.3g}" if "p" in w else ""))
    if value > f.max_reader_accuracy:
        reason += (f": outside [{1 - f.max_reader_accuracy:g}, {f.max_reader_accuracy:g}], so the readers may tell "
                   "synthetic from real (above chance, or below it with the labels swapped), or there are too few "
                   "readers or images to show that they cannot")
    if experts:
        reason += "; " + ", ".join(f"reader {e['reader']} at {e['accuracy']:.2f} (binomial p {e['p']:.2g})"
                                   for e in experts) + (f" outside [{1 - f.max_reader_accuracy:g}, "
                                                         f"{f.max_reader_accuracy:g}] on their own (exact binomial "
                                                         "tests, Bonferroni over the readers)")
    if ok:
        reason += (f" within [{1 - f.max_reader_accuracy:g}, {f.max_reader_accuracy:g}], and no reader alone shown "
                   "outside it")
    rules.append(RuleResult(RULE, bool(ok), value, f.max_reader_accuracy, "<=", reason))
