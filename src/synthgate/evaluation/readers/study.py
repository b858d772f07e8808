"""A blinded reader study (dumontschutte2021, "Reader study" and S.8): readers label a shuffled mix of
real and synthetic images as real or synthetic, without being told the mix.

A study folder holds:

- ``study.json``: what readers may see: the opaque image ids, the display size, the seed, and the
  sha256 of the key (a key edited after creation is refused by :func:`load_study`);
- ``images/<id>.png``: the images, each under an id that says nothing of its origin (random, not
  derived from the seed; uncompressed PNGs of one size, without metadata);
- ``key/key.json``: which id is real, its class and where it came from, and the secret salt mixed
  with the recorded seed in the draw (mode 0600); the web app never serves this folder, and only
  ``analyze`` reads it;
- ``key/admin.token``: the admin page's token (0600);
- ``answers.sqlite``: the readers and their answers (:mod:`.store`);
- ``README.txt``: the study holds real patient images and stays where the real data may be.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgate.errors import ConfigError, DataError
from synthgate.utils import utc_now

FORMAT = "synthgate.reader-study/v1"
KEY = Path("key") / "key.json"
ADMIN_TOKEN = Path("key") / "admin.token"
NOTICE = """This reader study contains REAL PATIENT IMAGES (half of its images come from the real dataset's
test split). Keep this folder where the real data is allowed to be: do not publish it, copy it to a
shared drive or serve it beyond the network the real data may be used on. Readers reach the images
only through `synthgate reader-study serve`, which never serves the key/ folder.
"""


@dataclass(frozen=True)
class Study:
    root: Path
    manifest: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        return list(self.manifest["images"])

    def key(self) -> dict[str, dict[str, Any]]:
        """The key (id -> truth, class, origin), verified against the manifest's hash."""
        raw = (self.root / KEY).read_bytes()
        if hashlib.sha256(raw).hexdigest() != self.manifest["key_sha256"]:
            raise DataError(f"{self.root / KEY}: the key's sha256 does not match study.json's key_sha256: the key "
                            "was edited after the study was created", hint="restore the key from a backup, or create "
                            "a new study; answers cannot be scored against a changed key")
        return dict(json.loads(raw)["images"])

    def admin_token(self) -> str:
        return (self.root / ADMIN_TOKEN).read_text().strip()


