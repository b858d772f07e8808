"""The attacker's test suite (issue 33): every attack of the issue's table, the store attacks, and the
attacks an insider would try against the gatekeeper design, each against real servers (the session's
MLflow with basic-auth and its gatekeeper subprocess, a local file store).

Who attacks: ``pipe`` (the pipeline role, EDIT), ``rev`` (reviewer, EDIT), ``cons`` (consumer, READ,
with write access to the store), and anyone who can write the artifact store. ``owner`` holds MANAGE.
Every test asserts the refusal AND that its message names what failed. One module-scoped world is
shared: model ``sec-generator`` (v1 passed and released by the gatekeeper, v2 failed, never released),
model ``secb-generator`` (v1, v2 passed and released: another model, and victims of weight swaps and
revocations) and dataset ``sec-synthetic:v1`` published from ``sec-generator`` v1.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import os
import shutil
import sqlite3
import threading
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthgate.errors import SynthgateError
from synthgate.publish.package import PublishRefused, publish
from synthgate.publish.pull import DatasetRevoked, VerificationFailed, pull
from synthgate.registry import access
from synthgate.registry.client import connect
from synthgate.registry.gatekeeper import GatekeeperRefused
from synthgate.registry.gatekeeper_app import GatekeeperUnavailable, call
from synthgate.registry.registry import (
    PromotionRefused,
    load_model,
    pin_policy,
    promote,
    register,
    release_of,
)
from synthgate.trust import attest
from synthgate.trust.attest import AttestationInvalid
from synthgate.trust.keys import generate_key, load_signer
from synthgate.utils import sha256_file
from tests.integration.test_publish import GENERATOR, model_dir, samples  # noqa: F401 - module fixtures

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LOGIN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
PASSWORDS = {u: f"{u}-has-a-long-password" for u in ("owner", "rev", "pipe", "cons")}
ROLES = {"owner": "owner", "rev": "reviewer", "pipe": "pipeline", "cons": "consumer"}
G, B = "sec-generator", "secb-generator"
DATASET = "sec-synthetic"
ATT, REV = "release.attestation", "release.revocation"


# ------------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def as_user(user: str | None, password: str | None = None):
    """Act as ``user`` (MLflow clients and the gatekeeper client read the login at each request)."""
    saved = {k: os.environ.get(k) for k in LOGIN}
    os.environ["MLFLOW_TRACKING_USERNAME"] = user or ""
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password if password is not None else PASSWORDS.get(user or "", "")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def env(**values: str | None):
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def register_version(tmp: Path, uri: str, model_dir: Path, samples: Any, name: str, passing: bool = True,  # noqa: F811
                     policy: Any = None, **extra: Any) -> str:
    """A version of ``name`` gated (locally, under ``policy``) on ``samples``; as tests/integration/test_publish's
    ``_registered`` does, but under a given name and never promoted. -> the version."""
    from synthgate.data.canonical import pixel_hashes
    from synthgate.evaluation.evaluate import evaluation_hash
    from synthgate.evaluation.report import PUBLIC_MARK
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy
    from tests.unit.test_gates import _evaluation

    d = tmp / f"{name}-{time.monotonic_ns()}"
    d.mkdir(parents=True)
    e = _evaluation(**({} if passing else {"copies": 3}), **extra)
    e["real"]["path"] = str(d / "MedNIST")
    e["synthetic"].update(path=str(samples.root), content_hash=samples.content_hash, num_images=120,
                          counts={"a": 60, "b": 60}, generator=dict(GENERATOR),
                          image_sha256=pixel_hashes(np.asarray(samples.images)))
    e["evaluation_hash"] = evaluation_hash(e)
    (d / "evaluation.json").write_text(json.dumps(e))
    (d / "report_public.html").write_text(f"<html><body>{PUBLIC_MARK} public report</body></html>")
    gate(d / "evaluation.json", policy or GatePolicy(), d / "gate.json")
    return register(model_dir, d / "evaluation.json", d / "gate.json", uri=uri, name=name).version


def decode(envelope: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(envelope["payload"]))


def reencode(envelope: dict[str, Any], stmt: dict[str, Any]) -> dict[str, Any]:
    """``envelope`` with its payload replaced and its signature kept (a tampered statement)."""
    out = copy.deepcopy(envelope)
    out["payload"] = base64.b64encode(json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode()).decode()
    return out


def resign(stmt: dict[str, Any], signer: Any) -> dict[str, Any]:
    return attest.sign(stmt, signer)


def refused_by_gatekeeper(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = exc.value.message if isinstance(exc.value, SynthgateError) else str(exc.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


@dataclass
class World:
    uri: str
    tmp: Path
    store: Path
    home: Path  # the gatekeeper's folder: key, trust.json, state
    g_att: dict[str, Any]  # sec-generator v1's signed release attestation
    b_att: dict[str, Any]  # secb-generator v1's
    weights: str

    def client(self) -> Any:
        return connect(self.uri)

    def tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(name, version).tags or {})

    def alias(self, name: str, alias: str = "approved") -> str | None:
        return (self.client().get_registered_model(name).aliases or {}).get(alias)

    def restore(self) -> None:
        """As the admin: G's alias back on v1, v2's tags cleaned of whatever an attack left."""
        c = self.client()
        c.set_registered_model_alias(G, "approved", "1")
        for k in (ATT, REV, "override.reason", "override.user", "override.time", "override.gate_sha256"):
            with contextlib.suppress(Exception):
                c.delete_model_version_tag(G, "2", k)

    def copy_dataset(self, dst_store: Path, name: str = DATASET, version: str = "v1", as_name: str | None = None,
                     as_version: str | None = None) -> Path:
        src = self.store / name / version
        dst = dst_store / (as_name or name) / (as_version or version)
        shutil.copytree(src, dst)
        return dst


@pytest.fixture(scope="module")
def world(mlflow_server, model_dir, samples, tmp_path_factory) -> World:  # noqa: F811
    uri = mlflow_server
    tmp = tmp_path_factory.mktemp("security")
    g1 = register_version(tmp, uri, model_dir, samples, G)
    g2 = register_version(tmp, uri, model_dir, samples, G, passing=False)
    b1 = register_version(tmp, uri, model_dir, samples, B)
    b2 = register_version(tmp, uri, model_dir, samples, B)
    assert (g1, g2, b1, b2) == ("1", "2", "1", "2")
    for user in ROLES:
        access.add_user(uri, user, PASSWORDS[user])
        for model in (G, B):
            access.grant(uri, model, user, ROLES[user])
    for name, version in ((G, "1"), (B, "1"), (B, "2")):
        promote(name, version, uri=uri)  # as the admin, through the gatekeeper
    promote(B, "1", uri=uri)  # @approved back on B v1
    store = tmp / "store"
    r = publish(G, store, samples=samples.root, tracking_uri=uri)
    assert (r.name, r.version) == (DATASET, "v1")
    c = connect(uri)
    w = World(uri, tmp, store, Path(os.environ["SYNTHGATE_TRUST_ROOT"]).parent,
              json.loads(c.get_model_version(G, "1").tags[ATT]), json.loads(c.get_model_version(B, "1").tags[ATT]),
              GENERATOR["weights_sha256"])
    return w


@pytest.fixture
def w(world: World):
    """The shared world, put back after each test (an attack may leave G's alias or v2's tags changed)."""
    yield world
    world.restore()


# ------------------------------------------------------------------------------ the table (1-7)
def test_1_override_tag_and_hand_moved_alias_grant_nothing(w, samples):  # noqa: F811
    """#1: pipeline sets only `override.reason` on the failed version, moves @approved, publishes."""
    with as_user("pipe"):
        c = w.client()
        c.set_model_version_tag(G, "2", "override.reason", "trust me")
        c.set_registered_model_alias(G, "approved", "2")  # MLflow allows it (EDIT)
        with pytest.raises(PublishRefused) as e:
            publish(G, w.tmp / "store-1", samples=samples.root, tracking_uri=w.uri)
    refused_by_gatekeeper(e, f"{G} version 2 holds @approved but is not released", "no signed attestation")
    assert not (w.tmp / "store-1").exists() or not list((w.tmp / "store-1").rglob("manifest.json"))
    with as_user("cons"), pytest.raises(AttestationInvalid) as e:
        load_model(G, "approved", w.uri)
    refused_by_gatekeeper(e, f"{G} version 2: release attestation: no signed attestation")


