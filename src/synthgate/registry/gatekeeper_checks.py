"""What the gatekeeper checks before it signs (:mod:`.gatekeeper`): a version's evidence (records,
weights, verdict under the pinned policy) and a staged dataset package (every file, every image)."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgate.errors import DataError
from synthgate.evaluation.hashing import evaluation_hash


def images_root(hashes: list[str], labels: list[int] | np.ndarray) -> str:
    """sha256 over every image's pixel sha256 and label, in order: a dataset's image-level identity,
    recomputable by a consumer from the shards alone."""
    lines = [f"{h}\t{int(y)}" for h, y in zip(hashes, labels, strict=True)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pixel_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


@dataclass
class Evidence:
    """A version's verified evidence: the records, the weights' hash and the recomputed decision."""

    model: str
    version: str
    run_id: str
    gate_sha256: str
    evaluation: dict[str, Any]
    decision: Any
    weights_sha256: str
    report_sha256: str | None = None  # the registered public report when the release was signed (None: none)

    def predicate(self) -> dict[str, Any]:
        ev, syn = self.evaluation, self.evaluation.get("synthetic") or {}
        hashes = syn.get("image_sha256")
        flagged = sorted({int(i) for i in (self.decision.details.get("memorization") or {}).get("flagged") or []}
                         | {int(i) for i in ((ev.get("memorization") or {}).get("flags") or {}).get("indices") or []})
        return {
            "model": self.model, "version": self.version, "run_id": self.run_id,
            "weights_sha256": self.weights_sha256, "evaluation_hash": self.evaluation["evaluation_hash"],
            "gate_sha256": self.gate_sha256, "policy_hash": self.decision.policy_hash,
            "report_sha256": self.report_sha256,
            "failing_rules": [r.rule for r in self.decision.rules if not r.passed],
            "rules": [{"rule": r.rule, "passed": r.passed, "value": r.value, "threshold": r.threshold,
                       "comparison": r.comparison} for r in self.decision.rules],
            "samples": {"content_hash": syn.get("content_hash"), "num_images": syn.get("num_images"),
                        "images_sha256_root": hashlib.sha256("\n".join(hashes).encode()).hexdigest()
                        if isinstance(hashes, list) else None, "flagged": flagged},
            "dataset": {"training_dataset_hash": (syn.get("generator") or {}).get("dataset_content_hash"),
                        "real_content_hash": (ev.get("real") or {}).get("content_hash")},
        }


def evidence(client: Any, tracking_uri: str, model: str, version: str, policy: Any) -> Evidence:
    """Verify the version's records against the registry, recompute its verdict under ``policy``, and
    hash the registered weights; the evaluation must be of these weights."""
    import mlflow.artifacts

    from synthgate.gates.decision import decide
    from synthgate.generators.model import INFO, read_generator_info
    from synthgate.registry.gatekeeper import GatekeeperRefused
    from synthgate.registry.registry import _tracking_env
    from synthgate.registry.verify import (
        PromotionRefused,
        _evaluated_weights_sha256,
        check_generator,
        verify_version,
    )
    from synthgate.utils import sha256_file

    where = f"{model} version {version}"
    try:
        _, evaluation = verify_version(client, model, version, registry_pin=False)
    except PromotionRefused as e:
        raise GatekeeperRefused(e.message, hint=e.hint, status=409) from None
    mv = client.get_model_version(model, version)
    complete(mv)  # verify_version refused a half version already: the signer's own rule, said here again
    syn = evaluation.get("synthetic") or {}
    if mv.tags.get("lineage.synthetic_content_hash") != syn.get("content_hash"):
        raise GatekeeperRefused(f"{where}: the evaluated samples ({str(syn.get('content_hash'))[:16]}) are not the "
                                "ones registered with the version (lineage.synthetic_content_hash)", status=409)
    local = {**evaluation, "synthetic": {k: v for k, v in syn.items() if k != "path"}}
    if _evaluated_weights_sha256(local) is None:
        raise GatekeeperRefused(f"{where}: the evaluation does not record which weights it evaluated; nothing binds "
                                "it to this model", hint="re-sample and re-evaluate with this synthgate", status=409)
    with tempfile.TemporaryDirectory(prefix="synthgate-gatekeeper-") as tmp, _tracking_env(tracking_uri):
        try:
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model}/{version}", dst_path=tmp))
            model_dir = next(iter(sorted(got.rglob(INFO)))).parent
            info = read_generator_info(model_dir)
            for name, digest in (info.get("files") or {}).items():
                if sha256_file(model_dir / name) != digest:
                    raise DataError(f"{name}: its sha256 differs from the model's description (replaced weights)")
            check_generator(model_dir, info, local, where)
            weights = weights_digest(model_dir, info)
            report = _registered_report(client, mv.run_id, Path(tmp) / "report")
        except DataError as e:
            raise GatekeeperRefused(e.message, hint=e.hint, status=409) from None
        except StopIteration:
            raise GatekeeperRefused(f"{where}: the registered model holds no generator folder", status=409) from None
    return Evidence(model, version, mv.run_id, mv.tags["gate.sha256"], evaluation, decide(evaluation, policy), weights,
                    hashlib.sha256(report).hexdigest() if report else None)


def complete(mv: Any) -> None:
    """Refuse (409) a version whose registration is not whole (:mod:`.registration`): the gatekeeper signs no
    release of it, and no dataset of it, whatever was signed before."""
    from synthgate.registry.gatekeeper import GatekeeperRefused
    from synthgate.registry.registration import require_complete
    from synthgate.registry.verify import PromotionRefused

    try:
        require_complete(mv)
    except PromotionRefused as e:
        raise GatekeeperRefused(e.message, hint=e.hint, status=409) from None


def _registered_report(client: Any, run_id: str, tmp: Path) -> bytes:
    """The run's registered public report (``evaluation/report.html``), b"" when there is none."""
    tmp.mkdir(parents=True, exist_ok=True)
    from synthgate.registry.outage import raise_if_outage

    try:
        return Path(client.download_artifacts(run_id, "evaluation/report.html", str(tmp))).read_bytes()
    except Exception as e:
        raise_if_outage(e)  # an outage is not "no report": nothing is signed without knowing
        return b""


