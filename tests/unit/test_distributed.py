"""DDP training under torchrun (2 CPU ranks, gloo) and the Kubeflow TrainJob builder."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml

from synthgate.errors import ConfigError
from synthgate.generators.config import SampleConfig
from synthgate.generators.distributed import DistContext, setup
from synthgate.generators.model import load_generator
from synthgate.generators.train import list_checkpoints
from synthgate.kubeflow.trainjob import TrainJobSpec, fetch_dataset, trainjob_manifest
from tests.helpers import REPO, run_cli
from tests.unit.generators_helpers import make_dataset

# A torchrun worker: runs `synthgate train` (the CLI, as a user would) once per entry of the spec and
# after each run writes this rank's trained state and its first local loss. Test-only hook: it
# wraps build_task to get hold of the task; the production code has no debugging switch.
WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    import synthgate.generators.train as T
    from synthgate.cli import main

    tasks = []
    real_build = T.build_task

    def build_task(*args, **kwargs):
        task = real_build(*args, **kwargs)
        real_step, losses = task.step, []
        def step(batches, gen):
            out = real_step(batches, gen)
            losses.append(float(out["loss"]))
            return out
        task.step, task.first_losses = step, losses
        tasks.append(task)
        return task

    T.build_task = build_task
    rank = os.environ["RANK"]
    for tag, argv in json.load(open(sys.argv[1])):
        main(argv)
        task = tasks[-1]
        state = {f"{m}.{n}": t.detach().cpu().clone() for m, mod in task.modules.items()
                 for n, t in mod.state_dict().items()}
        state |= {f"ema.{i}": p.detach().cpu().clone() for i, p in enumerate(task.ema.shadow_params)}
        torch.save({"state": state, "losses": task.first_losses, "world": os.environ["WORLD_SIZE"]},
                   f"{tag}-rank{rank}.pt")
""")


def torchrun(tmp_path, runs, nproc=2, timeout=150):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "spec.json").write_text(json.dumps(runs))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "COLUMNS": "200", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "worker.py", "spec.json"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-6000:]
    return log


def params_file(path, kind, **train):
    base = {"steps": 4, "batch_size": 3, "log_every": 2, "checkpoint_every": 2, "sample_grid_every": 0,
            "mlflow": False, "device": "cpu"}
    gen = {"type": kind, "size": "tiny"} | ({"n_critic": 2} if kind == "gan" else {})
    path.write_text(yaml.safe_dump({"generator": gen, "train": base | train}))
    return str(path)


def rank_states(tmp_path, tag, world=2):
    out = [torch.load(tmp_path / f"{tag}-rank{r}.pt") for r in range(world)]
    assert all(o["world"] == str(world) for o in out)
    return out


