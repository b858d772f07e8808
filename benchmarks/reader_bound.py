"""Coverage of the reader-study gate rule's bound on simulated readers.

    python benchmarks/reader_bound.py              # 2,000 simulated studies per cell
    python benchmarks/reader_bound.py --reps 500

The rule ``fidelity.max_reader_accuracy`` passes a generator only when the one-sided upper bound of
the readers' mean accuracy is within the threshold (:func:`synthgate.evaluation.readers.bound.
accuracy_bound`). A bound is sound when it lies above the true mean accuracy at least
``confidence`` of the time, where "true" is over the population of readers and of the generator's
images (a new study draws both again). Readers are simulated as in a reader study: reader r calls
image i right with probability ``sigmoid(skill_r + ease_i)``, ``skill_r ~ N(mu, sd_reader)`` and
``ease_i ~ N(0, sd_image)`` (some images are easy to call for everyone, some hard); the true mean is
computed from 4 million draws. The baseline in the same run is the t bound over the readers'
accuracies alone (``analyze``'s interval, one-sided), which ignores the images' share of the
variance. The table prints, per cell, each bound's coverage with its Clopper-Pearson 95% interval
(nominal: at least 0.95) and the mean bound, so that the price of soundness is visible.

A second table runs the whole rule (:func:`synthgate.gates.reader_rules.reader_rule`, with
``max_reader_accuracy`` 0.65 at 0.95) on studies of readers at chance (it should pass, given enough
readers and images), of readers who tell a little (it should fail), and of readers at chance with one
or two experts among them (logit skill 4, accuracy about 0.98: the mean alone hides them; the
per-reader tests must fail the study).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from synthgate.evaluation.readers.bound import accuracy_bound  # noqa: E402
from synthgate.gates.policy import FidelityRules  # noqa: E402
from synthgate.gates.reader_rules import reader_rule  # noqa: E402

CONFIDENCE = 0.95


def _true_mean(mu: float, sd_reader: float, sd_image: float, rng: np.random.Generator) -> float:
    z = rng.normal(mu, sd_reader, 4_000_000) + rng.normal(0, sd_image, 4_000_000)
    return float((1 / (1 + np.exp(-z))).mean())


def _cp(k: int, n: int) -> tuple[float, float]:
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return float(lo), float(hi)


def run_cell(readers: int, images: int, mu: float, sd_reader: float, sd_image: float, reps: int,
             seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    truth = _true_mean(mu, sd_reader, sd_image, rng)
    covered = {"two-way (shipped)": 0, "readers-only t": 0}
    bounds: dict[str, list[float]] = {k: [] for k in covered}
    t_q = stats.t.ppf(CONFIDENCE, readers - 1)
    for _ in range(reps):
        z = rng.normal(mu, sd_reader, (readers, 1)) + rng.normal(0, sd_image, (1, images))
        m = (rng.random((readers, images)) < 1 / (1 + np.exp(-z))).astype(np.int64)
        shipped = accuracy_bound(m, CONFIDENCE)["upper"]
        acc = m.mean(axis=1)
        baseline = float(acc.mean() + t_q * acc.std(ddof=1) / np.sqrt(readers))
        for name, b in (("two-way (shipped)", shipped), ("readers-only t", baseline)):
            covered[name] += b >= truth
            bounds[name].append(b)
    out: dict[str, float] = {"truth": truth}
    for name in covered:
        out[f"{name} coverage"] = covered[name] / reps
        out[f"{name} lo"], out[f"{name} hi"] = _cp(covered[name], reps)
        out[f"{name} mean bound"] = float(np.mean(bounds[name]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    cells = [(r, i, mu, sr, si) for r in (5, 10) for i in (50, 100) for mu in (0.0, 1.0)
             for sr, si in ((0.3, 0.0), (0.3, 1.5), (0.8, 1.5))]
    print(f"{args.reps} simulated studies per cell, one-sided {CONFIDENCE:.2f} upper bounds of the mean accuracy")
    print("| readers | images | true mean accuracy | sd reader / image (logit) | two-way (shipped) coverage "
          "[95% CI] | mean bound | readers-only t coverage [95% CI] | mean bound | ratio of mean bounds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, (r, i, mu, sr, si) in enumerate(cells):
        c = run_cell(r, i, mu, sr, si, args.reps, seed=k)
        a, b = "two-way (shipped)", "readers-only t"
        print(f"| {r} | {i} | {c['truth']:.3f} | {sr} / {si} | {c[a + ' coverage']:.3f} [{c[a + ' lo']:.3f}, "
              f"{c[a + ' hi']:.3f}] | {c[a + ' mean bound']:.3f} | {c[b + ' coverage']:.3f} [{c[b + ' lo']:.3f}, "
              f"{c[b + ' hi']:.3f}] | {c[b + ' mean bound']:.3f} | "
              f"{c[a + ' mean bound'] / c[b + ' mean bound']:.3f} |", flush=True)
    rule_table(max(100, args.reps // 4))


def rule_pass_rate(readers: int, images: int, skills: list[float], sd_image: float, reps: int, seed: int) -> float:
    """Share of simulated studies that pass the rule; ``skills`` the readers' logit skills (cycled)."""
    rng = np.random.default_rng(seed)
    policy = FidelityRules(max_reader_accuracy=0.65)
    passed = 0
    skill = np.resize(np.asarray(skills, np.float64), readers)[:, None]
    for _ in range(reps):
        z = skill + rng.normal(0, sd_image, (1, images))
        m = (rng.random((readers, images)) < 1 / (1 + np.exp(-z))).astype(int)
        rules: list = []
        reader_rule({"readers": {"correct": m.tolist(), "n_images": images, "n_real": images // 2,
                                 "readers_added": readers, "readers_finished": readers}}, policy, rules, [])
        passed += rules[0].passed
    return passed / reps


def rule_table(reps: int) -> None:
    print(f"\nthe whole rule (max_reader_accuracy 0.65, confidence 0.95), {reps} simulated studies per cell; image "
          "ease sd 1.0 (logit)")
    print("| readers | images | readers' logit skills | true mean accuracy | passed |")
    print("| --- | --- | --- | --- | --- |")
    cases = [("all 0 (at chance)", [0.0]), ("all 0.4 (inside the margin)", [0.4]),
             ("all 1.2 (outside the margin)", [1.2]), ("one 4.0 (an expert), the rest 0", None),
             ("all -0.85 (below chance)", [-0.85])]
    for r, i in ((5, 100), (10, 100), (10, 200)):
        for k, (label, skills) in enumerate(cases):
            sk = skills if skills is not None else [4.0] + [0.0] * (r - 1)
            truth = float(np.mean([_true_mean(s, 0.0, 1.0, np.random.default_rng(9)) for s in sk]))
            rate = rule_pass_rate(r, i, sk, 1.0, reps, seed=100 + k)
            print(f"| {r} | {i} | {label} | {truth:.3f} | {rate:.3f} |", flush=True)


if __name__ == "__main__":
    main()