def test_2_unruled_planted_kinds_in_a_forged_evaluation(w, model_dir, samples):  # noqa: F811
    """#2: the evaluation marks the planted kind it fails (noise) `ruled: false` and is gated under a policy
    that does not rule it; the gatekeeper decides under its own policy and refuses."""
    from synthgate.gates.policy import GatePolicy

    lax = GatePolicy.model_validate({"memorization": {"planted_kinds": ["exact", "flip"]}})
    v = register_version(w.tmp, w.uri, model_dir, samples, G, policy=lax,  # the pipeline job registers it
                         memorization__planted__noise__p_values=[0.5] * 100,
                         memorization__planted__noise__ruled=False)
    assert w.tags(G, v)["gate.passed"] == "true"  # its own gate passed
    with as_user("pipe"), pytest.raises(PromotionRefused) as e:
        promote(G, v, uri=w.uri)
    refused_by_gatekeeper(e, f"{G} version {v} failed its gate under the pinned policy",
                          "memorization.min_planted_detection", "noise")
    assert w.alias(G) == "1" and ATT not in w.tags(G, v)


def test_3_policy_tags_rewritten_by_reviewer_or_pipeline_change_nothing(w, tmp_path):
    """#3: the old pin (`gate.required_policy_hash`) and the new pin's tag rewritten to a lax policy by EDIT
    accounts: the gatekeeper reads its own pins, never the registry's tags."""
    from synthgate.gates.policy import GatePolicy
    from synthgate.registry.verify import REQUIRED_POLICY_TAG

    lax = GatePolicy.model_validate({"memorization": {"max_flagged_copies": 1_000_000}})
    for user in ("rev", "pipe"):
        with as_user(user):
            c = w.client()
            c.set_registered_model_tag(G, REQUIRED_POLICY_TAG, lax.policy_hash())
            c.set_registered_model_tag(G, "gate.pinned_policy", json.dumps({"policy": "memorization:\n  "
                                                                                      "max_flagged_copies: 1000000\n"}))
            with pytest.raises(PromotionRefused) as e:
                promote(G, "2", uri=w.uri)
        refused_by_gatekeeper(e, f"{G} version 2 failed its gate under the pinned policy",
                              "memorization.max_flagged_copies")
        # deleting the tag needs MANAGE in MLflow; the gatekeeper would not read it anyway
    assert w.alias(G) == "1" and ATT not in w.tags(G, "2")


def test_4_alias_moved_and_published_in_the_same_process(w, samples):  # noqa: F811
    """#4: no race with a guard's revert: approval is the signature, checked where the data leaves."""
    with as_user("pipe"):
        w.client().set_registered_model_alias(G, "approved", "2")
        t0 = time.perf_counter()
        with pytest.raises(PublishRefused) as e:
            publish(G, w.tmp / "store-4", samples=samples.root, tracking_uri=w.uri)
    assert time.perf_counter() - t0 < 60
    refused_by_gatekeeper(e, "holds @approved but is not released", "no signed attestation")


def test_5_alias_reset_every_50ms_serves_the_failed_version_zero_times(w):
    """#5: the pipeline flips @approved onto the failed version every 50 ms (an admin flips it back, as
    the old guard did); a consumer resolving @approved is served the failed version 0 times."""
    import requests

    from synthgate.publish.package import approved_version

    stop = threading.Event()
    admin = tuple(os.environ[k] for k in LOGIN)

    def flip() -> None:  # the attacker: its own login, on every request (os.environ is the consumer's)
        while not stop.is_set():
            with contextlib.suppress(Exception):
                requests.post(f"{w.uri}/api/2.0/mlflow/registered-models/alias", auth=("pipe", PASSWORDS["pipe"]),
                              json={"name": G, "alias": "approved", "version": "2"}, timeout=10)
            time.sleep(0.05)

    served = {"1": 0, "2": 0}
    refusals: list[str] = []
    attacker = threading.Thread(target=flip)
    attacker.start()
    try:
        deadline = time.time() + 3.0
        while time.time() < deadline:
            # the guard of old puts v1 back (the admin, its own login); the consumer then resolves @approved
            requests.post(f"{w.uri}/api/2.0/mlflow/registered-models/alias", auth=admin,
                          json={"name": G, "alias": "approved", "version": "1"}, timeout=10)
            with as_user("cons"):
                try:
                    mv, *_ = approved_version(w.client(), G, "approved")
                    served[str(mv.version)] += 1
                except SynthgateError as e:
                    refusals.append(e.message)
    finally:
        stop.set()
        attacker.join()
    assert served["2"] == 0, f"the failed version was served {served['2']} times"
    assert refusals, "the alias never sat on the failed version: the attack did not run"
    assert all("version 2 holds @approved but is not released" in r and "no signed attestation" in r
               for r in refusals), refusals[:3]


