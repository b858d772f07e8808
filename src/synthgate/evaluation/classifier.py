"""Classifiers from MONAI's networks, shared by the reference encoder and the utility benchmark.

A network is a MONAI body whose final linear layer is replaced by an identity, plus a linear
head: ``embed(x)`` gives the penultimate features (dumontschutte2021 S.6 uses them for
nearest neighbours), ``forward(x)`` the logits. Training selects the epoch with the best
validation AUROC ("validation-selected", as DESIGN.md's reference numbers were measured).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgate.errors import ConfigError

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
    return np.sort(np.concatenate(keep))


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


@dataclass
class TrainedClassifier:
    model: Net
    best_epoch: int
    val_auroc: float
    history: list[dict[str, float]] = field(default_factory=list)


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    arch: str,
    n_classes: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    init: Net | None = None,
    head_only: bool = False,
) -> TrainedClassifier:
    """Train with AdamW and cross-entropy; keep the weights of the epoch with the best val AUROC.

    ``init`` starts from another model's weights; ``head_only`` freezes everything but the last
    layer (the feature-extraction protocol of xing2023 II.D).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = copy.deepcopy(init) if init is not None else build_classifier(arch, x.shape[-1], n_classes)
    model.to(device)
    if head_only:
        for p in model.body.parameters():
            p.requires_grad_(False)
        nn.init.normal_(model.head.weight, std=0.01, generator=None)
        nn.init.zeros_(model.head.bias)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    xt = to_tensor(x)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weight = torch.tensor(np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0),
                          dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    best: tuple[float, int, dict[str, Any]] = (-np.inf, -1, copy.deepcopy(model.state_dict()))
    history = []
    for epoch in range(epochs):
        model.train()
        if head_only:
            model.body.eval()  # frozen batch-norm statistics
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        val = auroc(y_val, predict(model, x_val, device), n_classes) if len(x_val) else float("nan")
        history.append({"epoch": epoch, "loss": total / max(len(perm), 1), "val_auroc": val})
        score = val if np.isfinite(val) else -total
        if score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    best_val = history[best[1]]["val_auroc"] if best[1] >= 0 else float("nan")
    return TrainedClassifier(model, best[1], best_val, history)
