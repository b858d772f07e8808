"""Publish and pull against real servers: MLflow (SQLite, 127.0.0.1) for approval, moto's S3 server
for the store. publish -> list -> pull -> verify; tampered, truncated and missing objects; revoked
versions; a killed publish; an interrupted pull that resumes; bad names, targets, buckets and
credentials."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from synthgate.config import Params, PublishConfig
from synthgate.errors import ConfigError, DataError, SynthgateError
from synthgate.publish.package import PublishRefused, publish
from synthgate.publish.pull import DatasetRevoked, VerificationFailed, list_datasets, pull
from synthgate.registry.client import connect
from synthgate.registry.registry import PromotionRefused, promote, register
from synthgate.stores import FileStore, StoreError, open_store
from synthgate.utils import sha256_file
from tests.helpers import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BUCKET = "synthgate-datasets"


@pytest.fixture(scope="module")
def s3():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch, request):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if "mlflow_server" in request.fixturenames:  # a gatekeeper that reads the store (it checks staged packages)
        from tests.helpers import gatekeeper_process

        url, proc = gatekeeper_process(request.getfixturevalue("mlflow_server"))
        monkeypatch.setenv("SYNTHGATE_GATEKEEPER_URL", url)
        yield s3
        proc.terminate()
        proc.wait(timeout=30)
        return
    yield s3


def _s3_client(url):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from synthgate.generators.config import GeneratorConfig
    from synthgate.generators.diffusion import build_scheduler, build_unet
    from synthgate.generators.model import save_generator

    gcfg = GeneratorConfig(type="diffusion", size="tiny")
    out = tmp_path_factory.mktemp("gen") / "model"
    save_generator(out, build_unet(gcfg, 16, 1, 2), gcfg, resolution=16, channels=1, classes=["a", "b"],
                   dataset_hash="d" * 64, step=1, extras={"scheduler": build_scheduler(gcfg)})
    # what `synthgate sample` records: the sampled weights' sha256 (the gatekeeper binds the release to it)
    GENERATOR["weights_sha256"] = sha256_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """A synthetic canonical dataset: 2 classes x 60 images, 16x16x1."""
    from synthgate.data.canonical import metadata_for, write_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (120, 16, 16, 1), dtype=np.uint8)
    labels = np.repeat([0, 1], 60)
    meta = metadata_for(images, labels, ["a", "b"], "train", [f"synthetic:t:{i}" for i in range(120)])
    return write_dataset(tmp_path_factory.mktemp("syn") / "samples", images, meta, ["a", "b"], stage="sample",
                         config={}, inputs=[], extra={"synthetic": True})


_counter = iter(range(10_000))
#: what `synthgate sample` records about the model_dir fixture (register checks it against the model)
GENERATOR = {"model_dir": "model", "name": "diffusion-tiny-step1", "type": "diffusion", "step": 1,
             "dataset_content_hash": "d" * 64}


def _registered(tmp: Path, uri: str, model_dir: Path, samples, passing: bool = True,
                approve: bool = True, policy=None, generator: dict | None = None, prefix: str = "m",
                **extra) -> tuple[str, str]:
    """Register a version gated on ``samples`` under a fresh model name (``PREFIX<n>-generator``: other test
    modules that import this helper pass their own prefix); promote it if asked."""
    from synthgate.data.canonical import pixel_hashes
    from synthgate.evaluation.evaluate import evaluation_hash
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy
    from tests.unit.test_gates import _evaluation

    name = f"{prefix}{next(_counter)}-generator"
    d = tmp / name
    d.mkdir()
    over = {} if passing else {"copies": 3}
    e = _evaluation(**over, **extra)
    e["real"]["path"] = str(d / "MedNIST")
    e["synthetic"].update(path=str(samples.root), content_hash=samples.content_hash, num_images=120,
                          counts={"a": 60, "b": 60}, generator=dict(generator or GENERATOR),
                          image_sha256=pixel_hashes(np.asarray(samples.images)))
    e["evaluation_hash"] = evaluation_hash(e)
    (d / "evaluation.json").write_text(json.dumps(e))
    (d / "report.html").write_text("<html><body>report with real training images</body></html>")
    from synthgate.evaluation.report import PUBLIC_MARK

    (d / "report_public.html").write_text(f"<html><body>{PUBLIC_MARK} public report</body></html>")
    gate(d / "evaluation.json", policy or GatePolicy(), d / "gate.json")
    r = register(model_dir, d / "evaluation.json", d / "gate.json", uri=uri, name=name)
    if policy is not None:  # the gatekeeper decides under its pin, set by an owner (the admin), never the registrant's
        import yaml

        from synthgate.registry.registry import pin_policy

        (d / "policy.yaml").write_text(yaml.safe_dump(policy.model_dump(mode="json")))
        pin_policy(name, d / "policy.yaml", uri)
    if approve and passing:
        promote(name, r.version, uri=uri)
    return name, r.version


def test_publish_list_pull_verify_s3(mlflow_server, s3_env, model_dir, samples, tmp_path):
    name, version = _registered(tmp_path, mlflow_server, model_dir, samples)
    store = f"s3://{BUCKET}/datasets"
    r = publish(name, store, samples=samples.root, tracking_uri=mlflow_server, config=PublishConfig(shard_size=50))
    assert (r.name, r.version, r.num_images) == (f"{name.removesuffix('-generator')}-synthetic", "v1", 120)
    assert r.manifest["samples_source"] == "evaluated" and r.manifest["dataset"]["shards"] == 3
    paths = {f["path"] for f in r.manifest["files"]}
    assert {"DATACARD.md", "report.html", "evaluation.json", "gate.json", "labels.csv", "png/a.zip",
            "images/shard-00000.npz", "images/shard-00002.npz"} <= paths
    assert r.manifest["model"] | {"name": name, "version": "1", "alias": "approved", "gate_passed": True} \
        == r.manifest["model"]
    # nothing left under staging; the manifest is in place
    keys = [o["Key"] for o in _s3_client(s3_env).list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert not [k for k in keys if "/.staging/" in k] and f"datasets/{r.name}/v1/manifest.json" in keys

    listed = list_datasets(store)
    assert [(d["name"], d["version"], d["num_images"]) for d in listed] == [(r.name, "v1", 120)]

    out = tmp_path / "pulled"
    p = pull(r.name, out, store, tracking_uri=mlflow_server, verify_images=True)
    assert (p.version, p.num_files, p.status) == ("v1", len(paths), "approved")
    assert json.loads((out / "pull.json").read_text())["content_verified"] == 120  # every image re-hashed
    images = np.concatenate([np.load(out / f"images/shard-{i:05d}.npz")["images"] for i in range(3)])
    np.testing.assert_array_equal(images, np.asarray(samples.images))
    with zipfile.ZipFile(out / "png" / "b.zip") as zf:
        names = zf.namelist()
        assert len(names) == 60
        from PIL import Image

        first = np.asarray(Image.open(io.BytesIO(zf.read(names[0]))))
        np.testing.assert_array_equal(first, np.asarray(samples.images)[int(names[0][:6]), ..., 0])
    card = (out / "DATACARD.md").read_text()
    assert f"{name} version 1" in card and "| a | 60 |" in card and "memorization.max_flagged_copies" in card
    page = (out / "report.html").read_text()  # the signed release first, then the registered public report
    assert page.index("Released: <span class=ok>the release gate PASSED") < page.index("public report")
    assert json.loads((out / "pull.json").read_text())["status"] == "approved"
    # publishing the same content again is a no-op; a completed target is not pulled into again
    again = publish(name, store, samples=samples.root, tracking_uri=mlflow_server, config=PublishConfig(shard_size=50))
    assert again.already_published
    with pytest.raises(DataError, match="is not empty"):
        pull(r.name, out, store, tracking_uri=mlflow_server)


def test_images_flagged_as_copies_are_never_released(mlflow_server, model_dir, samples, tmp_path):
    """A policy that tolerates a few flagged images still releases none of them: the package leaves out
    every image the gate record or the evaluation flagged, and says so in the manifest and data card."""
    from synthgate.gates.policy import GatePolicy

    p = [1e-15, 0.5, 1e-15] + [0.6] * 117  # images 0 and 2 of the 120 are copies
    tolerant = GatePolicy.model_validate({"memorization": {"max_flagged_copies": 5}})
    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples, policy=tolerant,
                          memorization__per_image__p_combined=p)
    r = publish(name, tmp_path / "store", samples=samples.root, tracking_uri=mlflow_server)
    assert r.num_images == 118 and r.manifest["excluded"]["indices"] == [0, 2]
    assert r.manifest["dataset"]["evaluated_content_hash"] == samples.content_hash != r.manifest["dataset"]["content_hash"]
    assert "2 image(s) flagged as copies of training images are not released: 0, 2" in r.notes
    out = tmp_path / "pulled"
    pull(r.name, out, tmp_path / "store", tracking_uri=mlflow_server)
    import csv

    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert [int(x["source_index"]) for x in rows[:3]] == [1, 3, 4] and len(rows) == 118
    with np.load(out / "images" / "shard-00000.npz") as z:
        np.testing.assert_array_equal(z["images"][0], np.asarray(samples.images)[1])
    card = (out / "DATACARD.md").read_text()
    assert "**2 image(s) of the evaluated set were flagged as copies of training images and are not in this dataset**" \
        in card
    assert "an honest generator fails these rules with probability at most 0.01" in card


def test_only_the_attested_samples_are_published(mlflow_server, model_dir, samples, tmp_path):
    """What is published is what was signed: without the evaluated set at hand, publish refuses to sample
    afresh (the copy search never scanned fresh images; the gatekeeper would refuse them anyway)."""
    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples)
    with pytest.raises(PublishRefused, match="no sample set was given as the sample set .* was gated on"):
        publish(name, tmp_path / "store", samples=None, tracking_uri=mlflow_server)
    assert not (tmp_path / "store").exists() or not list_datasets(tmp_path / "store")


def test_a_latent_model_is_registered_released_published_and_pulled(mlflow_server, samples, tmp_path):
    """Issue 16: the latent family (a denoiser with its bundled autoencoder) goes through register,
    promote (the gatekeeper hashes the registry's copy of the weights, not the run's folder), publish
    and pull."""
    from synthgate.generators.config import AutoencoderConfig, GeneratorConfig
    from synthgate.generators.model import read_generator_info, weights_path
    from synthgate.generators.train import train
    from tests.unit.generators_helpers import make_dataset, quick

    ds = make_dataset(tmp_path / "ds", {"a": 8, "b": 8}, res=16, val_every=4)
    gcfg = GeneratorConfig(type="latent", size="tiny", autoencoder=AutoencoderConfig(
        kind="kl", steps=10, batch_size=8, cache_dir=tmp_path / "autoencoders"))
    run = train(ds.root, gcfg, quick(steps=2, checkpoint_every=2), tmp_path / "run")
    info = read_generator_info(run.model_dir)
    name, version = _registered(tmp_path, mlflow_server, run.model_dir, samples, generator={
        "model_dir": "model", **{k: info.get(k) for k in ("name", "type", "step", "dataset_content_hash")},
        "weights_sha256": sha256_file(weights_path(run.model_dir, "latent"))})
    shutil.rmtree(run.model_dir)  # the release is checked against the registry's copy
    r = publish(name, tmp_path / "store", samples=samples.root, tracking_uri=mlflow_server)
    assert r.manifest["samples_source"] == "evaluated" and r.num_images == 120
    assert r.manifest["model"] == {**r.manifest["model"], "name": name, "version": version}
    assert r.manifest["model"]["training_dataset_hash"] == ds.content_hash
    run_params = connect(mlflow_server).get_run(r.manifest["model"]["run_id"]).data.params
    assert run_params["generator.type"] == "latent"
    p = pull(r.name, tmp_path / "pulled", tmp_path / "store", tracking_uri=mlflow_server)
    assert p.status == "approved" and (p.path / "labels.csv").read_text().count("\n") == 121  # header + 120 images


def test_publish_refuses_unapproved_and_hand_set_alias(mlflow_server, model_dir, samples, tmp_path):
    store = tmp_path / "store"
    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples, approve=False)
    with pytest.raises(PublishRefused, match=f"{name} has no version @approved"):
        publish(name, store, samples=samples.root, tracking_uri=mlflow_server)
    bad, version = _registered(tmp_path, mlflow_server, model_dir, samples, passing=False)
    connect(mlflow_server).set_registered_model_alias(bad, "approved", version)  # bypassing synthgate promote
    with pytest.raises(PublishRefused, match="(?s)holds @approved but is not released: .*no signed attestation"):
        publish(bad, store, samples=samples.root, tracking_uri=mlflow_server)
    assert list_datasets(store) == []
    # for `dvc repro`: "nothing approved yet" is recorded and exits 0; a failed gate still fails
    rec = tmp_path / "published.json"
    res = run_cli("publish", name, "--if-approved", "--store", str(store), "--record", str(rec),
                  "--tracking-uri", mlflow_server)
    assert res.code == 0 and "not published" in res.stderr
    assert json.loads(rec.read_text())["published"] is False
    res = run_cli("publish", bad, "--if-approved", "--store", str(store), "--tracking-uri", mlflow_server)
    assert res.code == 1 and "is not released" in res.stderr
    with pytest.raises(DataError, match="no registered model 'nope'"):
        publish("nope", store, tracking_uri=mlflow_server)


def test_publish_refuses_an_edited_gate_record(mlflow_server, model_dir, samples, tmp_path):
    """A failed version whose gate.json (and its gate.sha256 / gate.passed tags) were rewritten to
    "passed" and whose alias was set by hand: publish recomputes the decision and refuses."""
    from synthgate.utils import sha256_file

    client = connect(mlflow_server)
    bad, version = _registered(tmp_path, mlflow_server, model_dir, samples, passing=False)
    g = json.loads((tmp_path / bad / "gate.json").read_text())
    g["passed"] = True
    for r in g["rules"]:
        r["passed"] = True
    forged = tmp_path / "forged" / "gate.json"
    forged.parent.mkdir()
    forged.write_text(json.dumps(g))
    run_id = client.get_model_version(bad, version).run_id
    client.log_artifact(run_id, str(forged), "gate")
    client.set_model_version_tag(bad, version, "gate.sha256", sha256_file(forged))
    client.set_model_version_tag(bad, version, "gate.passed", "true")
    client.set_registered_model_alias(bad, "approved", version)
    store = tmp_path / "store"
    # the model still bundles the honest record: refused before the verdict is recomputed
    with pytest.raises(PromotionRefused, match=rf"{bad} version {version}: the gate record bundled in the model is "
                                               "not the one registered with the version"):
        publish(bad, store, samples=samples.root, tracking_uri=mlflow_server)
    assert list_datasets(store) == []


def test_tampered_truncated_and_missing_objects(mlflow_server, s3_env, model_dir, samples, tmp_path):
    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples)
    store = f"s3://{BUCKET}/tamper"
    r = publish(name, store, samples=samples.root, tracking_uri=mlflow_server)
    s3 = _s3_client(s3_env)
    key = f"tamper/{r.name}/v1/labels.csv"
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=original.replace(b",a,", b",b,", 1))  # same size, other bytes
    with pytest.raises(VerificationFailed, match=r"labels.csv: sha256 .* differs from the manifest"):
        pull(r.name, tmp_path / "t1", store, tracking_uri=mlflow_server)
    assert not (tmp_path / "t1" / "labels.csv").exists() and not (tmp_path / "t1" / "manifest.json").exists()
    s3.put_object(Bucket=BUCKET, Key=key, Body=original[:-10])
    with pytest.raises(VerificationFailed, match=r"labels.csv: the store holds \d+ bytes, the manifest says"):
        pull(r.name, tmp_path / "t2", store, tracking_uri=mlflow_server)
    s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(VerificationFailed, match="labels.csv: listed in the manifest but missing from the store"):
        pull(r.name, tmp_path / "t3", store, tracking_uri=mlflow_server)


def test_revoked_version_is_not_pulled(mlflow_server, model_dir, samples, tmp_path):
    """A revocation is a signed statement: a moved or deleted alias revokes nothing; the gatekeeper's
    revocation of the model version (or of the dataset) stops every later pull; --allow-revoked is recorded."""
    from synthgate.registry.gatekeeper_app import call

    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples)
    store = tmp_path / "store"
    r = publish(name, store, samples=samples.root, tracking_uri=mlflow_server)
    connect(mlflow_server).delete_registered_model_alias(name, "approved")
    assert pull(r.name, tmp_path / "still", store).status == "approved"  # an alias is not a revocation
    call("/v1/revocations", {"subject": f"{name}/1", "model": name, "reason": "a copy found by a reader"})
    with pytest.raises(DatasetRevoked, match=f"(?s){r.name}:v1 .*{name} version 1.* was revoked at .* a copy found"):
        pull(r.name, tmp_path / "out", store)
    assert not (tmp_path / "out").exists()
    p = pull(f"{r.name}:v1", tmp_path / "out", store, allow_revoked=True)
    assert p.status == "revoked (allowed)"
    assert "a copy found by a reader" in json.loads((tmp_path / "out" / "pull.json").read_text())["why"]
    # through the CLI: refused with the reason, exit 1, no traceback
    res = run_cli("pull", r.name, "--to", str(tmp_path / "cli"), "--store", str(store), "--tracking-uri",
                   mlflow_server)
    assert res.code == 1 and "was revoked" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("crash_at", ["copy", "manifest"])
def test_killed_publish_leaves_no_visible_dataset(mlflow_server, s3_env, model_dir, samples, tmp_path,
                                                  monkeypatch, crash_at):
    from synthgate import stores

    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples)
    store = f"s3://{BUCKET}/killed-{crash_at}"
    calls = {"n": 0}
    real_copy, real_put_bytes, real_delete = stores.S3Store.copy, stores.S3Store.put_bytes, stores.S3Store.delete_prefix
    real_create = stores.S3Store.create_bytes

    def copy(self, src, dst):
        calls["n"] += 1
        if crash_at == "copy" and calls["n"] == 3:
            raise KeyboardInterrupt  # the process dies half way through moving files into place
        return real_copy(self, src, dst)

    def put_bytes(self, key, data):
        if crash_at == "manifest" and key.endswith("manifest.json"):
            raise KeyboardInterrupt  # dies right before the manifest
        return real_put_bytes(self, key, data)

    def create_bytes(self, key, data):  # the manifest is committed with a conditional create
        if crash_at == "manifest" and key.endswith("manifest.json"):
            raise KeyboardInterrupt
        return real_create(self, key, data)

    monkeypatch.setattr(stores.S3Store, "copy", copy)
    monkeypatch.setattr(stores.S3Store, "put_bytes", put_bytes)
    monkeypatch.setattr(stores.S3Store, "create_bytes", create_bytes)
    monkeypatch.setattr(stores.S3Store, "delete_prefix", lambda self, prefix: None)  # SIGKILL: no clean-up
    with pytest.raises(KeyboardInterrupt):
        publish(name, store, samples=samples.root, tracking_uri=mlflow_server)
    keys = [o["Key"] for o in _s3_client(s3_env).list_objects_v2(Bucket=BUCKET, Prefix=f"killed-{crash_at}/")
            .get("Contents", [])]
    assert keys and not [k for k in keys if k.endswith("manifest.json")]  # debris, but no dataset
    assert list_datasets(store) == []
    with pytest.raises(DataError, match="no dataset"):
        pull(f"{name.removesuffix('-generator')}-synthetic", tmp_path / "out", store, tracking_uri=mlflow_server)
    # a later publish completes over the debris
    monkeypatch.setattr(stores.S3Store, "copy", real_copy)
    monkeypatch.setattr(stores.S3Store, "put_bytes", real_put_bytes)
    monkeypatch.setattr(stores.S3Store, "create_bytes", real_create)
    monkeypatch.setattr(stores.S3Store, "delete_prefix", real_delete)
    assert publish(name, store, samples=samples.root, tracking_uri=mlflow_server).num_images == 120
    assert len(list_datasets(store)) == 1


def test_interrupted_pull_resumes(mlflow_server, model_dir, samples, tmp_path, monkeypatch):
    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples)
    store = tmp_path / "store"
    r = publish(name, store, samples=samples.root, tracking_uri=mlflow_server, config=PublishConfig(shard_size=40))
    total = sum(f["size"] for f in r.manifest["files"])
    big = max(r.manifest["files"], key=lambda f: f["size"])["path"]
    real_get = FileStore.get_file

    def dropped(self, key, local, offset=0):
        if key.endswith(big):
            with open(self._path(key), "rb") as fin, open(local, "ab" if offset else "wb") as fout:
                fout.write(fin.read()[offset:offset + 1000])
            raise StoreError(f"{key}: connection reset")
        return real_get(self, key, local, offset)

    monkeypatch.setattr(FileStore, "get_file", dropped)
    out = tmp_path / "out"
    with pytest.raises(StoreError, match="connection reset"):
        pull(r.name, out, store, tracking_uri=mlflow_server, workers=1)
    assert (out / (big + ".part")).stat().st_size == 1000 and not (out / "manifest.json").exists()
    monkeypatch.setattr(FileStore, "get_file", real_get)
    p = pull(r.name, out, store, tracking_uri=mlflow_server)
    assert p.resumed == 1 and p.bytes < total and p.num_files == len(r.manifest["files"])
    assert (out / "manifest.json").exists() and not list(out.rglob("*.part"))

    # a short read (a download that stops early without an error) is resumed within the same pull
    def short(self, key, local, offset=0):
        with open(self._path(key), "rb") as fin, open(local, "ab" if offset else "wb") as fout:
            data = fin.read()[offset:]
            fout.write(data[: max(1, len(data) // 2)])
        return max(1, len(data) // 2)

    monkeypatch.setattr(FileStore, "get_file", short)
    q = pull(r.name, tmp_path / "short", store, tracking_uri=mlflow_server)
    assert q.num_files == len(r.manifest["files"])


def test_bad_names_targets_buckets_and_credentials(mlflow_server, s3_env, tmp_path, monkeypatch):
    store = tmp_path / "store"
    for ref in ("a/b", "../x", "x:..", "x:v1/.."):
        with pytest.raises(ConfigError, match="is not allowed"):
            pull(ref, tmp_path / "o", store)
    res = run_cli("pull", "../etc", "--to", str(tmp_path / "o"), "--store", str(store))
    assert res.code == 2 and "dataset name '../etc' is not allowed" in res.stderr
    res = run_cli("publish", "m-generator", "--name", "a/b", "--store", str(store), "--tracking-uri", mlflow_server)
    assert res.code == 2 and "dataset name 'a/b' is not allowed" in res.stderr

    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        list_datasets("s3://no-such-bucket/x")

    from botocore.stub import Stubber

    st = open_store(f"s3://{BUCKET}")
    with Stubber(st.client) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
        with pytest.raises(StoreError, match="denied .*wrong or insufficient credentials") as e:
            st.check()
    assert "testing" not in e.value.message and "testing" not in (e.value.hint or "")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    res = run_cli("datasets", "--store", f"s3://{BUCKET}", env={"AWS_ACCESS_KEY_ID": None})
    assert res.code == 2 and "no S3 credentials" in res.stderr and "s3cr3t" not in res.stderr + res.stdout

    from synthgate.registry.server import free_port

    res = run_cli("datasets", "--store", f"s3://{BUCKET}", env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                                                                "AWS_ACCESS_KEY_ID": "testing"})
    assert res.code == 2 and "cannot reach the S3 endpoint http://127.0.0.1:" in res.stderr

    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("mine")
    FileStore(store).put_bytes("d-synthetic/v1/manifest.json", json.dumps({"model": {}, "files": []}).encode())
    with pytest.raises(SynthgateError, match="no version of d-synthetic in .* carries a valid gatekeeper signature"):
        pull("d-synthetic", full, store, allow_revoked=True, tracking_uri=mlflow_server)  # unsigned: never chosen
    assert (full / "x.txt").read_text() == "mine"


def test_params_publish_section_drives_the_stage(mlflow_server, model_dir, samples, tmp_path):
    from synthgate import stages

    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples)
    p = Params.model_validate({"publish": {"store": str(tmp_path / "pstore"), "png": False, "shard_size": 100,
                                           "licence": "CC BY 4.0"}})
    r = stages.publish(p, model=name, samples=samples.root, tracking_uri=mlflow_server)
    assert r.manifest["dataset"]["shards"] == 2 and not any(f["path"].startswith("png/") for f in r.manifest["files"])
    assert "CC BY 4.0" in (tmp_path / "pstore" / r.name / "v1" / "DATACARD.md").read_text()


# --------------------------------------------------------------------------- training checkpoints
def test_training_checkpoints_mirrored_to_s3_and_restored(s3_env, tmp_path):
    """`synthgate train --checkpoint-uri s3://...`: a second pod on an empty disk resumes from S3."""
    from synthgate import stages
    from synthgate.config import Params
    from tests.unit.generators_helpers import make_dataset, quick, single_thread, tiny

    ds = make_dataset(tmp_path / "ds")
    uri = f"s3://{BUCKET}/checkpoints/run-1"
    params = Params(generator=tiny(), train=quick(steps=4, checkpoint_every=2))
    with single_thread():
        stages.train(params, dataset=ds.root, out=tmp_path / "pod1", checkpoint_uri=uri)
        keys = [o["Key"] for o in _s3_client(s3_env).list_objects_v2(Bucket=BUCKET, Prefix="checkpoints/run-1/")
                ["Contents"]]
        assert sorted(keys) == [f"checkpoints/run-1/checkpoints/step_0000000{s}.pt{x}" for s in (2, 4)
                                for x in ("", ".sha256")]
        more = stages.train(Params(generator=tiny(), train=quick(steps=6, checkpoint_every=2)), dataset=ds.root,
                            out=tmp_path / "pod2", checkpoint_uri=uri)
    assert more.resumed_from == 4 and more.steps == 6


def test_a_dataset_released_by_override_says_so_at_the_top_of_its_report(mlflow_server, model_dir, samples, tmp_path):
    """Issue #35: the published report.html said "FAILED" and never that the version was released by override. It
    now opens with the signed release: override, who, when, why and the failing rules; the gatekeeper signs only
    that page (it recomputes it from the registered report and its own release)."""
    from synthgate.registry.registry import promote

    name, version = _registered(tmp_path, mlflow_server, model_dir, samples, passing=False, approve=False)
    promote(name, version, uri=mlflow_server, force=True, reason="committee decision 12: teaching only")
    r = publish(name, tmp_path / "store", samples=samples.root, tracking_uri=mlflow_server)
    out = tmp_path / "pulled"
    pull(r.name, out, tmp_path / "store", tracking_uri=mlflow_server)
    page = (out / "report.html").read_text()
    top = page[: page.index("public report")]
    assert "Released by OVERRIDE: <span class=bad>the release gate FAILED" in top
    assert "committee decision 12: teaching only" in top and "memorization.max_flagged_copies" in top
    assert "the owner <b>" in top and os.environ["MLFLOW_TRACKING_USERNAME"] in top