def _forge_audit_override(w: World) -> None:
    from synthgate.registry.audit import append
    from synthgate.utils import utc_now

    with as_user("pipe"):
        c = w.client()
        tags = w.tags(G, "2")
        for k, v in {"override.reason": "committee decision 9", "override.user": "admin (mlflow)",
                     "override.time": utc_now(), "override.gate_sha256": tags["gate.sha256"]}.items():
            c.set_model_version_tag(G, "2", k, v)
        append(c, G, "2", "override", "admin (mlflow)", utc_now(), "committee decision 9")  # valid chain hash
        c.set_registered_model_alias(G, "approved", "2")


def test_6_hand_written_override_with_a_chained_audit_entry_loads_nothing(w, samples):  # noqa: F811
    """#6: the override's tags plus an `audit.N` entry with a valid chain hash, user "admin (mlflow)"."""
    _forge_audit_override(w)
    with as_user("cons"):
        with pytest.raises(AttestationInvalid) as e:
            load_model(G, "approved", w.uri)
        refused_by_gatekeeper(e, f"{G} version 2: release attestation: no signed attestation")
        import mlflow

        with env(MLFLOW_TRACKING_URI=w.uri, MLFLOW_REGISTRY_URI=w.uri), pytest.raises(PromotionRefused) as e:
            mlflow.pyfunc.load_model(f"models:/{G}@approved")
        refused_by_gatekeeper(e, "no release attestation signed by the gatekeeper verifies for these weights")
    with as_user("pipe"), pytest.raises(PublishRefused) as e:
        publish(G, w.tmp / "store-6", samples=samples.root, tracking_uri=w.uri)
    refused_by_gatekeeper(e, "is not released")


def test_6b_a_hand_written_audit_entry_does_not_verify(w, cli):
    """#6, the audit half: "the audit chain is signed, so writing an entry needs the key" (issue 33, item 4).
    `synthgate audit` must not show a hand-written admin override as a verified entry."""
    _forge_audit_override(w)
    code, out, err = cli("audit", G, "--version", "2", "--tracking-uri", w.uri)
    assert code != 0 and "does not verify" in err, (
        "BYPASS: `synthgate audit` verifies a hand-written 'override' entry by 'admin (mlflow)' (unsigned hash chain)"
        f"\n{out}")


def test_7_impostor_model_cannot_take_a_dataset_name(w, model_dir, samples, tmp_path):  # noqa: F811
    """#7: any user creates `SEC-GENERATOR` (MLflow makes its creator its owner), overrides its own failed
    version, publishes as `sec-synthetic` v99; then writes a v99 into the store by hand."""
    impostor = G.upper()
    with as_user("cons"):
        connect(w.uri).create_registered_model(impostor)  # the consumer owns it (MANAGE)
    v = register_version(w.tmp, w.uri, model_dir, samples, impostor, passing=False)  # its run: a job's
    with as_user("cons"):
        assert "OVERRIDE" in promote(impostor, v, uri=w.uri, force=True, reason="mine")  # its own model: allowed
        with pytest.raises(GatekeeperRefused) as e:
            publish(impostor, w.store, samples=samples.root, version="v99", tracking_uri=w.uri)
    refused_by_gatekeeper(e, f"dataset name '{DATASET}' belongs to model '{G}'", f"'{impostor}' may not publish")
    assert not (w.store / DATASET / "v99" / "manifest.json").exists()
    # store write access: v1's signed files copied as v99
    forged = tmp_path / "store"
    w.copy_dataset(forged)
    w.copy_dataset(forged, as_version="v99")
    with pytest.raises(AttestationInvalid) as e:
        pull(f"{DATASET}:v99", tmp_path / "out", forged)
    refused_by_gatekeeper(e, f"{DATASET}:v99: the signature is for dataset {DATASET}:v1, not this one")
    p = pull(DATASET, tmp_path / "newest", forged)  # the newest *signed* one is chosen, never the forgery
    assert (p.version, p.status) == ("v1", "approved")


# ----------------------------------------------------------------------------------------- the store
def _rewrite_manifest(ds: Path) -> None:
    """What a store writer does after editing files: recompute every size and sha256 in manifest.json."""
    m = json.loads((ds / "manifest.json").read_text())
    for f in m["files"]:
        f["size"], f["sha256"] = (ds / f["path"]).stat().st_size, sha256_file(ds / f["path"])
    (ds / "manifest.json").write_text(json.dumps(m, indent=2))


