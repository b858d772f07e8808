"""A self-contained HTML report (PNG plots embedded as base64) for a reviewer who must decide
whether a generator may be released."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from synthgate.figures import make_grid

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.flag{background:#fff3cd;border-left:4px solid #e0a800;padding:.6em 1em;margin:1em 0}
.bad{color:#b00020;font-weight:bold} .ok{color:#1b7f3b;font-weight:bold}
img{max-width:100%} .ids{font-family:monospace;font-size:.85em;color:#555} .note{color:#555;font-size:.9em}
.wide{overflow-x:auto;max-width:100%} td{overflow-wrap:anywhere} td.l,th.l{text-align:left}
.rules td:nth-child(-n+4){white-space:nowrap;overflow-wrap:normal}
"""


def _b64(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _show(ax: Any, img: np.ndarray, title: str = "") -> None:
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):  # p-values and other small numbers keep their significant digits
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class=wide><table><tr>{head}</tr>{body}</table></div>"


def _samples(a: dict[str, Any], classes: list[str], per: int = 8, public: bool = False) -> str:
    import matplotlib.pyplot as plt

    real = a["real_images"]
    cols = 1 if public else 2
    fig, axes = plt.subplots(len(classes), cols, figsize=(5 * cols, 1.4 * len(classes) + 0.5), squeeze=False)
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        ri = a["train_idx"][a["y_real"][a["train_idx"]] == k]
        si = np.flatnonzero(a["y_syn"] == k)
        pick = np.sort(rng.choice(ri, min(per, len(ri)), replace=False)) if len(ri) else None
        r = None if public or pick is None else np.asarray(real.images[pick])  # public: never read a real image
        s = a["syn_images"][np.sort(rng.choice(si, min(per, len(si)), replace=False))] if len(si) else None
        shown = ((s, "synthetic"),) if public else ((s, "synthetic"), (r, "real (train)"))
        for j, (imgs, name) in enumerate(shown):
            if imgs is not None and len(imgs):
                _show(axes[k, j], make_grid(imgs, per, fill=255), f"{c}: {name}")
            else:
                axes[k, j].set_axis_off()
    return _b64(fig)


