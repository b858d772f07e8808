"""Classifiers from MONAI's networks, shared by the reference encoder and the utility benchmark.

A network is a MONAI body whose final linear layer is replaced by an identity, plus a linear
head: ``embed(x)`` gives the penultimate features (dumontschutte2021 S.6 uses them for
nearest neighbours), ``forward(x)`` the logits.

Training (:func:`train_classifier`) follows dumontschutte2021 S.4 ("we stopped training when the
validation AUC converged", with a patience): a step budget, the validation AUROC every
``eval_every`` steps, early stopping after ``patience`` evaluations without improvement, and the
best weights kept. Around it: AdamW with a one-cycle schedule (linear warm-up, cosine decay),
class-balanced batches, and light augmentation for medical images (small shifts, intensity
jitter; flips only when asked, since laterality can carry the label). The reference encoder uses
the same loop in its epoch mode (fixed epochs, best epoch kept, no augmentation), as before.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from synthgate.errors import ConfigError
from synthgate.evaluation.batches import Batches, augment_batch, loss_weights  # noqa: F401  (augment_batch re-exported)

log = logging.getLogger(__name__)


class Net(nn.Module):
    def __init__(self, body: nn.Module, feat_dim: int, n_classes: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(feat_dim, n_classes)
        self.num_features = feat_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


SMALL_CHANNELS = (16, 32, 64, 128)


def small_cnn(in_channels: int) -> nn.Sequential:
    """A compact CNN from MONAI ``Convolution`` blocks (conv-BN-ReLU, each halving the resolution,
    then one more at the lowest), global average pooling to a 128-d feature vector: ~0.2M
    parameters, fast enough to train on 2 CPU cores."""
    from monai.networks.blocks import Convolution

    layers: list[nn.Module] = []
    prev = in_channels
    for ch in SMALL_CHANNELS:
        layers.append(Convolution(2, prev, ch, strides=2, kernel_size=3, act="RELU", norm="BATCH"))
        prev = ch
    layers += [Convolution(2, prev, prev, kernel_size=3, act="RELU", norm="BATCH"),
               nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def build_classifier(arch: str, in_channels: int, n_classes: int) -> Net:
    """MONAI 2D classifier body (no torchvision) with a linear head."""
    from monai.networks.nets import DenseNet121, resnet18

    if arch == "small":
        body = small_cnn(in_channels)
        feat = SMALL_CHANNELS[-1]
    elif arch == "densenet121":
        body = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1)
        feat = body.class_layers.out.in_features
        body.class_layers.out = nn.Identity()
    elif arch == "resnet18":
        body = resnet18(spatial_dims=2, n_input_channels=in_channels, num_classes=1)
        feat = body.fc.in_features
        body.fc = nn.Identity()
    else:
        raise ConfigError(f"unknown classifier arch {arch!r}", hint="use small, densenet121 or resnet18")
    return Net(body, feat, n_classes)


def per_class_subsample(idx: np.ndarray, labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """At most ``per_class`` of the indices ``idx`` per label (seeded); all of them when ``None``."""
    if per_class is None:
        return idx
    rng = np.random.default_rng(seed)
    keep = []
    for k in np.unique(labels[idx]):
        members = idx[labels[idx] == k]
        keep.append(members if len(members) <= per_class else rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(keep)) if keep else idx[:0]


def per_class_take(idx: np.ndarray, labels: np.ndarray, counts: dict[int, int], seed: int) -> np.ndarray:
    """Exactly ``counts[k]`` of the indices ``idx`` with label ``k`` (seeded, without replacement):
    the matched training sets of dumontschutte2021 3.1 ("real and synthetic folds ... with
    equivalent sizes and label combinations"). Raises ``ValueError`` if a class has too few."""
    rng = np.random.default_rng(seed)
    keep = []
    for k, n in sorted(counts.items()):
        members = idx[labels[idx] == k]
        if len(members) < n:
            raise ValueError(f"class {k}: {len(members)} images, {n} asked for")
        keep.append(rng.choice(members, n, replace=False) if n < len(members) else members)
    return np.sort(np.concatenate(keep)) if keep else idx[:0]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    arr = np.ascontiguousarray(images)
    if not arr.flags.writeable:  # a read-only memmap: torch warns about sharing it, so copy
        arr = arr.copy()
    t = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
    return t.div_(127.5).sub_(1.0)


def auroc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    """Macro one-vs-rest AUROC (binary: AUROC of the positive class). NaN if a class is missing."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    scores = [roc_auc_score(y == k, proba[:, k]) for k in range(n_classes) if k in present]
    return float(np.mean(scores))


def choose_threshold(y_val: np.ndarray, proba_val: np.ndarray, n_classes: int) -> float | None:
    """The decision threshold on P(class 1) chosen on the validation split (binary): the point of
    the ROC curve that maximises Youden's J = TPR - FPR, i.e. the balanced accuracy. ``None`` for
    multi-class (argmax) or when the validation split lacks a class (then 0.5, the argmax)."""
    from sklearn.metrics import roc_curve

    y_val = np.asarray(y_val)
    if n_classes != 2 or len(np.unique(y_val)) < 2:
        return None
    fpr, tpr, thr = roc_curve(y_val, proba_val[:, 1])
    best = int(np.argmax(tpr - fpr))
    return float(min(thr[best], 1.0))


def decide(proba: np.ndarray, threshold: float | None) -> np.ndarray:
    """Predicted labels: P(class 1) >= ``threshold`` for binary with a threshold, else argmax."""
    if threshold is None or proba.shape[1] != 2:
        return proba.argmax(1)
    return (proba[:, 1] >= threshold).astype(np.int64)


def classification_scores(y: np.ndarray, proba: np.ndarray, n_classes: int,
                          threshold: float | None) -> dict[str, float]:
    """AUROC, and accuracy and balanced accuracy at ``threshold`` (see :func:`choose_threshold`)."""
    from sklearn.metrics import balanced_accuracy_score

    pred = decide(proba, threshold)
    y = np.asarray(y)
    return {"auroc": auroc(y, proba, n_classes), "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(y) else float("nan")}


@torch.no_grad()
def predict(model: Net, images: np.ndarray, device: torch.device, batch: int = 512,
            what: str = "proba") -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_tensor(images[i : i + batch]).to(device)
        if what == "features":
            out.append(model.embed(x).float().cpu())
        else:
            out.append(torch.softmax(model(x).float(), dim=1).cpu())
    if not out:
        dim = model.num_features if what == "features" else model.head.out_features
        return np.zeros((0, dim), np.float32)
    return torch.cat(out).numpy()


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`train_classifier` trains (the utility classifier's settings come from
    ``evaluate.utility``, see :class:`synthgate.evaluation.config.UtilityConfig`)."""

    max_steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05                    # share of max_steps spent warming up (one-cycle schedule)
    schedule: Literal["one_cycle", "constant"] = "one_cycle"
    eval_every: int = 100                   # steps between validation AUROCs
    patience: int | None = 5                # evaluations without improvement before stopping; None: never
    min_delta: float = 1e-4                 # an AUROC gain below this is no improvement
    balanced: bool = True                   # class-balanced batches; False: shuffled epochs + class weights
    shift: int = 2                          # augmentation: translation in pixels
    intensity: float = 0.1                  # augmentation: intensity scale/offset jitter
    flip: bool = False                      # augmentation: horizontal flips (laterality can carry labels)
    min_val_per_class: int = 10             # fewer validation images of a class: no early stopping
    max_epochs: float | None = None         # also stop after this many passes over the training set


def epoch_settings(epochs: int, batch_size: int, lr: float, n_train: int) -> TrainSettings:
    """The reference encoder's training: ``epochs`` shuffled passes at a constant learning rate,
    class-weighted loss, no augmentation, the epoch with the best validation AUROC kept."""
    per_epoch = max(1, n_train // batch_size + (n_train % batch_size >= 2))  # a last batch of one is dropped
    return TrainSettings(max_steps=epochs * per_epoch, batch_size=batch_size, lr=lr, warmup=0.0,
                         schedule="constant", eval_every=per_epoch, patience=None, balanced=False, shift=0,
                         intensity=0.0, flip=False, min_val_per_class=1, min_delta=0.0)


@dataclass
class TrainedClassifier:
    model: Net
    best_epoch: int            # the evaluation (epoch in epoch mode) whose weights were kept
    val_auroc: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    steps: int = 0             # optimizer steps taken
    stopped: str = "budget"    # "early" (patience), "saturated" (val AUROC within min_delta of 1),
    #                            "budget" (max_steps/max_epochs) or "fixed" (no selection)
    threshold: float | None = None
    selection: str = "validation"  # "validation": early stopping on val; "fixed": the val split was too small

    def info(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "steps": self.steps, "stopped": self.stopped,
                "val_auroc": self.val_auroc, "threshold": self.threshold, "selection": self.selection}


def validation_shortfall(y_val: np.ndarray, n_classes: int, classes_needed: np.ndarray,
                         min_per_class: int) -> str | None:
    """Why the validation split cannot drive early stopping (a class of the training set with fewer
    than ``min_per_class`` validation images), or ``None`` if it can."""
    counts = np.bincount(np.asarray(y_val, dtype=np.int64), minlength=n_classes)
    short = [(int(k), int(counts[k])) for k in classes_needed if counts[k] < min_per_class]
    if len(np.asarray(y_val)) == 0:
        return "there is no validation split"
    if short:
        listed = ", ".join(f"class {k}: {n}" for k, n in short)
        return f"the validation split has fewer than {min_per_class} images of a class ({listed})"
    return None


def _optimizer(model: nn.Module, s: TrainSettings, max_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW, and the one-cycle schedule over ``max_steps`` (None for a constant rate)."""
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched: Any = None
    if s.schedule == "one_cycle" and max_steps > 4:  # (OneCycleLR needs two steps in each phase)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=max_steps,
                                                    pct_start=max(s.warmup, 2.0 / max_steps),
                                                    anneal_strategy="cos", cycle_momentum=False)
    return opt, sched


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    arch: str,
    n_classes: int,
    seed: int,
    device: torch.device,
    settings: TrainSettings | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    init: Net | None = None,
) -> TrainedClassifier:
    """Train a classifier on ``(x, y)``, selecting on ``(x_val, y_val)`` (dumontschutte2021 S.4).

    With ``settings``: AdamW, ``settings.max_steps`` steps of class-balanced, augmented batches
    under a one-cycle schedule; every ``eval_every`` steps the validation AUROC; training stops
    after ``patience`` evaluations without a gain of ``min_delta`` (or at once when the AUROC is
    within ``min_delta`` of 1, where no gain can count any more) and the best weights are kept.
    A validation split with fewer than ``min_val_per_class`` images of a training class cannot
    select (its AUROC is noise): training then runs the whole budget and keeps the last weights
    (``selection="fixed"``), and the caller records why. Without ``settings``, ``epochs`` shuffled
    passes at a constant ``lr`` (:func:`epoch_settings`; the reference encoder). The decision
    threshold is then chosen on the validation split (:func:`choose_threshold`).

    ``init`` starts from another model's weights.
    """
    if settings is None:
        if epochs is None:
            raise ValueError("train_classifier needs settings or epochs")
        settings = epoch_settings(epochs, batch_size, lr, len(y))
    s = settings
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("train_classifier: no training images")
    max_steps = s.max_steps
    if s.max_epochs is not None:
        max_steps = max(1, min(max_steps, math.ceil(s.max_epochs * len(y) / min(s.batch_size, len(y)))))
    shortfall = validation_shortfall(y_val, n_classes, np.unique(y), s.min_val_per_class)
    select = shortfall is None
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = copy.deepcopy(init) if init is not None else build_classifier(arch, x.shape[-1], n_classes)
    model.to(device)
    opt, sched = _optimizer(model, s, max_steps)
    xt = to_tensor(x)
    yt = torch.from_numpy(y)
    batches = Batches(y, s.batch_size, s.balanced, gen)
    loss_fn = nn.CrossEntropyLoss(weight=None if s.balanced else loss_weights(y, n_classes, device))
    best_score, best_eval, best_step = -np.inf, -1, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    since_best, running, seen, stopped, step = 0, 0.0, 0, "budget", 0
    for step in range(1, max_steps + 1):
        model.train()
        idx = next(batches)
        xb, yb = xt[idx].to(device), yt[idx].to(device)
        if s.shift or s.intensity or s.flip:
            xb = augment_batch(xb, gen, s.shift, s.intensity, s.flip)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        running += float(loss.detach()) * len(idx)
        seen += len(idx)
        if step % s.eval_every and step != max_steps:
            continue
        val = auroc(y_val, predict(model, x_val, device), n_classes) if select else float("nan")
        history.append({"epoch": len(history), "step": step, "loss": running / max(seen, 1), "val_auroc": val})
        running, seen = 0.0, 0
        if not select:
            continue
        score = val if np.isfinite(val) else -history[-1]["loss"]
        if score > best_score + s.min_delta or best_eval < 0:
            best_score, best_eval, best_step = score, len(history) - 1, step
            best_state = copy.deepcopy(model.state_dict())
            since_best = 0
            if np.isfinite(val) and s.patience is not None and val > 1.0 - s.min_delta:
                stopped = "saturated"  # within min_delta of AUROC 1: no later evaluation can count as a gain
                break
        else:
            since_best += 1
            if s.patience is not None and since_best >= s.patience:
                stopped = "early"
                break
    if select:
        model.load_state_dict(best_state)
    else:
        best_eval, best_step, stopped = len(history) - 1, step, "fixed"
        log.info("no early stopping (%s): kept the weights after %d steps", shortfall, step)
    return _trained(model, x_val, y_val, n_classes, device, history, (best_eval, best_step, step, stopped),
                    "validation" if select else "fixed")


def _trained(model: Net, x_val: np.ndarray, y_val: np.ndarray, n_classes: int, device: torch.device,
             history: list[dict[str, float]], run: tuple[int, int, int, str], selection: str) -> TrainedClassifier:
    """The kept model in eval mode, its validation AUROC and the decision threshold read on validation;
    ``run``: (best evaluation, its step, steps trained, why it stopped)."""
    best_eval, best_step, steps, stopped = run
    model.eval()
    p_val = predict(model, x_val, device) if len(x_val) else np.zeros((0, n_classes), np.float32)
    best_val = auroc(y_val, p_val, n_classes) if len(x_val) else float("nan")
    return TrainedClassifier(model, best_eval, best_val, history, best_step=best_step, steps=steps,
                             stopped=stopped, threshold=choose_threshold(y_val, p_val, n_classes), selection=selection)


def fit_head(
    pretrained: Net,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    n_classes: int,
    device: torch.device,
) -> TrainedClassifier:
    """Feature extraction (xing2023 II.D; benitodelvalle 4.2): freeze ``pretrained``'s body and fit
    a new last layer on ``(x, y)`` to convergence: an L2-regularised multinomial logistic regression
    (scikit-learn, L-BFGS, class-balanced weights) on the standardised frozen features, folded back
    into the linear head. The threshold is chosen on the validation split."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.int64)
    feats = predict(pretrained, x, device, what="features").astype(np.float64)
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    lr = LogisticRegression(max_iter=2000, class_weight="balanced")
    lr.fit((feats - mu) / sd, y)
    coef = np.zeros((n_classes, feats.shape[1]))
    bias = np.zeros(n_classes)
    present = lr.classes_.astype(np.int64)
    if len(present) == 2:  # sklearn's binary model: one logit for the second class; split it in two
        coef[present[1]], bias[present[1]] = lr.coef_[0] / 2, lr.intercept_[0] / 2
        coef[present[0]], bias[present[0]] = -lr.coef_[0] / 2, -lr.intercept_[0] / 2
    else:
        coef[present], bias[present] = lr.coef_, lr.intercept_
    absent = np.setdiff1d(np.arange(n_classes), present)
    bias[absent] = -1e4  # a class never seen in training is never predicted
    model = copy.deepcopy(pretrained)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(coef / sd).float())
        model.head.bias.copy_(torch.from_numpy(bias - (coef / sd) @ mu).float())
    model.to(device).eval()
    p_val = predict(model, x_val, device) if len(x_val) else np.zeros((0, n_classes), np.float32)
    val = auroc(y_val, p_val, n_classes) if len(x_val) else float("nan")
    return TrainedClassifier(model, 0, val, [], stopped="converged", selection="convex fit",
                             threshold=choose_threshold(y_val, p_val, n_classes))