def test_store_png_edited_with_the_manifest_recomputed(w, tmp_path):
    from PIL import Image

    ds = w.copy_dataset(tmp_path / "store")
    z = ds / "png" / "a.zip"
    with zipfile.ZipFile(z) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    first = sorted(entries)[0]
    img = np.asarray(Image.open(io.BytesIO(entries[first]))).copy()
    img[:4, :4] = 255 - img[:4, :4]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    entries[first] = buf.getvalue()
    with zipfile.ZipFile(z, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    _rewrite_manifest(ds)
    with pytest.raises(AttestationInvalid) as e:
        pull(f"{DATASET}:v1", tmp_path / "out", tmp_path / "store")
    refused_by_gatekeeper(e, f"{DATASET}:v1: the manifest's file list is not the one the gatekeeper signed")
    assert not (tmp_path / "out" / "png").exists()


def test_store_shard_replaced_with_the_manifest_recomputed(w, tmp_path):
    ds = w.copy_dataset(tmp_path / "store")
    shard = ds / "images" / "shard-00000.npz"
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = np.random.default_rng(7).integers(0, 256, arrays["images"].shape, dtype=np.uint8)
    np.savez(shard, **arrays)
    _rewrite_manifest(ds)
    with pytest.raises(AttestationInvalid) as e:
        pull(f"{DATASET}:v1", tmp_path / "out", tmp_path / "store")
    refused_by_gatekeeper(e, "the manifest's file list is not the one the gatekeeper signed")
    # the shard replaced and the manifest left as it was: the file's own hash fails
    ds2 = w.copy_dataset(tmp_path / "store2")
    shutil.copyfile(shard, ds2 / "images" / "shard-00000.npz")
    with pytest.raises(VerificationFailed) as e:
        pull(f"{DATASET}:v1", tmp_path / "out2", tmp_path / "store2")
    refused_by_gatekeeper(e, "images/shard-00000.npz: ")


def test_deleting_the_newest_audit_entry_shows(w, cli, model_dir, samples):  # noqa: F811
    """The chain alone cannot show a removed *last* entry (what is left is a valid chain): an owner (deleting a
    version tag needs MANAGE in MLflow 3.17; the pipeline role gets 403) deletes the gatekeeper's signed refusal
    of a failed version; `synthgate audit` names it from the
    gatekeeper's signed record. Offline, the audit says what it could not check instead of passing silently."""
    from synthgate.registry.audit import entries
    from synthgate.registry.server import free_port

    v = register_version(w.tmp, w.uri, model_dir, samples, G, passing=False)
    with as_user("rev"), pytest.raises(SynthgateError):
        promote(G, v, uri=w.uri)  # refused: a signed "refused" entry on v
    with as_user("cons"):
        code, out, err = cli("audit", G, "--version", v, "--tracking-uri", w.uri)
    assert code == 0 and "refused" in out and "not consulted" not in out, (out, err)
    last = max(entries(w.tags(G, v)))
    with as_user("owner"):
        for k in list(w.tags(G, v)):
            if k.startswith(f"audit.{last}."):
                w.client().delete_model_version_tag(G, v, k)
    with as_user("cons"):
        code, out, err = cli("audit", G, "--version", v, "--tracking-uri", w.uri)
    assert code != 0, f"BYPASS: the deleted refusal of {G} version {v} is not noticed\n{out}"
    assert f"version {v} entry {last} was signed by the gatekeeper (refused) and is gone" in err, err
    with env(SYNTHGATE_GATEKEEPER_URL=f"http://127.0.0.1:{free_port()}"), as_user("cons"):
        code, out, err = cli("audit", G, "--version", v, "--tracking-uri", w.uri)
    assert code == 0 and "the gatekeeper's record was not consulted" in " ".join(out.split()), out
    assert "a removed newest entry would not show" in " ".join(out.split()), out


def test_a_model_name_with_a_quote_does_not_break_models(w, cli):
    """`q' OR name LIKE '%` as a model name (any user may create one) must not break `synthgate models`."""
    name = "q' OR name LIKE '%"
    with as_user("pipe"):
        connect(w.uri).create_registered_model(name)
    cons = dict(zip(LOGIN, ("cons", PASSWORDS["cons"]), strict=True))
    code, out, err = cli("models", "--tracking-uri", w.uri, env=cons)
    assert code == 0 and G in out, err
    code, out, err = cli("models", name, "--tracking-uri", w.uri, env=cons)
    assert code == 0 and G not in out, err  # exactly that model (no version), not every model
    code, out, err = cli("audit", name, "--tracking-uri", w.uri, env=cons)
    assert code == 0 and "Traceback" not in err, err


# ---------------------------------------------------------------- attestations presented where they do not belong
def test_attestation_of_version_a_presented_for_version_b_or_another_model(w):
    with as_user("pipe"):
        c = w.client()
        c.set_model_version_tag(G, "2", ATT, json.dumps(w.g_att))
        c.set_registered_model_alias(G, "approved", "2")
    with as_user("cons"):
        with pytest.raises(AttestationInvalid) as e:
            load_model(G, "approved", w.uri)
        refused_by_gatekeeper(e, f"the release attestation is for {G} version 1, not for {G} version 2")
        with pytest.raises(AttestationInvalid) as e:
            release_of(w.client(), G, "2")
    # another model's release (the same weights, even) presented for this model
    with as_user("pipe"):
        w.client().set_model_version_tag(G, "2", ATT, json.dumps(w.b_att))
    with as_user("cons"), pytest.raises(AttestationInvalid) as e:
        release_of(w.client(), G, "2", w.weights)
    refused_by_gatekeeper(e, f"the release attestation is for {B} version 1, not for {G} version 2")


def test_old_attestation_replayed_onto_a_new_version(w, model_dir, samples):  # noqa: F811
    """A later (failed) version gets v1's old attestation; even with its tags made to look like v1's."""
    v = register_version(w.tmp, w.uri, model_dir, samples, G, passing=False)
    with as_user("pipe"):
        c = w.client()
        c.set_model_version_tag(G, v, ATT, json.dumps(w.g_att))
        c.set_model_version_tag(G, v, "gate.passed", "true")
        c.set_registered_model_alias(G, "approved", v)
    with as_user("cons"), pytest.raises(AttestationInvalid) as e:
        load_model(G, "approved", w.uri)
    refused_by_gatekeeper(e, f"the release attestation is for {G} version 1, not for {G} version {v}",
                          "an attestation of another version presented for this one")


def _artifact_dir(uri: str) -> Path:
    """An ``mlflow-artifacts:/...`` URI as the server's folder on disk (the artifact store's writer)."""
    root = Path(os.environ["SYNTHGATE_TRUST_ROOT"]).parents[1] / "artifacts"
    return root / uri.split(":/", 1)[1].lstrip("/")


def test_weights_swapped_after_signing(w):
    """An artifact-store writer (with EDIT for the tags) swaps secb-generator v2's weights after it was
    released, and makes every record agree with the new weights: the generator description's digests,
    the bundled and the run's evaluation (its weights sha256) and gate record, the version's hash tags.
    Only the signature still names the old weights."""
    from synthgate.evaluation.evaluate import evaluation_hash
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy
    from synthgate.registry.verify import verify_version

    c = w.client()
    mv = c.get_model_version(B, "2")
    model_root = _artifact_dir(c.get_logged_model(mv.source.removeprefix("models:/")).artifact_location)
    run_root = _artifact_dir(c.get_run(mv.run_id).info.artifact_uri)
    bundled = model_root / "artifacts"
    weights = bundled / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-8] + b"\x01" * 8)  # other weights
    new = sha256_file(weights)
    info_path = bundled / "model" / "synthgate_generator.json"
    info = json.loads(info_path.read_text())
    info["files"] = {k: sha256_file(bundled / "model" / k) for k in info["files"]}
    info_path.write_text(json.dumps(info))
    ev = json.loads((bundled / "evaluation.json").read_text())
    ev["synthetic"]["generator"]["weights_sha256"] = new
    ev["evaluation_hash"] = evaluation_hash(ev)
    (bundled / "evaluation.json").write_text(json.dumps(ev))
    gate(bundled / "evaluation.json", GatePolicy(), bundled / "gate.json")
    shutil.copyfile(bundled / "evaluation.json", run_root / "evaluation" / "evaluation.json")
    shutil.copyfile(bundled / "gate.json", run_root / "gate" / "gate.json")
    with as_user("pipe"):
        c = w.client()
        c.set_model_version_tag(B, "2", "evaluation_hash", ev["evaluation_hash"])
        c.set_model_version_tag(B, "2", "gate.sha256", sha256_file(bundled / "gate.json"))
        c.set_registered_model_alias(B, "approved", "2")
    try:
        verify_version(w.client(), B, "2", registry_pin=False)  # every record agrees: only the signature is left
        with as_user("cons"):
            with pytest.raises(PromotionRefused) as e:
                load_model(B, "approved", w.uri)
            refused_by_gatekeeper(e, f"the weights hash to {new[:16]}", "the weights were swapped after signing")
            import mlflow

            with env(MLFLOW_TRACKING_URI=w.uri, MLFLOW_REGISTRY_URI=w.uri), pytest.raises(PromotionRefused) as e:
                mlflow.pyfunc.load_model(f"models:/{B}@approved")
            refused_by_gatekeeper(e, f"no release attestation signed by the gatekeeper verifies for these weights "
                                     f"({new[:16]}")
    finally:
        w.client().set_registered_model_alias(B, "approved", "1")