# ------------------------------------------------------------------------------------ datasets
DOCUMENTS = ("DATACARD.md", "report.html", "labels.csv")


def check_package(store: str, staging: str, manifest: dict[str, Any], release: dict[str, Any],
                  tracking_uri: str) -> dict[str, Any]:
    """Read the staged package from ``store`` and check it: every file's size and sha256; every image in
    the shards and the PNG archives one the release attested and none flagged, in strict containers; the
    evaluation, gate record and report the registered ones; ``labels.csv`` true to the shards; the data
    card plain text. -> the image-level content (signed into the dataset statement)."""
    from synthgate.registry.gatekeeper import GatekeeperRefused

    blobs = _read_staged(store, staging, manifest.get("files"))
    samples = release.get("samples") or {}
    evaluated = _evaluated_images(release, samples, tracking_uri)
    flagged = {int(i) for i in samples.get("flagged") or []}
    hashes, labels = _shard_images(blobs, {h for i, h in enumerate(evaluated) if i not in flagged})
    classes = sorted({tuple(read_shard(blobs[p], p)[2]) for p in blobs if p.startswith("images/shard-")})
    if len(classes) != 1:
        raise GatekeeperRefused("the shards disagree on the class list", status=400)
    _png_images(blobs, hashes, labels, list(classes[0]))
    _check_documents(blobs, release, tracking_uri, hashes, labels, list(classes[0]), evaluated)
    if "evaluation.json" in blobs and evaluation_hash(json.loads(blobs["evaluation.json"])) != release["evaluation_hash"]:
        raise GatekeeperRefused("evaluation.json is not the evaluation the release attested", status=400)
    if "gate.json" in blobs and hashlib.sha256(blobs["gate.json"]).hexdigest() != release["gate_sha256"]:
        raise GatekeeperRefused("gate.json is not the gate record the release attested", status=400)
    unexpected = [p for p in blobs if not (p.startswith(("images/shard-", "png/")) or p in DOCUMENTS
                                            or p in ("evaluation.json", "gate.json"))]
    if unexpected:
        raise GatekeeperRefused(f"unexpected file(s) in the package: {', '.join(unexpected[:5])}", status=400)
    return {"num_images": len(hashes), "images_root": images_root(hashes, labels),
            "samples_content_hash": samples.get("content_hash"), "excluded": len(flagged)}