def _tsne(a: dict[str, Any], classes: list[str], n: int = 800) -> str:
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(0)
    ri = rng.choice(len(a["f_ref"]), min(n, len(a["f_ref"])), replace=False)
    si = rng.choice(len(a["f_syn"]), min(n, len(a["f_syn"])), replace=False)
    x = np.concatenate([a["f_ref"][ri], a["f_syn"][si]])
    if len(x) < 10:
        return "<p class=note>too few images for t-SNE</p>"
    emb = TSNE(n_components=2, perplexity=min(30, len(x) // 4), init="pca", random_state=0).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    cmap = plt.get_cmap("tab10")
    nr = len(ri)
    for k, c in enumerate(classes):
        m_r = a["y_ref"][ri] == k
        m_s = a["y_syn_sub"][si] == k
        ax.scatter(emb[:nr][m_r, 0], emb[:nr][m_r, 1], s=6, color=cmap(k % 10), marker="o", alpha=0.5,
                   label=f"{c} real")
        ax.scatter(emb[nr:][m_s, 0], emb[nr:][m_s, 1], s=10, color=cmap(k % 10), marker="x", alpha=0.8,
                   label=f"{c} synthetic")
    ax.set_title("t-SNE of reference-encoder features (o real, x synthetic)")
    ax.legend(fontsize=6, ncol=2, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    return _b64(fig)


def _fid_bars(per_class: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    names = [c for c, v in per_class.items() if v.get("fid") is not None]
    if not names:
        return ""
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.bar(names, [per_class[c]["fid"] for c in names], color="#4c72b0")
    ax.set_ylabel("FID (encoder features)")
    ax.set_title("FID per class")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _b64(fig)


def _delentropy(a: dict[str, Any], classes: list[str]) -> str:
    import matplotlib.pyplot as plt

    comp = a["comp"]
    y_tr = a["y_real"][a["train_idx"]]
    cols = min(3, len(classes))
    rows = int(np.ceil(len(classes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.4 * rows), squeeze=False)
    for k, c in enumerate(classes):
        ax = axes[divmod(k, cols)]
        r, s = comp["real"][y_tr == k], comp["synthetic"][a["y_syn"] == k]
        both = np.concatenate([r, s]) if len(r) + len(s) else np.zeros(1)
        bins = np.linspace(both.min(), both.max() + 1e-6, 40)
        if len(r):
            ax.hist(r, bins=bins, alpha=0.6, density=True, label="real")
        if len(s):
            ax.hist(s, bins=bins, alpha=0.6, density=True, label="synthetic")
        ax.set_title(c, fontsize=9)
        ax.tick_params(labelsize=7)
    for k in range(len(classes), rows * cols):
        axes[divmod(k, cols)].set_axis_off()
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("delentropy (bits) per class")
    fig.tight_layout()
    return _b64(fig)


def _mean_images(a: dict[str, Any], classes: list[str], var: dict[str, Any], public: bool = False) -> str:
    import matplotlib.pyplot as plt

    from synthgate.evaluation.variety import mean_image

    fig, axes = plt.subplots(2, len(classes), figsize=(1.6 * len(classes) + 0.5, 3.6), squeeze=False)
    real = a["real_images"]
    for k, c in enumerate(classes):
        ri = a["train_idx"][a["y_real"][a["train_idx"]] == k][:2000]
        si = np.flatnonzero(a["y_syn"] == k)
        v = var.get(c, {})
        if len(ri) and not public:
            _show(axes[0, k], mean_image(np.asarray(real.images[ri])), f"{c}\nreal {v.get('real_mean_image_bytes')} B")
        if len(si):
            _show(axes[1, k], mean_image(a["syn_images"][si]), f"synthetic {v.get('synthetic_mean_image_bytes')} B")
        for j in (0, 1):
            axes[j, k].set_axis_off()
    return _b64(fig)


UTILITY_SETTINGS = {
    "real": "TRTR, real images matched per class to the synthetic training set",
    "real_full": "TRTR, the whole real training split",
    "synthetic": "TSTR, the synthetic images",
    "augmented": "the whole real split plus the synthetic images",
    "transfer": "TSTR network, last layer refitted on the whole real split",
}


def _utility_section(u: dict[str, Any]) -> list[str]:
    """The downstream classifiers: training, per-setting scores, per-seed paired values, the
    confidence bounds the gate decides on and their parts (dumontschutte2021 3.1, S.4-S.5)."""
    st, tr, paired = u["stats"], u.get("training", {}), u.get("paired", {})
    sizes, val = u.get("train_sizes", {}), u.get("validation", {})
    seeds = paired.get("seeds") or [r["seed"] for r in next(iter(u["runs"].values()))]

    def per_class(counts: dict[str, int] | None) -> str:
        return html.escape(", ".join(f"{c} {n}" for c, n in (counts or {}).items()) or "–")

    out = [f"<p class=note>A {html.escape(str(tr.get('arch')))} classifier per setting and seed "
           f"({', '.join(map(str, seeds))}), trained for at most {tr.get('max_steps')} steps (AdamW, one-cycle "
           f"schedule, class-balanced batches, shifts ±{tr.get('shift')} px, intensity ±{tr.get('intensity')}, "
           f"flips {'on' if tr.get('flip') else 'off'}), early-stopped on the real validation split's AUROC "
           f"(patience {tr.get('patience')} × {tr.get('eval_every')} steps, best weights kept); all tested on the "
           "same real test split. Accuracy is read at the threshold chosen on validation (binary: maximal "
           "balanced accuracy; multi-class: argmax). The matched real and synthetic training sets have the same "
           "number of images per class, drawn afresh per seed (a share "
           f"{_fmt(sizes.get('resample_fraction'))} of the smaller pool): "
           f"{per_class(sizes.get('matched_per_class'))}; the whole split: "
           f"{per_class(sizes.get('real_full_per_class'))}; synthetic images held out for Δsyn: "
           f"{per_class(sizes.get('synthetic_held_out_per_class'))}.</p>"]
    if val.get("note"):
        out.append(f"<div class=flag>{html.escape(val['note'])}</div>")
    out.append(_table([[name, UTILITY_SETTINGS.get(name, ""), v["auroc_mean"], v["auroc_std"], v["accuracy_mean"],
                        v.get("balanced_accuracy_mean"), v.get("steps_mean")]
                       for name, v in u["settings"].items()],
                      ["setting", "trained on", "AUROC mean", "sd", "accuracy", "balanced accuracy", "steps"]))
    keys = [k for k in ("auc_gap", "delta_syn", "augmented_gain", "transfer_gain") if k in paired]
    if keys:
        out.append(_table([[seed, *[paired[k][i] for k in keys]] for i, seed in enumerate(seeds)],
                          ["seed", *keys]))
        level = f"{st.get('confidence', 0.0):g}"
        f = sizes.get("resample_fraction")
        out.append(f"<p class=note>The gate decides on one-sided bounds of the mean, not on the mean (upper for "
                   f"gaps, lower for gains; level {level} here, the policy's own in the gate; at least "
                   f"{st.get('min_seeds_for_confidence')} seeds at this level). Each seed draws "
                   f"{_fmt(f)} of the smaller pool per class afresh, so the seeds vary over training sets; the "
                   "bound's standard error adds, in quadrature, the seeds' spread (sd/√K), the sampling of the "
                   "training pools themselves (the corrected resampled t of Nadeau and Bengio: the spread of each "
                   "pool's per-seed AUROCs times how much two seeds' draws overlap) and of the real test split "
                   "(DeLong), with t at K−1 degrees of freedom. A pool the seeds do not resample makes the bound "
                   "infinite. The gains are conditional on the real training split (it is on both sides).</p>")
        rows = []
        for k in keys:
            se = st.get(f"{k}_se_parts") or {}
            rows.append([k, st.get(k), st.get(f"{k}_std"), st.get(f"{k}_se"), se.get("seeds"), se.get("sets"),
                         se.get("test"), st.get(f"{k}_upper", st.get(f"{k}_lower"))])
        out.append(_table(rows, ["paired quantity", "mean", "sd over seeds", "se", "se: seeds", "se: training sets",
                                 "se: test split", f"one-sided {level} bound"]))
    if st.get("note"):
        out.append(f"<div class=flag>{html.escape(st['note'])}</div>")
    tests = {k: v for k, v in st.items() if k.endswith("_p")}
    if tests:
        out.append(_table([[k, v] for k, v in tests.items()], ["test", "p-value"]))
    return out


#: Marks the public report (:func:`render_report` with ``public=True``): publish ships only a report with it.
PUBLIC_MARK = "<!-- synthgate:public-report -->"
PUBLIC_NOTE = ("<div class=note>Public report: it shows no real image and no file name of one (the real images are "
               "patients' images). The full report, with the real training images beside the synthetic ones and the "
               "nearest training image of each flagged image, stays with the real data (the evaluation's "
               "<code>report.html</code>).</div>")


def _summary_rows(s: dict[str, Any], m: dict[str, Any]) -> list[list[Any]]:
    """The summary table: fidelity, the copy search, membership, and utility with its bounds."""
    rows: list[list[Any]] = [
        ["FID (encoder features)", s["fid"], f"real test vs train: {_fmt(s['fid_real_baseline'])}"],
        ["precision / recall / F1", f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f1']:.3f}", "k-NN manifolds"],
        ["density / coverage", f"{s['density']:.3f} / {s['coverage']:.3f}", ""],
        ["synthetic images flagged as copies", s["flagged_copies"],
         f"{m['flags']['correction'].upper()} at {m['flags']['alpha']:g} over {m['coverage']['synthetic_size']} images; "
         f"smallest copy p-value {_fmt(s['smallest_copy_p'])}"],
        ["planted copies found (weakest kind)", s["planted_min_detection"],
         f"{m['coverage']['train_compared']} of {m['coverage']['train_size']} training images searched"],
        ["membership-inference AUC, point estimates (descriptor / pixels)",
         f"{_fmt(s['membership_auc'])} / {_fmt(s['membership_auc_pixel'])}",
         "0.5 = no leak; the gate judges their lower confidence bounds"],
    ]
    if "auc_gap" in s:
        level = s.get("utility_confidence")
        bound = (f"one-sided {level:g} bound over {s.get('utility_seeds')} seeds, training sets and test split"
                 if level else "bound")
        rows += [["AUROC real (TRTR, matched) / synthetic (TSTR)", f"{s['auc_real']:.4f} / {s['auc_synthetic']:.4f}",
                  f"real, whole training split: {_fmt(s.get('auc_real_full'))}"],
                 ["utility gap AUC_real − AUC_syn (mean / upper bound)",
                  f"{_fmt(s['auc_gap'])} / {_fmt(s.get('auc_gap_upper'))}", f"dumontschutte2021; {bound}"],
                 ["Δsyn, label overfitting (mean / upper bound)",
                  f"{_fmt(s.get('delta_syn'))} / {_fmt(s.get('delta_syn_upper'))}", "≈0 is good"],
                 ["augmentation gain (mean / lower bound)",
                  f"{_fmt(s.get('augmented_gain'))} / {_fmt(s.get('augmented_gain_lower'))}", "real+synthetic vs real"]]
    return rows


def generator_text(synthetic: dict[str, Any]) -> str:
    """The generator behind a synthetic set in words ("diffusion-tiny, step 400"), not its raw record."""
    gen = synthetic.get("generator")
    if isinstance(gen, dict):
        name = gen.get("name") or gen.get("type") or "generator"
        return f"{name}, step {gen['step']}" if gen.get("step") is not None else str(name)
    if synthetic.get("standin"):
        return f"stand-in ({synthetic['standin']})"
    return str(gen) if gen else "unknown generator"


def render_report(data: dict[str, Any], a: dict[str, Any], public: bool = False) -> str:
    """The evaluation report. ``public``: the version that may leave the place where the real data
    is (registry, published package): every number, but no real image (samples, mean images, the
    nearest training images of the memorization gallery) and no training file name."""
    import matplotlib

    matplotlib.use("Agg")
    classes = data["real"]["classes"]
    s = data["summary"]
    f = data["fidelity"]
    m = data["memorization"]
    gen = generator_text(data["synthetic"])
    title = html.escape(f"Evaluation report: {gen} against {Path(str(data['real']['path'])).name} "
                        f"({'public: no real image' if public else 'internal: shows real patient images'})")
    parts: list[str] = [f"<html><head><meta charset=utf-8><title>{title}</title><style>{CSS}</style>"
                        f"</head><body>", f"<h1>{title}</h1>", VERDICT_START + VERDICT_END]
    if public:
        parts += [PUBLIC_MARK, PUBLIC_NOTE]
    parts.append(
        "<p class=ids>"
        f"real dataset {data['real']['content_hash'][:16]} ({html.escape(data['real']['path'])})<br>"
        f"synthetic dataset {data['synthetic']['content_hash'][:16]} ({html.escape(data['synthetic']['path'])}), "
        f"{data['synthetic']['num_images']} images; generator: {html.escape(gen)}<br>"
        f"reference encoder {html.escape(str(data['encoder']['encoder_id']))} (val AUROC "
        f"{_fmt(data['encoder'].get('val_auroc'))}); scores from other encoders are not comparable<br>"
        f"evaluation {data['evaluation_hash'][:16]} · synthgate {data['synthgate_version']} · {data['created']}</p>")
    if s.get("fidelity_utility_disagree"):
        parts.append(f"<div class=flag>{html.escape(s['fidelity_utility_note'])}</div>")
    rows = _summary_rows(s, m)
    parts += ["<h2>Summary</h2>", _table(rows, ["measure", "value", "context"])]

    parts += ["<h2>Samples</h2>", _samples(a, classes, public=public)]

    o = f["overall"]
    parts += ["<h2>Fidelity</h2>", "<p class=note>Reference-encoder features; the real test split against the "
              "same training images gives the floor a perfect generator would reach at this sample size.</p>",
              _table([["synthetic vs real train", o["fid"], o["kid"], o["precision"], o["recall"], o["f1"],
                       o["density"], o["coverage"]],
                      ["real test vs real train", f["real_test_vs_train"]["fid"], f["real_test_vs_train"]["kid"],
                       f["real_test_vs_train"]["precision"], f["real_test_vs_train"]["recall"],
                       f["real_test_vs_train"]["f1"], f["real_test_vs_train"]["density"],
                       f["real_test_vs_train"]["coverage"]]],
                     ["", "FID", "KID", "precision", "recall", "F1", "density", "coverage"]),
              _table([[c, v.get("fid"), v.get("precision"), v.get("recall"), v.get("n_synthetic")]
                      for c, v in f["per_class"].items()], ["class", "FID", "precision", "recall", "n synthetic"]),
              _fid_bars(f["per_class"]), _tsne(a, classes)]
    if "inception_fid" in f:
        inc = f["inception_fid"]
        parts.append(
            f"<p>Standard Inception-FID (ImageNet features, for comparison with the literature only: a poor fit "
            f"for medical images, niehues2024): synthetic {_fmt(inc['fid'])}, real test vs train "
            f"{_fmt(inc.get('real_test_vs_train'))}; weights {html.escape(str(inc['weights']))} "
            f"(sha256 {str(inc.get('weights_sha256', ''))[:16]})</p>")

    parts += ["<h2>Variety and complexity</h2>",
              "<p class=note>Lossless-compressed size of the per-class mean image (xing2023 II.D): smaller = more "
              "varied. Delentropy distributions (complexity paper, Eqs. 4-5) with a two-sample KS test.</p>",
              _mean_images(a, classes, data["variety"], public=public),
              _table([[c, v.get("real_mean_image_bytes"), v.get("synthetic_mean_image_bytes"),
                       data["complexity"]["per_class"][c].get("real_mean"),
                       data["complexity"]["per_class"][c].get("synthetic_mean"),
                       data["complexity"]["per_class"][c].get("ks_statistic"),
                       data["complexity"]["per_class"][c].get("ks_p")] for c, v in data["variety"].items()],
                     ["class", "real mean-image bytes", "synthetic", "real delentropy", "synthetic", "KS D", "KS p"]),
              _delentropy(a, classes)]

    from synthgate.evaluation.memorization.report import memorization_section

    parts += memorization_section(data, a, _b64, _show, public=public)

    u = data.get("utility")
    parts.append("<h2>Utility</h2>")
    if u:
        parts += _utility_section(u)
    else:
        parts.append("<p>not run (evaluate.utility.enabled: false)</p>")
    from synthgate.evaluation.readers.report import readers_section

    parts += readers_section(data.get("readers"))
    r = data.get("realism")
    if r:
        parts += ["<h2>Realism score</h2>", "<p class=note>benitodelvalle Eq. 11: kept when R ≥ 1.</p>",
                  _table([["global", r["global"]["kept"], r["global"]["total"], r["global"]["kept_fraction"]]]
                         + ([["per class", r["per_class"]["kept"], r["per_class"]["total"],
                              r["per_class"]["kept_fraction"]]] if "per_class" in r else []),
                         ["variant", "kept", "total", "fraction"])]
    parts.append("</body></html>")
    return "\n".join(parts)


VERDICT_START = "<!-- synthgate:gate-verdict -->"
VERDICT_END = "<!-- /synthgate:gate-verdict -->"