# ----------------------------------------------------------------------------------------------- keys
def _forged_release(w: World, signer: Any, version: str = "2", **over: Any) -> dict[str, Any]:
    """A release statement for G ``version`` (v1's predicate, retargeted), signed by ``signer``."""
    stmt = decode(w.g_att)
    stmt["subject"][0]["name"] = f"{G}/{version}"
    stmt["predicate"].update(version=version, **over)
    return resign(stmt, signer)


def test_attestation_signed_by_a_key_not_in_the_trust_root(w, tmp_path):
    key, _ = generate_key(tmp_path / "evil")
    evil = load_signer(key)
    with as_user("pipe"):
        w.client().set_model_version_tag(G, "2", ATT, json.dumps(_forged_release(w, evil)))
        w.client().set_registered_model_alias(G, "approved", "2")
    with as_user("cons"), pytest.raises(AttestationInvalid) as e:
        load_model(G, "approved", w.uri)
    refused_by_gatekeeper(e, "its signature does not verify against the gatekeeper's public key(s)",
                          f"signed by {evil.public_key.keyid[:16]}")
    # the same for a dataset: a manifest signed by the attacker's key
    ds = w.copy_dataset(tmp_path / "store")
    stmt = decode(json.loads((ds / "manifest.sig.json").read_text()))
    (ds / "manifest.sig.json").write_text(json.dumps(resign(stmt, evil)))
    with pytest.raises(AttestationInvalid) as e:
        pull(f"{DATASET}:v1", tmp_path / "out", tmp_path / "store")
    refused_by_gatekeeper(e, f"{DATASET}:v1: its signature does not verify")


def test_attestation_signed_by_a_revoked_key(w, tmp_path):
    trust = json.loads((w.home / "trust.json").read_text())
    trust["revoked_keys"] = [k["keyid"] for k in trust["keys"]]
    revoked = tmp_path / "trust.json"
    revoked.write_text(json.dumps(trust))
    with env(SYNTHGATE_TRUST_ROOT=str(revoked)), as_user("cons"):
        with pytest.raises(AttestationInvalid) as e:
            load_model(G, "approved", w.uri)  # v1: genuinely signed, by a key the operators revoked
        refused_by_gatekeeper(e, f"signed with key {trust['keys'][0]['keyid'][:16]}", "which the trust root",
                              "revokes")
        with pytest.raises(AttestationInvalid) as e:
            pull(f"{DATASET}:v1", tmp_path / "out", w.store)
        refused_by_gatekeeper(e, f"{DATASET}:v1: signed with key", "revokes")


def test_clock_skew_a_statement_dated_in_the_future(w):
    """A gatekeeper whose clock runs a day ahead (here: its key, signing a statement dated tomorrow)."""
    signer = load_signer(w.home / "gatekeeper.key")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    with as_user("pipe"):
        w.client().set_model_version_tag(G, "2", ATT, json.dumps(_forged_release(w, signer, signed_at=tomorrow)))
    with as_user("cons"), pytest.raises(AttestationInvalid) as e:
        release_of(w.client(), G, "2")
    refused_by_gatekeeper(e, f"{G} version 2: release attestation: signed at", "in the future by this machine's clock",
                          "clock skew")


def test_signed_statement_of_another_type_or_with_an_edited_payload(w):
    """A genuine signature on the wrong thing: the dataset statement presented as a release; v1's
    attestation with its payload edited to name v2 (signature kept)."""
    sig = json.loads((w.store / DATASET / "v1" / "manifest.sig.json").read_text())
    with as_user("pipe"):
        w.client().set_model_version_tag(G, "2", ATT, json.dumps(sig))
    with as_user("cons"), pytest.raises(AttestationInvalid) as e:
        release_of(w.client(), G, "2")
    refused_by_gatekeeper(e, f"is a '{attest.DATASET}' statement, not a '{attest.RELEASE}' one")
    stmt = decode(w.g_att)
    stmt["subject"][0]["name"] = f"{G}/2"
    stmt["predicate"]["version"] = "2"
    with as_user("pipe"):
        w.client().set_model_version_tag(G, "2", ATT, json.dumps(reencode(w.g_att, stmt)))
    with as_user("cons"), pytest.raises(AttestationInvalid) as e:
        release_of(w.client(), G, "2")
    refused_by_gatekeeper(e, "its signature does not verify")