def _read_staged(store: str, staging: str, files: Any) -> dict[str, bytes]:
    """Every file the manifest lists, read from the staged copy, its size and sha256 checked."""
    from synthgate.registry.gatekeeper import GatekeeperRefused
    from synthgate.stores import open_store

    st = open_store(store)
    if not isinstance(files, list) or not files:
        raise GatekeeperRefused("the manifest lists no files", status=400)
    blobs: dict[str, bytes] = {}
    for f in files:
        path = str(f.get("path"))
        if not path or path.startswith("/") or "\\" in path or ".." in path.split("/") or path in blobs:
            raise GatekeeperRefused(f"the manifest lists an unsafe or repeated path {path!r}", status=400)
        if st.kind == "file":
            _plain_file_under(Path(st.uri), f"{staging}/{path}", int(f.get("size", -1)))
        try:
            data = st.get_bytes(f"{staging}/{path}")
        except KeyError:
            raise GatekeeperRefused(f"{path}: listed in the manifest but not staged", status=400) from None
        if len(data) != int(f.get("size", -1)) or hashlib.sha256(data).hexdigest() != f.get("sha256"):
            raise GatekeeperRefused(f"{path}: the staged file does not match the manifest's size and sha256",
                                    status=400)
        blobs[path] = data
    return blobs


def _plain_file_under(root: Path, key: str, size: int) -> None:
    """A folder store's staged file must be a regular file of the listed size inside the store, reached without
    a symlink (a link to ``/`` or ``/dev/zero`` would read the gatekeeper's own disk or exhaust its memory)."""
    import stat

    from synthgate.registry.gatekeeper import GatekeeperRefused

    base = root.resolve()
    here = base
    for part in [p for p in key.split("/") if p]:
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            return  # "not staged" is said by the read
        if stat.S_ISLNK(st.st_mode):
            raise GatekeeperRefused(f"{key}: a symbolic link in the staged package; only plain files are read",
                                    status=400)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        raise GatekeeperRefused(f"{key}: not a plain file of the size the manifest lists", status=400)