def _per_class(counts: dict[int, int], n: int, classes: list[str], what: str, balanced: bool,
               class_order: list[int], proportions: dict[int, int]) -> dict[int, int]:
    """How many images of each class: ``n`` split evenly over the classes (the remainder to the
    first classes of ``class_order``), or in ``proportions`` (the real test split's) when not
    ``balanced``; both origins get the same split for the same ``n``."""
    total = sum(counts.values())
    if total < n:
        raise DataError(f"the {what} holds {total} images; the study asks for {n} of them",
                        hint="ask for fewer images (--n) or give a larger set")
    keys = sorted(counts)
    if balanced:
        base = {k: n // len(keys) for k in keys}
        for k in class_order[: n - sum(base.values())]:
            base[k] += 1
    else:
        whole = sum(proportions.values())
        base = {k: int(np.floor(n * proportions[k] / whole)) for k in keys}
        rest = n - sum(base.values())
        for k in sorted(keys, key=lambda k: (-(n * proportions[k] / whole - base[k]), class_order.index(k)))[:rest]:
            base[k] += 1
    short = [f"{classes[k]} ({counts[k]} of {base[k]})" for k in keys if counts[k] < base[k]]
    if short:
        how = "balanced per class" if balanced else "in the real test split's class proportions"
        raise DataError(f"the {what} has too few images of class {', '.join(short)} for a study {how}",
                        hint="ask for fewer images (--n)" + (", or --unbalanced to draw in the real test split's "
                                                             "proportions" if balanced else ""))
    return base


def create_study(real: Path, synthetic: Path, out: Path, *, n: int = 100, real_fraction: float = 0.5,
                 balanced: bool = True, seed: int = 0, display_size: int = 256, salt: int | None = None) -> Study:
    """A blinded study of ``n`` images from the real dataset's test split and the synthetic set.
    The draw is seeded by ``seed`` and a secret ``salt`` (random unless given; kept in the key), so
    ``seed`` and the key's salt reproduce it."""
    from synthgate.data.canonical import load_dataset

    if n < 2 or not 0 < real_fraction < 1:
        raise ConfigError(f"a study needs n >= 2 and 0 < real_fraction < 1 (got n={n}, real_fraction={real_fraction})")
    if (out / "study.json").exists():
        raise DataError(f"{out} already holds a study", hint="choose another folder: a study is never overwritten")
    r, s = load_dataset(Path(real)), load_dataset(Path(synthetic))
    if (r.resolution, r.channels) != (s.resolution, s.channels):
        raise DataError(f"the real images are {r.resolution}x{r.resolution}x{r.channels} and the synthetic ones "
                        f"{s.resolution}x{s.resolution}x{s.channels}: readers would tell them apart by size",
                        hint="sample the generator at the real dataset's resolution")
    if r.classes != s.classes:
        raise DataError(f"the real classes {r.classes} and the synthetic classes {s.classes} differ")
    if r.content_hash == s.content_hash:
        raise DataError(f"the real and the synthetic dataset are the same dataset (content hash {r.content_hash[:16]})")
    # the draw mixes the recorded seed with a secret salt kept in the key: the organiser can redo it,
    # a reader who knows the seed, n and the classes cannot (numpy's draws do not depend on pool sizes)
    salt = secrets.randbits(64) if salt is None else int(salt)
    rng = np.random.default_rng([seed, salt])
    test = r.split_indices("test")
    if not len(test):
        raise DataError(f"{real}: no test split; a reader study shows unseen real images (the test split)")
    n_real = int(round(n * real_fraction))
    if not 0 < n_real < n:
        raise ConfigError(f"n={n} with real_fraction={real_fraction} gives {n_real} real images: a study needs both "
                          "real and synthetic images")
    picks: list[tuple[str, Any, int]] = []
    # one class order for the remainders and the real test split's proportions for both origins, so that
    # a class's share does not hint at where its images come from
    class_order = [int(k) for k in rng.permutation(len(r.classes))]
    proportions = {c: int((r.labels()[test] == c).sum()) for c in range(len(r.classes))}
    for origin, ds, pool, k in (("real", r, test, n_real), ("synthetic", s, np.arange(len(s.meta)), n - n_real)):
        labels = ds.labels()[pool]
        counts = {c: int((labels == c).sum()) for c in range(len(ds.classes))}
        what = "real test split" if origin == "real" else "synthetic set"
        for c, m in _per_class(counts, k, ds.classes, what, balanced, class_order, proportions).items():
            for i in rng.choice(pool[labels == c], m, replace=False):
                picks.append((origin, ds, int(i)))
    order = rng.permutation(len(picks))
    out.mkdir(parents=True, exist_ok=True)
    key: dict[str, dict[str, Any]] = {}
    ids = []
    for j in order:
        origin, ds, i = picks[j]
        image_id = secrets.token_hex(6)
        _save_uncompressed(out / "images" / f"{image_id}.png", np.asarray(ds.images[i]))
        key[image_id] = {"real": origin == "real", "class": ds.classes[int(ds.labels()[i])],
                         "dataset": str(ds.root), "dataset_content_hash": ds.content_hash, "index": i}
        ids.append(image_id)
    (out / "key").mkdir(mode=0o700, exist_ok=True)
    raw = json.dumps({"images": key, "draw_salt": salt}, indent=1).encode()
    _write_private(out / KEY, raw)
    _write_private(out / ADMIN_TOKEN, secrets.token_urlsafe(24).encode())
    manifest = {"format": FORMAT, "created": utc_now(), "n": len(ids), "n_real": n_real, "seed": seed,
                "balanced": balanced, "display_size": display_size, "resolution": r.resolution,
                "images": ids, "key_sha256": hashlib.sha256(raw).hexdigest(),
                "real": {"path": str(r.root), "content_hash": r.content_hash, "split": "test"},
                "synthetic": {"path": str(s.root), "content_hash": s.content_hash,
                              "generator": s.manifest.get("generator")},
                "contains_patient_images": True}
    (out / "study.json").write_text(json.dumps(manifest, indent=1))
    (out / "README.txt").write_text(NOTICE)
    return Study(out, manifest)


def _save_uncompressed(path: Path, image: np.ndarray) -> None:
    """PNG without compression: every image of a study has the same file size (a compressed size
    would tell smooth images from noisy ones, and so often synthetic from real)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, compress_level=0)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_study(root: Path) -> Study:
    path = Path(root) / "study.json"
    if not path.exists():
        raise DataError(f"{root}: not a reader study (no study.json)", hint="create one with `synthgate reader-study "
                        "create`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return Study(Path(root), manifest)