def assert_same_state(a, b):
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.slow
def test_diffusion_ddp_two_ranks_trains_saves_once_and_resumes_exactly(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    p = params_file(tmp_path / "params.yaml", "diffusion", sample_grid_every=2, sample_grid_per_class=2,
                    sample_grid_steps=2)
    train = ["train", "--params", p, "--dataset", str(ds.root)]
    log = torchrun(tmp_path, [
        ["full", [*train, "--out", "full"]],
        ["part", [*train, "--out", "split", "--steps", "2"]],
        ["resumed", [*train, "--out", "split"]],
    ])
    assert "world size 2 (gloo, cpu)" in log and "3 images per rank and step, global batch 6" in log
    assert log.count("distributed data parallel") == 3  # rank 0 only, once per run
    assert "resuming from" in log and "step_00000002.pt (step 2)" in log

    # every rank ends with the same weights and EMA, although their batches and noise differed
    full = rank_states(tmp_path, "full")
    assert full[0]["losses"][0] != full[1]["losses"][0]
    assert_same_state(full[0]["state"], full[1]["state"])
    # DDP resume: 2 + 2 steps (all ranks reading rank 0's checkpoint) == 4 steps in one go
    resumed = rank_states(tmp_path, "resumed")
    for r in range(2):
        assert_same_state(full[0]["state"], resumed[r]["state"])

    # rank 0 wrote one model folder, the checkpoints and the grids
    run = tmp_path / "full"
    assert [c.name for c in list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt"]
    assert sorted(g.name for g in (run / "grids").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    assert not list(run.rglob("*.tmp-*"))
    gen = load_generator(run / "model", "cpu")
    images = gen.sample(np.array([0, 1]), SampleConfig(sampler="ddim", steps=2, per_class=1))
    assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8
    info = json.loads((run / "model" / "synthgate_generator.json").read_text())
    assert info["step"] == 4 and info["classes"] == ["lung", "bone"]
    ckpt = torch.load(run / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert ckpt["world_size"] == 2
    for k, t in ckpt["task"]["modules"]["unet"].items():
        torch.testing.assert_close(t, full[0]["state"][f"unet.{k}"], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_gan_ddp_with_gradient_penalty_keeps_ranks_identical(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    p = params_file(tmp_path / "params.yaml", "gan", steps=3, checkpoint_every=3, log_every=3)
    log = torchrun(tmp_path, [["gan", ["train", "--params", p, "--dataset", str(ds.root), "--out", "gan"]]])
    assert "world size 2" in log
    gan = rank_states(tmp_path, "gan")
    assert gan[0]["losses"][0] != gan[1]["losses"][0]  # different real batches, z and GP interpolates
    # G and D (with the GP's double backward through the DDP-wrapped critic) stay in step
    assert_same_state(gan[0]["state"], gan[1]["state"])
    assert any(k.startswith("discriminator.") for k in gan[0]["state"])
    images = load_generator(tmp_path / "gan" / "model", "cpu").sample(np.array([0, 1]), SampleConfig(per_class=1))
    assert images.shape == (2, 16, 16, 1)


@pytest.mark.slow
def test_latent_ddp_ranks_share_rank_0s_autoencoder_and_stay_identical(tmp_path):
    """Rank 0 trains the autoencoder into the cache; the other rank loads it (they agree on its
    sha256 before the first step) and both denoisers stay in step."""
    ds = make_dataset(tmp_path / "ds")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "generator": {"type": "latent", "size": "tiny", "denoiser": "unet",
                      "autoencoder": {"steps": 6, "batch_size": 4, "cache_dir": str(tmp_path / "ae")}},
        "train": {"steps": 3, "batch_size": 3, "log_every": 3, "checkpoint_every": 3, "sample_grid_every": 0,
                  "mlflow": False, "device": "cpu"}}))
    log = torchrun(tmp_path, [["latent", ["train", "--params", str(path), "--dataset", str(ds.root), "--out", "lat"]]])
    assert "world size 2" in log and log.count("Training the KL autoencoder") == 1  # rank 0 trained it, once
    lat = rank_states(tmp_path, "latent")
    assert lat[0]["losses"][0] != lat[1]["losses"][0]
    assert_same_state(lat[0]["state"], lat[1]["state"])
    assert len(list((tmp_path / "ae").iterdir())) == 1
    images = load_generator(tmp_path / "lat" / "model", "cpu").sample(np.array([0, 1]), SampleConfig(per_class=1,
                                                                                                   steps=2))
    assert images.shape == (2, 16, 16, 1)


def test_a_plain_process_has_an_inert_context():
    ctx = setup("cpu", env={})
    assert ctx == DistContext(device=torch.device("cpu")) and not ctx.enabled and ctx.is_main
    x = torch.tensor([1.0, 2.0])
    assert ctx.mean(x) is x and ctx.first_step(torch.tensor(-1)) == -1 and ctx.first_step(torch.tensor(3)) == 3
    assert ctx.all_true(False) is False and ctx.broadcast({"a": 1}) == {"a": 1}
    ctx.barrier()
    ctx.close()
    assert setup("cpu", env={"WORLD_SIZE": "1", "RANK": "0"}).world_size == 1


def test_trainjob_manifest_structure():
    args = ["train", "--dataset", "/data/validated", "--out", "/data/runs/r1"]
    m = trainjob_manifest(TrainJobSpec("synthgate-train-r1", "ghcr.io/synthgate/synthgate:0.1.0-cuda", 2, 4, args,
                                       "ml", dataset_pvc="synthgate-data", memory="64Gi"))
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["metadata"]["name"] == "synthgate-train-r1" and m["metadata"]["namespace"] == "ml"
    spec = m["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    tr = spec["trainer"]
    assert tr["image"] == "ghcr.io/synthgate/synthgate:0.1.0-cuda" and tr["numNodes"] == 2
    assert tr["numProcPerNode"] == 4
    assert tr["command"] == ["python", "-m", "torch.distributed.run", "-m", "synthgate"] and tr["args"] == args
    assert tr["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 4, "memory": "64Gi"}
    env = {e["name"]: e for e in tr["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "synthgate-s3"
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]["name"] == "synthgate-endpoints"
    assert not any(k.startswith("PET_") for k in env)  # reserved for the torch runtime
    (ov,) = spec["podTemplateOverrides"]
    assert ov["targetJobs"] == [{"name": "node"}]
    pod = ov["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == "synthgate-data"
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    (c,) = pod["containers"]
    assert c["name"] == "node" and {v["mountPath"] for v in c["volumeMounts"]} == {"/data", "/dev/shm"}
    json.dumps(m)  # plain JSON, ready for CustomObjectsApi.create_namespaced_custom_object

    s3 = trainjob_manifest(TrainJobSpec("t", "img", 1, 1, args, "ml", dataset_uri="s3://bucket/validated",
                                        patch_api="runtimePatches"))
    assert s3["spec"]["trainer"]["command"][:2] == ["bash", "-c"] and "fetch-dataset" in s3["spec"]["trainer"]["command"][2]
    assert "/scratch/dataset" in s3["spec"]["trainer"]["command"][2]
    assert {"name": "SYNTHGATE_DATASET_URI", "value": "s3://bucket/validated"} in s3["spec"]["trainer"]["env"]
    (patch,) = s3["spec"]["runtimePatches"]
    job = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = job["template"]["spec"]["template"]["spec"]
    assert job["name"] == "node" and pod["tolerations"] == m["spec"]["podTemplateOverrides"][0]["spec"]["tolerations"]
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]  # node-local copy of the dataset
    with pytest.raises(ValueError):
        trainjob_manifest(TrainJobSpec("t", "img", 0, 1, args, "ml"))


def test_example_manifests_match_the_builder():
    def load(name):
        return [d for d in yaml.safe_load_all((REPO / "k8s" / "training" / name).read_text()) if d]

    image, train = "ghcr.io/synthgate/synthgate:0.1.0-cuda", ["train", "--params", "/data/params.yaml"]
    out = ["--out", "/data/runs/diffusion-base"]
    assert load("trainjob.yaml") == [trainjob_manifest(TrainJobSpec(
        "synthgate-train", image, 2, 4, [*train, "--dataset", "/data/validated", *out], "synthgate",
        dataset_pvc="synthgate-train-data", cpu="32", memory="128Gi"))]
    assert load("trainjob-s3.yaml") == [trainjob_manifest(TrainJobSpec(
        "synthgate-train-s3", image, 2, 4, [*train, "--dataset", "/scratch/dataset", *out], "synthgate",
        dataset_pvc="synthgate-train-data", dataset_uri="s3://synthgate-datasets/validated/mednist",
        cpu="32", memory="128Gi"))]
    (pvc,) = load("pvc.yaml")
    assert pvc["metadata"]["name"] == "synthgate-train-data" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    (pj,) = load("pytorchjob.yaml")
    assert pj["apiVersion"] == "kubeflow.org/v1" and pj["kind"] == "PyTorchJob"
    for role in ("Master", "Worker"):
        pod = pj["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["name"] == "pytorch" and c["image"] == image
        assert "-m synthgate train" in c["args"][0] and '--master_addr "$MASTER_ADDR"' in c["args"][0]
        assert {"secretRef": {"name": "synthgate-s3"}} in c["envFrom"]
        assert {"configMapRef": {"name": "synthgate-endpoints"}} in c["envFrom"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == int(pj["spec"]["nprocPerNode"])
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert {v["name"] for v in pod["volumes"]} == {"data", "dshm"}


def test_fetch_dataset_copies_a_store_folder(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    out = fetch_dataset(str(ds.root), tmp_path / "copy")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ds.root.iterdir())


# --------------------------------------------------------------------------------------------
# run_trainjob: the pipeline's train-distributed step (fake Kubernetes API, moto S3)


class FakeTrainJobs:
    """CustomObjectsApi for TrainJobs: records the created body and answers ``get`` with ``conditions``
    one poll after another; when it first reports Complete it plays node rank 0's upload-model."""

    def __init__(self, conditions, model_files=None):
        self.conditions, self.model_files = list(conditions), model_files or {}
        self.created, self.polls = [], 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append((group, version, namespace, plural, body))
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        from synthgate.stores import open_store

        (_, _, ns, _, body) = self.created[-1]
        assert (group, version, plural, namespace, name) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs", ns,
                                                             body["metadata"]["name"])
        cond = self.conditions[min(self.polls, len(self.conditions) - 1)]
        self.polls += 1
        if cond and cond["type"] == "Complete":
            uri = {e["name"]: e.get("value") for e in body["spec"]["trainer"]["env"]}["SYNTHGATE_MODEL_URI"]
            store = open_store(uri)
            for key, data in self.model_files.items():
                store.put_bytes(key, data)
        return {**body, "status": {"conditions": [{**cond, "status": "True"}] if cond else []}}


class Artifact:
    def __init__(self, uri="", path=""):
        self.uri, self.path, self.metadata = uri, path, {}


@pytest.fixture
def s3(monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_ENDPOINT_URL", "SYNTHGATE_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="mlpipeline")
        yield


def _run(api, tmp_path, uri="s3://mlpipeline/v2/artifacts/run-1/validate/validated", **kw):
    from synthgate.kubeflow.trainjob import run_trainjob

    gen = Artifact(path=str(tmp_path / "generator"))
    out = run_trainjob(json.dumps({"train": {"steps": 7}}), {"generator.type": "gan", "generator.size": "",
                                                             "train.steps": 0},
                       Artifact(uri=uri), gen, 2, 4, "ghcr.io/synthgate/synthgate:0.1.0-cuda", api=api,
                       namespace="kubeflow-user", name="synthgate-train-t1", poll_s=0, sleep=lambda s: None,
                       env={}, **kw)
    return out, gen


def test_run_trainjob_submits_polls_and_downloads_the_model(tmp_path, s3):
    info = {"generator": {"type": "gan"}, "dataset_content_hash": "abc"}
    api = FakeTrainJobs([None, {"type": "Created"}, {"type": "Complete"}],
                        {"synthgate_generator.json": json.dumps(info).encode(), "g/weights.safetensors": b"w"})
    out, gen = _run(api, tmp_path)
    ((group, version, ns, plural, body),) = api.created
    assert (group, version, ns, plural) == ("trainer.kubeflow.org", "v1alpha1", "kubeflow-user", "trainjobs")
    assert api.polls == 3
    tr = body["spec"]["trainer"]
    assert tr["numNodes"] == 2 and tr["numProcPerNode"] == 4
    assert tr["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 4}
    assert tr["image"] == "ghcr.io/synthgate/synthgate:0.1.0-cuda"
    script = tr["command"][2]
    assert tr["command"][:2] == ["bash", "-c"]
    assert script.index("SYNTHGATE_PARAMS_JSON") < script.index("fetch-dataset") < \
        script.index("python -m torch.distributed.run -m synthgate") < script.index("upload-model /tmp/out/model")
    assert 'if [ "${PET_NODE_RANK:-0}" = "0" ]' in script
    assert tr["args"] == ["train", "--params", "/tmp/synthgate-params.json", "--dataset", "/scratch/dataset",
                          "--out", "/tmp/out"]
    env = {e["name"]: e.get("value") for e in tr["env"]}
    assert env["SYNTHGATE_DATASET_URI"] == "s3://mlpipeline/v2/artifacts/run-1/validate/validated"
    assert env["SYNTHGATE_MODEL_URI"] == "s3://mlpipeline/trainjobs/synthgate-train-t1/"
    params = json.loads(env["SYNTHGATE_PARAMS_JSON"])  # params_json with the step's overrides
    assert params["train"]["steps"] == 7 and params["generator"]["type"] == "gan"
    # the model rank 0 uploaded is now the Model artifact
    assert out == tmp_path / "generator"
    assert (out / "g/weights.safetensors").read_bytes() == b"w"
    assert gen.metadata["type"] == "gan" and gen.metadata["dataset_content_hash"] == "abc"
    assert gen.metadata["trainjob"] == "kubeflow-user/synthgate-train-t1" and gen.metadata["num_nodes"] == 2


def test_run_trainjob_tracking_uri_replaces_the_config_maps(tmp_path, s3):
    info = {"generator": {"type": "gan"}, "dataset_content_hash": "abc"}
    api = FakeTrainJobs([{"type": "Complete"}], {"synthgate_generator.json": json.dumps(info).encode()})
    _run(api, tmp_path, tracking_uri="http://mlflow.team-b:5000")
    env = [e for e in api.created[0][4]["spec"]["trainer"]["env"] if e["name"] == "MLFLOW_TRACKING_URI"]
    assert env == [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.team-b:5000"}]  # no ConfigMap ref too
    api = FakeTrainJobs([{"type": "Complete"}], {"synthgate_generator.json": json.dumps(info).encode()})
    _run(api, tmp_path)
    env = [e for e in api.created[0][4]["spec"]["trainer"]["env"] if e["name"] == "MLFLOW_TRACKING_URI"]
    assert env[0]["valueFrom"]["configMapKeyRef"]["name"] == "synthgate-endpoints" and len(env) == 1


def test_run_trainjob_failed_raises_with_the_condition_message(tmp_path, s3):
    from synthgate.kubeflow.trainjob import TrainJobError

    api = FakeTrainJobs([{"type": "Created"}, {"type": "Failed", "message": "jobset node-1 failed: OOMKilled"}])
    with pytest.raises(TrainJobError, match="synthgate-train-t1 failed: jobset node-1 failed: OOMKilled"):
        _run(api, tmp_path)
    assert not (tmp_path / "generator").exists()


def test_run_trainjob_timeout_and_missing_model(tmp_path, s3):
    from synthgate.kubeflow.trainjob import TrainJobError

    with pytest.raises(TrainJobError, match="did not finish within 0 s"):
        _run(FakeTrainJobs([{"type": "Created"}]), tmp_path, timeout_s=0)
    with pytest.raises(TrainJobError, match="completed but left no model"):
        _run(FakeTrainJobs([{"type": "Complete"}]), tmp_path)


@pytest.mark.parametrize("uri", ["/tmp/kfp/pipeline_root/validate/validated", "file:///tmp/x", ""])
def test_run_trainjob_refuses_a_local_dataset(tmp_path, uri):
    from synthgate.kubeflow.trainjob import TrainJobError

    api = FakeTrainJobs([{"type": "Complete"}])
    with pytest.raises(TrainJobError, match="multi-node training needs a cluster with object storage"):
        _run(api, tmp_path, uri=uri)
    assert api.created == []


def test_artifact_uris_output_prefix_and_namespace(tmp_path):
    from synthgate.kubeflow.trainjob import TrainJobError, artifact_s3_uri, output_prefix, pod_namespace

    env = {"MLFLOW_S3_ENDPOINT_URL": "http://minio-service.kubeflow:9000"}
    assert artifact_s3_uri("minio://mlpipeline/v2/artifacts/r/validated", env) == (
        "s3://mlpipeline/v2/artifacts/r/validated", "http://minio-service.kubeflow:9000")
    assert artifact_s3_uri("minio://mlpipeline/a/b", {**env, "AWS_ENDPOINT_URL": "http://minio:9000"})[1] == \
        "http://minio:9000"
    assert artifact_s3_uri("s3://bucket/a/", {}) == ("s3://bucket/a", None)
    with pytest.raises(TrainJobError, match="no endpoint"):
        artifact_s3_uri("minio://mlpipeline/a", {})
    with pytest.raises(TrainJobError, match="gs:// storage is not supported"):
        artifact_s3_uri("gs://bucket/a", {})
    assert output_prefix("s3://mlpipeline/a", "job", {}) == "s3://mlpipeline/trainjobs/job/"
    assert output_prefix("s3://mlpipeline/a", "job", {"SYNTHGATE_ARTIFACTS_BUCKET": "models"}) == \
        "s3://models/trainjobs/job/"
    ns = tmp_path / "namespace"
    ns.write_text("team-a\n")
    assert pod_namespace({}, ns) == "team-a"
    assert pod_namespace({"POD_NAMESPACE": "team-b"}, tmp_path / "missing") == "team-b"
    with pytest.raises(TrainJobError, match="namespace"):
        pod_namespace({}, tmp_path / "missing")


def test_upload_model_cli_round_trip(tmp_path):
    model = tmp_path / "out" / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "w.bin").write_bytes(b"1")
    (model / "synthgate_generator.json").write_text("{}")
    assert run_cli("trainjob", "upload-model", str(model), str(tmp_path / "store")).code == 0
    assert run_cli("trainjob", "fetch-dataset", str(tmp_path / "store"), str(tmp_path / "back")).code == 0
    assert (tmp_path / "back" / "unet" / "w.bin").read_bytes() == b"1"
    assert run_cli("trainjob", "upload-model", str(tmp_path / "nothing")).code == 2
    r = run_cli("trainjob", "upload-model", str(tmp_path / "nothing"), str(tmp_path / "store2"))
    assert r.code == ConfigError.exit_code and "no model files" in r.stderr, r.output