def _evaluated_images(release: dict[str, Any], samples: dict[str, Any], tracking_uri: str) -> list[str]:
    """The attested images' pixel hashes, in the evaluated set's order, from the registered evaluation."""
    from synthgate.registry.client import connect
    from synthgate.registry.gatekeeper import GatekeeperRefused

    if not samples.get("images_sha256_root"):
        raise GatekeeperRefused("the release does not list its images (evaluated before synthgate recorded image "
                                "hashes); re-evaluate and release again to publish", status=409)
    client = connect(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        ev = json.loads(Path(client.download_artifacts(release["run_id"], "evaluation/evaluation.json", tmp)).read_text())
    if evaluation_hash(ev) != release["evaluation_hash"]:
        raise GatekeeperRefused("the registered evaluation no longer matches the attested one", status=409)
    hashes = [str(h) for h in (ev.get("synthetic") or {}).get("image_sha256") or []]
    if hashlib.sha256("\n".join(hashes).encode()).hexdigest() != samples["images_sha256_root"]:
        raise GatekeeperRefused("the registered evaluation's image list is not the attested one", status=409)
    return hashes


#: The arrays of a shard, exactly (``publish/files.py`` writes them): anything else could carry images no one scanned.
SHARD_ARRAYS = {"images", "labels", "classes"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The PNG chunks a published image may hold (what PIL writes for a grey or RGB image), nothing after IEND.
_PNG_CHUNKS = {b"IHDR", b"IDAT", b"IEND"}


def read_shard(data: bytes, path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A shard's images (N, H, W, C) uint8, labels (N,) and classes, refused unless it holds exactly those
    three arrays of those types (a strict zip: nothing between or after its entries)."""
    from synthgate.registry.gatekeeper import GatekeeperRefused

    strict_zip(data, path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if set(z.files) != SHARD_ARRAYS:
                raise ValueError(f"arrays {sorted(z.files)}, expected {sorted(SHARD_ARRAYS)}")
            images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    except Exception as e:
        raise GatekeeperRefused(f"{path} is not a shard as publish writes it ({type(e).__name__}: {e})",
                                status=400) from None
    if images.dtype != np.uint8 or images.ndim != 4 or labels.ndim != 1 or len(labels) != len(images) \
            or labels.dtype.kind not in "iu" or (len(labels) and (labels.min() < 0 or labels.max() >= len(classes))):
        raise GatekeeperRefused(f"{path}: images must be uint8 (N, H, W, C) with one label per image in range "
                                f"(got {images.dtype} {images.shape}, labels {labels.dtype} {labels.shape})", status=400)
    return images, labels, classes


def strict_zip(data: bytes, path: str) -> zipfile.ZipFile:
    """``data`` as a zip whose entries follow each other with no gap, the central directory right after
    the last one, no comment and no prepended bytes: no room for bytes the entries do not account for."""
    from synthgate.registry.gatekeeper import GatekeeperRefused

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        offset = 0
        for info in sorted(zf.infolist(), key=lambda i: i.header_offset):
            if info.header_offset != offset or info.flag_bits & 0x1:
                raise ValueError(f"entry {info.filename!r} at {info.header_offset}, expected {offset}")
            name_len, extra_len = int.from_bytes(data[offset + 26:offset + 28], "little"), \
                int.from_bytes(data[offset + 28:offset + 30], "little")
            offset += 30 + name_len + extra_len + info.compress_size
            if info.flag_bits & 0x8:  # a data descriptor after the data (signature optional)
                offset += 16 if data[offset:offset + 4] == b"PK\x07\x08" else 12
        if zf.start_dir != offset or zf.comment:
            raise ValueError("bytes between the entries and the central directory, or a comment")
    except Exception as e:
        raise GatekeeperRefused(f"{path} is not a plain zip archive ({type(e).__name__}: {e})", status=400) from None
    return zf


def _plain_png(data: bytes, where: str) -> np.ndarray:
    """A PNG with only IHDR, IDAT and IEND chunks and nothing after IEND, decoded to (H, W, C)."""
    from PIL import Image

    from synthgate.registry.gatekeeper import GatekeeperRefused

    pos, seen = len(_PNG_SIGNATURE), b""
    ok = data.startswith(_PNG_SIGNATURE)
    while ok and pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        ok = kind in _PNG_CHUNKS
        pos += 12 + length
        seen = kind
        if kind == b"IEND":
            break
    if not ok or seen != b"IEND" or pos != len(data):
        raise GatekeeperRefused(f"{where} is not a plain PNG (only IHDR, IDAT, IEND; nothing after the image)",
                                status=400)
    arr = np.asarray(Image.open(io.BytesIO(data)))
    return arr[..., None] if arr.ndim == 2 else arr


def _shard_images(blobs: dict[str, bytes], allowed: Any) -> tuple[list[str], list[int]]:
    from synthgate.registry.gatekeeper import GatekeeperRefused

    hashes: list[str] = []
    labels: list[int] = []
    for path in sorted(p for p in blobs if p.startswith("images/shard-")):
        images, ys, _ = read_shard(blobs[path], path)
        for i, (im, y) in enumerate(zip(images, ys, strict=True)):
            h = pixel_sha256(im)
            if h not in allowed:
                raise GatekeeperRefused(f"{path} image {i} is not one of the images the release attested (or it was "
                                        "flagged as a copy): only scanned, unflagged images are published", status=409)
            hashes.append(h)
            labels.append(int(y))
    if not hashes:
        raise GatekeeperRefused("the package holds no image shard", status=400)
    return hashes, labels


def _png_images(blobs: dict[str, bytes], hashes: list[str], labels: list[int], classes: list[str]) -> None:
    """Each class's archive holds exactly its images, ``NNNNNN.png`` by index, each the shard's image."""
    from synthgate.registry.gatekeeper import GatekeeperRefused

    pngs = sorted(p for p in blobs if p.startswith("png/"))
    if not pngs:
        return
    expected = {f"png/{c}.zip" for k, c in enumerate(classes) if k in set(labels)}
    if set(pngs) != expected:
        raise GatekeeperRefused(f"the PNG archives are {pngs}, expected {sorted(expected)}", status=400)
    for path in pngs:
        k = classes.index(path.removeprefix("png/").removesuffix(".zip"))
        want = {f"{i:06d}.png": h for i, (h, y) in enumerate(zip(hashes, labels, strict=True)) if y == k}
        zf = strict_zip(blobs[path], path)
        if sorted(zf.namelist()) != sorted(want):
            raise GatekeeperRefused(f"{path} holds other entries than the images of class {classes[k]}", status=400)
        for entry in zf.namelist():
            if pixel_sha256(_plain_png(zf.read(entry), f"{path}:{entry}")) != want[entry]:
                raise GatekeeperRefused(f"{path}:{entry} is not image {entry[:-4]} of the shards", status=409)


def _check_documents(blobs: dict[str, bytes], release: dict[str, Any], tracking_uri: str, hashes: list[str],
                     labels: list[int], classes: list[str], evaluated: list[str]) -> None:
    """``report.html`` is the registered run's public report with the signed release at its top
    (:func:`~synthgate.gates.page.insert_release`, recomputed here), byte for byte; ``labels.csv`` is exactly what
    the shards say; ``DATACARD.md`` is plain text (no embedded images, scripts or data URIs)."""
    import csv
    import re

    from synthgate.evaluation.report import PUBLIC_MARK
    from synthgate.gates.page import insert_release
    from synthgate.registry.client import connect
    from synthgate.registry.gatekeeper import GatekeeperRefused

    if "report.html" in blobs:
        with tempfile.TemporaryDirectory() as tmp:
            registered = _registered_report(connect(tracking_uri), release["run_id"], Path(tmp))
        signed = release.get("report_sha256")
        if not signed:
            raise GatekeeperRefused("report.html: the release does not bind a public report (signed before reports "
                                    "were bound, or none was registered)", hint="release the version again "
                                    "(`synthgate promote`) so that its report is signed, then publish", status=409)
        if hashlib.sha256(registered).hexdigest() != signed:
            raise GatekeeperRefused(f"report.html: the registered public report is not the one the release signed "
                                    f"(sha256 {signed[:16]}): replaced after the release", status=409)
        try:
            expected = insert_release(registered.decode("utf-8"), release).encode("utf-8")
        except UnicodeDecodeError:
            expected = b""
        if not registered or blobs["report.html"] != expected or PUBLIC_MARK.encode() not in registered:
            raise GatekeeperRefused("report.html is not the registered run's public report with this release at its "
                                    "top", status=400)
    if "labels.csv" in blobs:
        try:
            rows = list(csv.DictReader(io.StringIO(blobs["labels.csv"].decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error):
            rows = []
        bad = len(rows) != len(hashes)
        for i, (r, h, y) in enumerate(zip(rows, hashes, labels, strict=False)):
            src = r.get("source_index") or ""
            bad = bad or r.get("index") != str(i) or r.get("label") != str(y) or r.get("class") != classes[y] \
                or not src.isdigit() or int(src) >= len(evaluated) or evaluated[int(src)] != h
        if bad:
            raise GatekeeperRefused("labels.csv does not describe the shards' images (index, source_index, label, "
                                    "class)", status=400)
    if "DATACARD.md" in blobs:
        text = blobs["DATACARD.md"].decode("utf-8", errors="replace")
        if len(blobs["DATACARD.md"]) > 1_000_000 or re.search(r"(?i)data:[a-z]+/|<\s*(img|script|iframe|object|embed)\b"
                                                               r"|[A-Za-z0-9+/=]{400,}", text):
            raise GatekeeperRefused("DATACARD.md must be plain text: no embedded images, scripts, data URIs or "
                                    "encoded blobs", status=400)


def store_key(store: str) -> str:
    """The store as :func:`synthgate.stores.open_store` will open it (its own parser,
    :func:`~synthgate.stores.store_location`): ``s3://BUCKET/PREFIX`` without ``.`` or ``..`` segments, or a folder
    (a path or a ``file:`` URI) as its resolved absolute path. Control characters (which the URL parser drops), other
    schemes and a bucket-less or empty store are refused."""
    from synthgate.registry.gatekeeper import GatekeeperRefused
    from synthgate.stores import StoreError, store_location

    text = str(store)
    if not text.strip() or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise GatekeeperRefused(f"store {text!r} is empty or holds control characters", status=400)
    try:
        kind, bucket, where = store_location(text)
    except StoreError as e:
        raise GatekeeperRefused(f"store {text!r}: an S3 store is s3://BUCKET[/PREFIX] without . or .."
                                if "no bucket" in e.message else e.message, status=400) from None
    if kind == "file":
        return str(Path(where).resolve())
    parts = [p for p in where.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise GatekeeperRefused(f"store {text!r}: an S3 store is s3://BUCKET[/PREFIX] without . or ..", status=400)
    return "s3://" + "/".join([bucket, *parts])


def weights_digest(model_dir: Path, info: dict[str, Any]) -> str:
    from synthgate.generators.model import weights_path
    from synthgate.utils import sha256_file

    return sha256_file(weights_path(Path(model_dir), str(info.get("type"))))