def test_hand_written_attestation_tag_and_malformed_or_truncated_ones(w, tmp_path):
    keyid = w.g_att["signatures"][0]["keyid"]
    stmt = decode(w.g_att)
    stmt["subject"][0]["name"] = f"{G}/2"
    stmt["predicate"]["version"] = "2"
    hand = reencode(w.g_att, stmt)
    hand["signatures"] = [{"keyid": keyid, "sig": "00" * 64}]
    text = json.dumps(w.g_att)
    cases = [(json.dumps(hand), "its signature does not verify"),
             (text[: len(text) // 2], "the attestation is malformed or truncated"),
             ("{}", "the attestation is malformed or truncated"),
             (json.dumps({**w.g_att, "signatures": []}), "the attestation carries no signature"),
             (json.dumps({**w.g_att, "payloadType": "text/plain"}), "payload type 'text/plain'")]
    for value, why in cases:
        with as_user("pipe"):
            w.client().set_model_version_tag(G, "2", ATT, value)
        with as_user("cons"), pytest.raises(AttestationInvalid) as e:
            release_of(w.client(), G, "2")
        refused_by_gatekeeper(e, f"{G} version 2: release attestation: {why}")
    # a truncated dataset signature
    ds = w.copy_dataset(tmp_path / "store")
    raw = (ds / "manifest.sig.json").read_text()
    (ds / "manifest.sig.json").write_text(raw[: len(raw) // 3])
    with pytest.raises(AttestationInvalid) as e:
        pull(f"{DATASET}:v1", tmp_path / "out", tmp_path / "store")
    refused_by_gatekeeper(e, f"{DATASET}:v1: the attestation is malformed or truncated")
    (ds / "manifest.sig.json").unlink()
    with pytest.raises(AttestationInvalid) as e:
        pull(f"{DATASET}:v1", tmp_path / "out", tmp_path / "store")
    refused_by_gatekeeper(e, f"{DATASET}:v1: no signed attestation")


def test_manifest_signature_taken_from_another_dataset_name(w, tmp_path):
    w.copy_dataset(tmp_path / "store", as_name="sec-copy-synthetic")
    with pytest.raises(AttestationInvalid) as e:
        pull("sec-copy-synthetic:v1", tmp_path / "out", tmp_path / "store")
    refused_by_gatekeeper(e, f"sec-copy-synthetic:v1: the signature is for dataset {DATASET}:v1, not this one",
                          "a manifest signed for another dataset")
    with pytest.raises(AttestationInvalid) as e:  # the newest-version path skips it too
        pull("sec-copy-synthetic", tmp_path / "out", tmp_path / "store")
    refused_by_gatekeeper(e, "no version of sec-copy-synthetic", "carries a valid gatekeeper signature")


# --------------------------------------------------------------------------------------- who may ask
def test_override_requested_by_a_reviewer_or_pipeline_account(w):
    for user in ("rev", "pipe"):
        with as_user(user), pytest.raises(PromotionRefused) as e:
            promote(G, "2", uri=w.uri, force=True, reason="we need it by Friday")
        refused_by_gatekeeper(e, f"{G} version 2 not promoted", f"{user} has EDIT on {G}; an override needs MANAGE "
                                                                "(the owner role)")
    with as_user("cons"), pytest.raises(PromotionRefused) as e:
        promote(G, "2", uri=w.uri, force=True, reason="x")
    refused_by_gatekeeper(e, f"cons has READ on {G}; an override needs MANAGE")
    # the admin's name with a wrong password, and no credentials at all
    admin = os.environ["MLFLOW_TRACKING_USERNAME"]
    with as_user(admin, "not-the-admin-password"), pytest.raises(PromotionRefused) as e:
        promote(G, "2", uri=w.uri, force=True, reason="x")
    refused_by_gatekeeper(e, f"MLflow does not accept the credentials of '{admin}'")
    with env(MLFLOW_TRACKING_USERNAME=None, MLFLOW_TRACKING_PASSWORD=None), pytest.raises(PromotionRefused) as e:
        promote(G, "2", uri=w.uri, force=True, reason="x")
    refused_by_gatekeeper(e, "no credentials: the gatekeeper acts only for an MLflow user")
    assert w.alias(G) == "1" and ATT not in w.tags(G, "2") and "override.reason" not in w.tags(G, "2")


def test_policy_pin_by_a_non_owner(w, tmp_path):
    lax = tmp_path / "lax.yaml"
    lax.write_text("memorization:\n  max_flagged_copies: 1000000\n")
    for user, perm in (("rev", "EDIT"), ("pipe", "EDIT"), ("cons", "READ")):
        with as_user(user), pytest.raises(GatekeeperRefused) as e:
            pin_policy(G, lax, w.uri)
        refused_by_gatekeeper(e, f"{user} has {perm} on {G}; pinning a policy needs MANAGE (the owner role)")
    with as_user("pipe"), pytest.raises(PromotionRefused) as e:
        promote(G, "2", uri=w.uri)
    refused_by_gatekeeper(e, "failed its gate under the pinned policy")
    with sqlite3.connect(w.home / "gatekeeper.db") as db:
        assert db.execute("SELECT COUNT(*) FROM pins WHERE model = ?", (G,)).fetchone()[0] == 0


# ----------------------------------------------------------------------------------- the gatekeeper's life
def test_gatekeeper_killed_mid_release(w, model_dir, samples, tmp_path):  # noqa: F811
    """SIGKILL while it checks a release (downloading the weights): nothing signed, no tag, alias unchanged,
    nothing in its state; a restarted gatekeeper releases the version."""
    from tests.helpers import gatekeeper_process

    v = register_version(w.tmp, w.uri, model_dir, samples, B)
    private_tmp = tmp_path / "gk-tmp"
    private_tmp.mkdir()
    with env(TMPDIR=str(private_tmp)):
        url, proc = gatekeeper_process(w.uri)
    outcome: dict[str, Any] = {}

    def ask() -> None:
        try:
            with as_user("rev"):
                outcome["ok"] = call("/v1/releases", {"model": B, "version": v, "alias": "approved"}, url)
        except Exception as e:  # noqa: BLE001
            outcome["error"] = e

    t = threading.Thread(target=ask)
    t.start()
    deadline = time.time() + 120
    while time.time() < deadline and t.is_alive() and not list(private_tmp.glob("synthgate-gatekeeper-*")):
        time.sleep(0.005)
    in_flight = t.is_alive()
    proc.kill()
    proc.wait(timeout=30)
    t.join(timeout=60)
    assert in_flight and "ok" not in outcome, "the release finished before the kill: the test did not kill mid-request"
    assert isinstance(outcome["error"], GatekeeperUnavailable)
    assert f"the gatekeeper at {url} is unreachable" in outcome["error"].message
    assert "nothing was signed" in outcome["error"].message
    assert ATT not in w.tags(B, v) and w.alias(B) == "1"
    with sqlite3.connect(w.home / "gatekeeper.db") as db:
        assert db.execute("SELECT COUNT(*) FROM releases WHERE model = ? AND version = ?", (B, v)).fetchone()[0] == 0
    with as_user("cons"), pytest.raises(AttestationInvalid, match="no signed attestation"):
        release_of(w.client(), B, v)
    url2, proc2 = gatekeeper_process(w.uri)
    try:
        with as_user("rev"):
            assert "(gate passed)" in promote(B, v, uri=w.uri, gatekeeper=url2)
        with as_user("cons"):
            assert release_of(w.client(), B, v).predicate["verdict"] == "passed"
    finally:
        proc2.terminate()
        proc2.wait(timeout=30)
        w.client().set_registered_model_alias(B, "approved", "1")


def test_gatekeeper_down_promote_and_publish_fail_closed_pull_works_offline(w, samples, tmp_path):  # noqa: F811
    from synthgate.registry.server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with env(SYNTHGATE_GATEKEEPER_URL=dead):
        with as_user("rev"), pytest.raises(GatekeeperUnavailable) as e:
            promote(B, "2", uri=w.uri)
        refused_by_gatekeeper(e, f"the gatekeeper at {dead} is unreachable", "nothing was signed", "fail closed")
        with pytest.raises(GatekeeperUnavailable) as e:
            publish(G, tmp_path / "store", samples=samples.root, tracking_uri=w.uri)
        refused_by_gatekeeper(e, f"the gatekeeper at {dead} is unreachable", "fail closed")
        assert not list((tmp_path / "store").rglob("manifest.json"))
        assert w.alias(B) == "1"
        # offline: neither the gatekeeper nor MLflow can be reached; a signed release still pulls
        with env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}"):
            p = pull(f"{DATASET}:v1", tmp_path / "out", w.store)
    assert p.status == "approved" and p.num_files > 5


def test_rollback_to_an_older_signed_version(w, samples, tmp_path):  # noqa: F811
    """v2 of the dataset is signed (serial 2) and pulled; the store then serves v1 (v2 deleted or pinned):
    an older signed version is refused unless asked."""
    r = publish(G, w.store, samples=samples.root, version="v2", tracking_uri=w.uri)
    assert r.version == "v2"
    assert pull(f"{DATASET}:v2", tmp_path / "new", w.store).version == "v2"
    with pytest.raises(VerificationFailed) as e:
        pull(f"{DATASET}:v1", tmp_path / "old", w.store)
    refused_by_gatekeeper(e, f"{DATASET}:v1 is release 1 of {DATASET}, older than release 2 (v2)", "rollback")
    frozen = tmp_path / "frozen"
    w.copy_dataset(frozen)  # a mirror that withholds v2
    with pytest.raises(VerificationFailed, match="rollback"):
        pull(DATASET, tmp_path / "old2", frozen)
    assert pull(f"{DATASET}:v1", tmp_path / "asked", w.store, allow_rollback=True).version == "v1"


def test_dataset_name_taken_over_by_another_model(w, samples, tmp_path):  # noqa: F811
    """secb-generator (released, its reviewer publishing) under sec-generator's dataset name."""
    with as_user("rev"), pytest.raises(GatekeeperRefused) as e:
        publish(B, tmp_path / "store", samples=samples.root, name=DATASET, version="v7", tracking_uri=w.uri)
    refused_by_gatekeeper(e, f"dataset name '{DATASET}' belongs to model '{G}'", f"'{B}' may not publish under it")
    assert not list((tmp_path / "store").rglob("manifest.json"))


def test_revoked_dataset_and_release_and_hand_written_revocation_tags(w, samples, tmp_path):  # noqa: F811
    """A signed revocation of a dataset stops pulls (also offline, once seen); a consumer cannot revoke;
    the signed `release.revocation` tag deleted or overwritten by hand revokes nothing less; a hand-written
    one on a good version revokes nothing (anyone could write it)."""
    name = "sec-revoked-synthetic"
    publish(G, w.store, samples=samples.root, name=name, tracking_uri=w.uri)
    with as_user("cons"), pytest.raises(GatekeeperRefused) as e:
        call("/v1/revocations", {"subject": f"dataset:{name}/v1", "model": G, "reason": "x"})
    refused_by_gatekeeper(e, f"cons has READ on {G}; a revocation needs EDIT")
    with as_user("rev"):
        call("/v1/revocations", {"subject": f"dataset:{name}/v1", "model": G, "reason": "a copy found by a reader"})
    with pytest.raises(DatasetRevoked) as e:
        pull(name, tmp_path / "out", w.store)
    refused_by_gatekeeper(e, f"{name}:v1 was revoked at", "by rev: a copy found by a reader")
    p = pull(f"{name}:v1", tmp_path / "allowed", w.store, allow_revoked=True)  # seen: remembered
    assert p.status == "revoked (allowed)"
    from synthgate.registry.server import free_port

    with env(SYNTHGATE_GATEKEEPER_URL=f"http://127.0.0.1:{free_port()}"), pytest.raises(DatasetRevoked) as e:
        pull(name, tmp_path / "offline", w.store)  # the gatekeeper unreachable: the remembered revocation holds
    refused_by_gatekeeper(e, "was revoked")

    # a model version's signed revocation, its tag then deleted / overwritten by the pipeline account
    with as_user("rev"):
        call("/v1/revocations", {"subject": f"{B}/2", "model": B, "reason": "memorizes rare cases"})
    for value in (None, json.dumps({"payload": "", "payloadType": "x", "signatures": []})):
        with as_user("owner"):  # deleting a tag needs MANAGE; overwriting it, EDIT
            c = w.client()
            if value is None:
                c.delete_model_version_tag(B, "2", REV)
            else:
                c.set_model_version_tag(B, "2", REV, value)
        with as_user("cons"), pytest.raises(AttestationInvalid) as e:
            release_of(w.client(), B, "2")
        refused_by_gatekeeper(e, f"{B} version 2 was revoked at", "memorizes rare cases")
    # a hand-written revocation on a good version (a denial of service) counts for nothing
    forged = reencode(w.g_att, attest.statement(attest.REVOCATION, f"{G}/1", "0" * 64,
                                                {"model": G, "reason": "forged", "signed_at": "2020-01-01T00:00:00"}))
    with as_user("pipe"):
        w.client().set_model_version_tag(G, "1", REV, json.dumps(forged))
    try:
        with as_user("cons"):
            assert release_of(w.client(), G, "1").predicate["verdict"] == "passed"
    finally:
        w.client().delete_model_version_tag(G, "1", REV)


def test_revocation_of_another_models_release_through_a_model_one_owns(w):
    """Anyone may create a registered model (MLflow makes them its owner): with EDIT on *their* model they ask
    the gatekeeper to revoke a subject of another model. The subject must belong to the model whose
    permission was checked. (Targets already withdrawn or non-existent, so that a bypass harms no other test.)"""
    own = "cons-own-generator"
    with as_user("cons"):
        connect(w.uri).create_registered_model(own)
        for subject in (f"dataset:{DATASET}/v99", f"{B}/2"):
            try:
                call("/v1/revocations", {"subject": subject, "model": own, "reason": "denial of service"})
            except GatekeeperRefused as e:
                assert subject.removeprefix("dataset:").split("/")[0] in e.message or own in e.message, e.message
                continue
            pytest.fail(f"BYPASS: cons (READ on {G} and {B}) got a signed revocation of {subject!r} by naming its "
                        f"own model {own!r} (gatekeeper.revoke checks EDIT on body['model'], never that the subject "
                        "belongs to it)")


# ---------------------------------------------------------------------- staged packages sent to the gatekeeper
def _stage(w: World, store: Path, name: str, edit: Any) -> tuple[str, dict[str, Any]]:
    """sec-synthetic v1's files staged as dataset ``name`` v1 in ``store``, edited by ``edit(folder)``; its
    manifest with every file's size and sha256 recomputed. -> (staging prefix, manifest)."""
    staging = f".staging/{name}/v1/{os.urandom(6).hex()}"
    d = store / staging
    shutil.copytree(w.store / DATASET / "v1", d)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").unlink()
    (d / "manifest.sig.json").unlink()
    edit(d)
    manifest.update(name=name, version="v1")
    manifest["files"] = [{"path": p.relative_to(d).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
                         for p in sorted(d.rglob("*")) if p.is_file()]
    return staging, manifest


def _edit_shard(d: Path, fn: Any) -> None:
    shard = d / "images" / "shard-00000.npz"
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(shard, **fn(arrays))


def test_staged_package_with_an_image_that_was_never_evaluated(w, tmp_path):
    """The pipeline account asks the gatekeeper itself to sign a package with a fresh image in a shard."""
    def fresh(a: dict[str, Any]) -> dict[str, Any]:
        a["images"] = a["images"].copy()
        a["images"][0] = 255 - a["images"][0]
        return a

    store = tmp_path / "store"
    staging, manifest = _stage(w, store, "sec-fresh-synthetic", lambda d: _edit_shard(d, fresh))
    with as_user("pipe"), pytest.raises(GatekeeperRefused) as e:
        call("/v1/datasets", {"store": str(store), "staging": staging, "manifest": manifest})
    refused_by_gatekeeper(e, "images/shard-00000.npz image 0 is not one of the images the release attested")


def test_staged_shard_smuggling_an_extra_array(w, tmp_path):
    """A shard whose npz carries, beside `images` and `labels`, an array the gatekeeper never looks at
    (here: 20 images the copy search never scanned, standing in for real training images)."""
    def smuggle(a: dict[str, Any]) -> dict[str, Any]:
        a["x"] = np.random.default_rng(1).integers(0, 256, (20, 16, 16, 1), dtype=np.uint8)
        return a

    store = tmp_path / "store"
    staging, manifest = _stage(w, store, "sec-smuggled-synthetic", lambda d: _edit_shard(d, smuggle))
    _must_refuse(staging, manifest, store, "images/shard-00000.npz",
                 "the gatekeeper signed a shard that carries an extra array 'x' of 20 never-scanned images "
                 "(gatekeeper_checks._shard_images reads only z['images'] and z['labels'])")


def _must_refuse(staging: str, manifest: dict[str, Any], store: Path, names: str, bypass: str) -> None:
    with as_user("pipe"):
        try:
            signed = call("/v1/datasets", {"store": str(store), "staging": staging, "manifest": manifest})
        except GatekeeperRefused as e:
            assert names in e.message, e.message
            return
    pytest.fail(f"BYPASS: {bypass}; signed serial {decode(signed)['predicate']['serial']}")


def test_staged_report_with_embedded_images(w, tmp_path):
    """report.html (a document the gatekeeper accepts unchecked) replaced by one that embeds images (the full
    report shows real training images): it is not the registered public report."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 16), dtype=np.uint8)).save(buf, format="PNG")
    page = f'<html><body><img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"></body></html>'

    store = tmp_path / "store"
    staging, manifest = _stage(w, store, "sec-report-synthetic", lambda d: (d / "report.html").write_text(page))
    _must_refuse(staging, manifest, store, "report.html",
                 "the gatekeeper signed a report.html that is not the registered public report and embeds an image "
                 "(gatekeeper_checks.check_package accepts DOCUMENTS unchecked)")


def test_registered_report_replaced_after_the_release(w, samples):  # noqa: F811
    """The reviewer released sec-generator v1 having read its public report; an artifact-store writer then
    replaces the run's `evaluation/report.html` with a page that still carries the public mark but tells
    another story. Publishing must not ship it: the release signed the report's sha256."""
    from synthgate.evaluation.report import PUBLIC_MARK

    c = w.client()
    report = _artifact_dir(c.get_run(c.get_model_version(G, "1").run_id).info.artifact_uri) / "evaluation" / "report.html"
    honest = report.read_bytes()
    report.write_text(f"<html><body>{PUBLIC_MARK} reviewed by the ethics board: no copies, PASSED</body></html>")
    try:
        with as_user("pipe"), pytest.raises(GatekeeperRefused) as e:
            publish(G, w.tmp / "store-report", samples=samples.root, tracking_uri=w.uri)
        refused_by_gatekeeper(e, "report.html: the registered public report is not the one the release signed",
                              "replaced after the release")
    finally:
        report.write_bytes(honest)


def test_the_world_is_intact(w):
    """Nothing the attacks did changed what was legitimately released."""
    with as_user("cons"):
        assert release_of(w.client(), G, "1").predicate["verdict"] == "passed"
        with pytest.raises(AttestationInvalid):
            release_of(w.client(), G, "2")
