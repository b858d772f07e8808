"""The memorization section of the evaluation report: what a reviewer needs to decide whether the
synthetic set leaks patients, on one page: how the decision is made, the flagged and the most
significant images beside their aligned nearest training images, each detector's held-out null with
its tail model and the score at which one image would be flagged, the planted-copy power with
confidence intervals, and the set-level tests."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from synthgate.evaluation.memorization.evidence import DETECTORS
from synthgate.evaluation.report import _fmt


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _split_paragraph(split: dict[str, Any]) -> str:
    """Where the null comes from: the split, its groups and validation's diagnosis of it (leakage and
    representativeness, :mod:`synthgate.data.leakage`)."""
    diag = split.get("diagnosis")
    head = (f"<p><b>The null's split</b>: {html.escape(str(split.get('method') or 'unknown'))}"
            + (f"; groups: {html.escape(str(split['groups']))}" if split.get("groups") else "; no patient groups")
            + ". ")
    if not diag:
        return head + ("<span class=bad>Not diagnosed</span> (the real dataset was not validated with the leakage "
                       "diagnosis): whether held-out images share patients with training is unknown.</p>")
    leak = f"<span class={'bad' if diag.get('leaks') else 'ok'}>Leakage: {html.escape(str(diag['leakage']))}</span>"
    rep = diag.get("representative")
    ok = bool(rep) and str(rep).startswith("representative")
    rep_html = (f" <span class={'ok' if ok else 'bad'}>Null: {html.escape(str(rep))}</span>" if rep else "")
    return head + leak + "." + rep_html + "</p>"


def _flag_score(null: Any, level: float) -> float | None:
    """The score above which one image's p-value falls below ``level`` (bisection on the tail model)."""
    lo, hi = float(null.scores[0]) if null.n else 0.0, 12.0
    if null.pvalues(np.array([hi]))[0] > level:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if null.pvalues(np.array([mid]))[0] > level else (lo, mid)
    return hi


def _null_plots(m: dict[str, Any], arrays: dict[str, Any], b64: Any) -> str:
    import matplotlib.pyplot as plt

    nulls = arrays["nulls"]
    n_det = len(nulls)
    per_image = m["flags"]["alpha"] / max(m["coverage"]["synthetic_size"], 1) / n_det
    cols = 4
    rows = -(-len(DETECTORS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(DETECTORS):]:
        ax.axis("off")
    for ax, d in zip(axes.ravel(), DETECTORS, strict=False):
        held, syn = arrays["held_scores"][d], arrays["syn_scores"][d]
        both = np.concatenate([held, syn])
        lo, hi = np.quantile(both, 0.01), max(both.max(), nulls[d].scores[-1])
        thr = _flag_score(nulls[d], per_image)
        hi = max(hi, thr or hi)
        bins = np.linspace(lo, hi + 1e-6, 50)
        ax.hist(held, bins=bins, alpha=0.6, density=True, label=f"held-out null (n={len(held)})")
        ax.hist(syn, bins=bins, alpha=0.6, density=True, label=f"synthetic (m={len(syn)})")
        if thr is not None:
            ax.axvline(thr, color="k", ls="--", lw=1, label="one image flagged above")
        ax.set_title(d, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("each detector's score (Fisher z; margin: z difference): held-out null and synthetic images")
    fig.tight_layout()
    return b64(fig)


def _gallery(m: dict[str, Any], syn_images: np.ndarray, train_images: Any, b64: Any, show: Any) -> str:
    import matplotlib.pyplot as plt


    items = m["most_significant"]
    if not items:
        return ""
    fig, axes = plt.subplots(3, len(items), figsize=(1.25 * len(items) + 1.2, 4.4), squeeze=False)
    for j, it in enumerate(items):
        img = syn_images[it["synthetic_index"]]
        t = it["transform"]
        back = map_back(img, t["dihedral"], t.get("scale", 1.0), t.get("rotation_deg", 0.0), *t.get("shift_px", (0, 0)))
        flag = "FLAGGED " if it["flagged"] else ""
        show(axes[0, j], img, f"{flag}#{it['synthetic_index']}\np={it['p_combined']:.1e}")
        show(axes[1, j], back[..., None], it["detector"])
        show(axes[2, j], np.asarray(train_images[it["train_index"]]), f"train {it['train_index']}")
    for r, label in enumerate(("synthetic", "mapped back", "nearest training")):
        axes[r, 0].text(-0.15, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=8)
    return b64(fig)


def memorization_section(data: dict[str, Any], a: dict[str, Any], b64: Any, show: Any,
                         public: bool = False) -> list[str]:
    m = data["memorization"]
    arrays = a["memorization"]
    cov, fl = m["coverage"], m["flags"]
    parts = ["<h2>Memorization and privacy</h2>"]
    parts.append(
        f"<p class=note>Every synthetic image is searched against every training image by {len(DETECTORS)} detectors "
        "(pixel correlation over rotations/flips, the same after smoothing, template matching over shifts, "
        "scale/crop and small rotations, tile-wise re-alignment, a copy descriptor trained on the training split, "
        "and the margins between the best and the second-best training image in plain, smoothed and aligned "
        "correlation). The same scores of real held-out images "
        "(patients not in training) form each detector's null. A synthetic image's p-value is its score's tail "
        "probability under that null (exact inside the null's range, a fitted exponential tail with a bootstrap "
        "upper bound beyond it), combined over detectors (Bonferroni); images whose p-value survives a "
        f"{fl['correction'].upper()} correction over the synthetic set are flagged as copies and never released. "
        "The gate applies its policy's false-alarm rate to these recorded p-values.</p>")
    parts.append(
        f"<p>Searched: {cov['synthetic_compared']} of {cov['synthetic_size']} synthetic images against "
        f"<b>{cov['train_compared']} of {cov['train_size']}</b> training images"
        + ("" if cov["full"] else " <span class=bad>(partial coverage: the gate fails)</span>")
        + f"; null: {cov['held_out']} held-out images"
        + ("" if m["null_sufficient"] else f" <span class=bad>(fewer than the {m['held_out_needed']} the tail model "
           "needs: individual copies cannot be certified)</span>")
        + f". Search: shifts up to {m['search']['max_shift_px']} px, scales {m['search']['scales']}, rotations "
        f"{m['search']['rotations_deg']} deg (refined), {m['search']['shortlist']} candidates per image; descriptor "
        f"{html.escape(str((m.get('descriptor') or {}).get('descriptor_id')))}.</p>")
    parts.append(_split_paragraph((data.get("real") or {}).get("split") or {}))
    cls = "bad" if fl["count"] else "ok"
    parts.append(f"<p>Flagged as copies at {fl['alpha']:g} ({fl['correction'].upper()}): <span class={cls}>"
                 f"{fl['count']}</span> image(s){': ' + ', '.join(map(str, fl['indices'][:30])) if fl['count'] else ''}."
                 + (" The most significant images, flagged or not, and the training image each is closest to (the "
                    "images are in the full report, which stays with the real data):</p>" if public else
                    " The most significant images, flagged or not, with the training image each is closest to, "
                    "mapped back by the transform found:</p>"))
    sources = a.get("train_sources")
    if not public:
        parts.append(_gallery(m, a["syn_images"], a["real_images"].images, b64, show))
    parts.append(_table([[it["synthetic_index"], it["p_combined"], it["flagged"], it["detector"], it["train_index"],
                          "" if public or sources is None else str(sources[it["train_index"]]), it["pixel_r"], it["aligned_r"], it["descriptor_cos"],
                          ", ".join(f"{k} {v:g}" if not isinstance(v, list) else f"{k} {v}"
                                    for k, v in it["transform"].items())]
                         for it in m["most_significant"]],
                        ["synthetic", "p (combined)", "flagged", "detector", "train index", "train source", "pixel r",
                         "aligned r", "descriptor cos", "transform"]))
    parts.append(_null_plots(m, arrays, b64))
    rows = []
    for d, v in m["detectors"].items():
        nl, ex = v["null"], v["exceedance"]
        rows.append([d, v["what"], nl["n"], nl.get("max"), nl.get("threshold_u"), nl.get("scale_sigma"),
                     nl.get("gof_anderson_darling_p"), v["synthetic"].get("median"), v["held_out"].get("median"),
                     f"{ex['exceedances']} / {ex['expected']:.2g}", ex["p"]])
    parts += ["<p>Detectors and their nulls (Fisher z scale): the tail model's threshold u and exponential scale, "
              "its Anderson-Darling goodness of fit, and the exact exceedance test (synthetic images above the "
              "null's 99th percentile, observed / expected, beta-binomial p):</p>",
              _table(rows, ["detector", "score", "null n", "null max", "tail u", "tail scale", "GOF p",
                            "synthetic median", "held-out median", "exceedances obs / exp", "exact p"])]
    if m["planted"]:
        rows = [[k, v["what"], f"{v['detected']} / {v['n']}", v["rate"], f"[{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]",
                 "yes" if v["ruled"] else "reported only", v.get("reachable"), v["source_found"],
                 ", ".join(f"{d} {r:.2f}" for d, r in v["per_detector"].items())] for k, v in m["planted"].items()]
        parts += [f"<p>Power: modified copies of training images drawn from the whole training split, each scored "
                  f"like a synthetic image; detected = flagged as one copy among {cov['synthetic_size']} images "
                  f"(combined p &le; {fl['alpha']:g}/{cov['synthetic_size']}). 95% Clopper-Pearson intervals. "
                  "Reachable: the share of copies beyond every held-out image on at least one detector, the most "
                  "any test on these detectors can flag on this held-out set (a copy that an unseen patient's image "
                  "matches on every detector cannot be told from one); a rate far below it is the statistics' "
                  "limit, a reachable share below the policy's power is the data's (resolution, look-alike "
                  "patients).</p>",
                  _table(rows, ["planted copy", "what", "flagged", "rate", "95% CI", "policy rule", "reachable",
                                "source found", "per detector"])]
    mia, sh = m["membership"], m["pixel_shift"]
    parts.append(_table(
        [["membership inference, copy descriptor", mia["descriptor"]["auc"], mia["descriptor"]["se"],
          mia["descriptor"]["p"], f"{mia['members']} members vs {mia['non_members']} non-members; 0.5 = no leak"],
         ["membership inference, pixels", mia["pixel"]["auc"], mia["pixel"]["se"], mia["pixel"]["p"], ""],
         ["median best pixel r, synthetic - held-out", sh["shift"], sh["se"], None, f"bootstrap ({sh['n_boot']})"]],
        ["set-level measure", "estimate", "standard error", "one-sided p", "note"]))
    parts.append(_table([[c, v["n_synthetic"], v["flagged"], v["synthetic"].get("median"), v["held_out"].get("median")]
                         for c, v in m["per_class"].items()],
                        ["class", "synthetic", "flagged", "median best pixel r (synthetic)", "(held-out)"]))
    return parts


def map_back(image: np.ndarray, dihedral: int, scale: float = 1.0, rotation: float = 0.0, dy: float = 0.0,
             dx: float = 0.0) -> np.ndarray:
    """A query image (H, W[, C]) uint8 mapped back by a found copy transform, so that it lies on its
    training image (for the report): rotation/flip, then scale and rotation about the centre, then the
    shift at which its template matched."""
    import math

    import torch
    import torch.nn.functional as F

    from synthgate.evaluation.memorization.search import dihedral8, gray_tensor

    g = gray_tensor(np.asarray(image)[None])  # (1, H, W)
    d = dihedral8(g)[0, int(dihedral)]
    a = math.radians(rotation)
    theta = torch.tensor([[[scale * math.cos(a), -scale * math.sin(a), 0.0],
                           [scale * math.sin(a), scale * math.cos(a), 0.0]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, *d.shape], align_corners=False)
    out = F.grid_sample(d[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
    h, w = out.shape
    ys = np.clip(np.arange(h) - int(round(dy)), 0, h - 1)
    xs = np.clip(np.arange(w) - int(round(dx)), 0, w - 1)
    return np.clip(np.rint(out.numpy()[ys][:, xs]), 0, 255).astype(np.uint8)
