"""The Kubeflow pipelines: compiled YAML up to date and deterministic, GPU requests, Kubernetes
platform config, images, caching, thin components; ``synthgate pipeline submit`` plumbing and errors;
the ``synthgate.kubeflow.io`` glue (parameters, data source fetching)."""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from synthgate import __version__
from synthgate.errors import ConfigError, DataError
from tests.helpers import REPO, run_cli

STAGES = ("prepare", "validate", "train", "sample", "evaluate", "gate", "register", "promote", "publish")
GPU_STEPS = {"train", "sample", "evaluate", "publish"}


def _load(path: Path) -> tuple[dict, dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 2, f"{path}: expected the pipeline spec and its platform config"
    return docs[0], docs[1]


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory):
    """Every pipeline compiled once into a fresh folder (each compile takes seconds)."""
    from pipelines.compile import compile_all

    out = tmp_path_factory.mktemp("compiled")
    compile_all(out)
    return out


@pytest.fixture(scope="module")
def compiled(compiled_dir):
    """name -> (spec, platform config) of every compiled pipeline."""
    return {f.name: _load(f) for f in sorted(compiled_dir.glob("*.yaml"))}


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of the pipeline, including those inside conditions (name -> task spec)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _executors(spec: dict) -> dict[str, dict]:
    return {k.removeprefix("exec-"): v["container"] for k, v in spec["deploymentSpec"]["executors"].items()}


def _k8s(platform: dict) -> dict[str, dict]:
    return {k.removeprefix("exec-"): v
            for k, v in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items()}


# --------------------------------------------------------------------------------------------
# compiled files


def test_committed_yaml_is_up_to_date():
    """What CI runs: a stale pipelines/compiled/*.yaml fails here (recompile with `make pipelines`)."""
    env = {"SYNTHGATE_IMAGE": None, "SYNTHGATE_CUDA_IMAGE": None}
    r = run_cli("pipeline", "compile", "--check", cwd=REPO, env=env, timeout=120)
    assert r.code == 0, r.output
    assert "up to date" in r.stdout


def test_check_names_stale_and_missing_files(compiled_dir, tmp_path, capsys):
    from pipelines.compile import main, stale

    for f in compiled_dir.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "synthesis.yaml").write_text((tmp_path / "synthesis.yaml").read_text().replace("approved", "ok"))
    (tmp_path / "publish.yaml").unlink()
    assert sorted(stale(tmp_path)) == ["publish.yaml", "synthesis.yaml"]
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "synthesis.yaml" in err and "publish.yaml" in err and "make pipelines" in err
    assert not (tmp_path / "publish.yaml").exists()  # --check writes nothing


def test_compile_is_deterministic(compiled_dir, tmp_path):
    from pipelines.compile import compile_all

    a = {p.name: p.read_bytes() for p in sorted(compiled_dir.glob("*.yaml"))}
    b = {p.name: p.read_bytes() for p in compile_all(tmp_path / "b")}
    assert set(a) == {"synthesis.yaml", "synthesis-cpu.yaml", "publish.yaml", "publish-cpu.yaml"}
    assert a == b
    if not (os.environ.get("SYNTHGATE_IMAGE") or os.environ.get("SYNTHGATE_CUDA_IMAGE")):
        committed = {p.name: p.read_bytes() for p in (REPO / "pipelines/compiled").glob("*.yaml")}
        assert committed == a  # a fresh process (the --check test) and this one agree with the committed files


def test_compile_outside_the_repository_is_a_clear_error(tmp_path):
    r = run_cli("pipeline", "compile", cwd=tmp_path, timeout=120)
    assert r.code == 2 and "no pipelines/compile.py" in r.stderr and "Traceback" not in r.output


def test_pipeline_parameters_and_defaults(compiled):
    from synthgate.config import Params
    from synthgate.gates.policy import GatePolicy, load_policy

    spec, _ = compiled["synthesis.yaml"]
    assert spec["pipelineInfo"]["name"] == "synthgate-synthesis"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"source_uri", "dvc_repo", "dvc_rev", "generator_type", "generator_size", "train_steps",
                           "samples_per_class", "resolution", "gate_policy_yaml", "model_name", "auto_promote",
                           "alias", "publish_store", "tracking_uri", "params_json", "checkpoint_uri", "train_nodes",
                           "gpus_per_node"}
    assert params["auto_promote"]["parameterType"] == "BOOLEAN" and params["auto_promote"]["defaultValue"] is False
    assert params["train_nodes"]["parameterType"] == "NUMBER_INTEGER" and params["train_nodes"]["defaultValue"] == 1
    assert params["gpus_per_node"]["defaultValue"] == 1
    # multi-node training is a GPU-pipeline feature: the CPU pipeline has neither parameter
    cpu_params = compiled["synthesis-cpu.yaml"][0]["root"]["inputDefinitions"]["parameters"]
    assert set(params) - set(cpu_params) == {"train_nodes", "gpus_per_node"}
    assert all(p.get("description") for p in cpu_params.values())
    assert params["train_steps"]["parameterType"] == "NUMBER_INTEGER"
    assert params["publish_store"]["defaultValue"] == "" and params["checkpoint_uri"]["defaultValue"] == ""
    assert all(p.get("description") for p in params.values())  # the Kubeflow UI shows them
    # the defaults are the repository's params.yaml and gates.yaml
    p = Params.model_validate(json.loads(params["params_json"]["defaultValue"]))
    assert p.train.steps == yaml.safe_load((REPO / "params.yaml").read_text())["train"]["steps"]
    policy = GatePolicy.model_validate(yaml.safe_load(params["gate_policy_yaml"]["defaultValue"]))
    assert policy == load_policy(REPO / "gates.yaml")
    pub, _ = compiled["publish.yaml"]
    assert pub["pipelineInfo"]["name"] == "synthgate-publish"
    assert set(pub["root"]["inputDefinitions"]["parameters"]) == {"model_name", "store", "alias", "samples_per_class",
                                                                    "tracking_uri", "params_json"}


@pytest.mark.parametrize("name", ["synthesis.yaml", "synthesis-cpu.yaml"])
def test_flow_and_conditions(compiled, name):
    spec, _ = compiled[name]
    root = spec["root"]["dag"]["tasks"]
    # GPU pipeline: train sits in the Else branch of the multi-node If (test_multi_node_branch)
    trained_by, promote = ("condition-branches-1", "condition-4") if name == "synthesis.yaml" else ("train",
                                                                                                  "condition-1")
    assert set(root) == {"prepare", "validate", trained_by, "sample", "evaluate", "gate", "register", promote}
    deps = {name: set(t.get("dependentTasks", [])) for name, t in _tasks(spec).items()}
    assert deps["validate"] == {"prepare"} and deps[trained_by] == {"validate"}
    assert deps["sample"] == {trained_by, "validate"} and deps["evaluate"] == {"sample", "validate"}
    assert deps["gate"] == {"evaluate"} and {"gate", trained_by, "evaluate"} <= deps["register"]
    # promote only with auto_promote; publish only after promote and with a store
    promote_cond = root[promote]
    assert "auto_promote" in promote_cond["triggerPolicy"]["condition"]
    inner = spec["components"][promote_cond["componentRef"]["name"]]["dag"]["tasks"]
    publish_cond = "condition-5" if name == "synthesis.yaml" else "condition-2"
    assert set(inner) == {"promote", publish_cond}
    assert "publish_store" in inner[publish_cond]["triggerPolicy"]["condition"]
    assert inner[publish_cond]["dependentTasks"] == ["promote"]
    assert set(spec["components"][inner[publish_cond]["componentRef"]["name"]]["dag"]["tasks"]) == {"publish"}


def test_multi_node_branch(compiled):
    """train_nodes > 1: train-distributed (a TrainJob); else: train. sample and register take the OneOf."""
    spec, platform = compiled["synthesis.yaml"]
    root = spec["root"]["dag"]["tasks"]
    branches = spec["components"][root["condition-branches-1"]["componentRef"]["name"]]["dag"]
    ifs = {n: t["triggerPolicy"]["condition"] for n, t in branches["tasks"].items()}
    assert ifs == {"condition-2": "int(inputs.parameter_values['pipelinechannel--train_nodes']) > 1",
                   "condition-3": "!(int(inputs.parameter_values['pipelinechannel--train_nodes']) > 1)"}
    assert set(spec["components"]["comp-condition-2"]["dag"]["tasks"]) == {"train-distributed"}
    assert set(spec["components"]["comp-condition-3"]["dag"]["tasks"]) == {"train"}
    (oneof,) = branches["outputs"]["artifacts"].values()
    assert [s["producerSubtask"] for s in oneof["artifactSelectors"]] == ["condition-2", "condition-3"]
    for step in ("sample", "register"):
        assert root[step]["inputs"]["artifacts"]["generator"]["taskOutputArtifact"]["producerTask"] == \
            "condition-branches-1"
    task = spec["components"]["comp-condition-2"]["dag"]["tasks"]["train-distributed"]
    params = task["inputs"]["parameters"]
    assert params["num_nodes"]["componentInputParameter"] == "pipelinechannel--train_nodes"
    assert params["gpus_per_node"]["componentInputParameter"] == "pipelinechannel--gpus_per_node"
    assert params["trainer_image"]["runtimeValue"]["constant"] == f"ghcr.io/synthgate/synthgate:{__version__}-cuda"
    assert not task.get("cachingOptions", {}).get("enableCache")
    # the step itself runs on CPU in the CPU image; the TrainJob's pods get the GPUs
    container = _executors(spec)["train-distributed"]
    assert "accelerator" not in container["resources"] and container["image"].endswith("-cpu")
    assert "trainjob.run_trainjob(" in " ".join(container["command"])
    k8s = _k8s(platform)["train-distributed"]
    assert "nodeSelector" not in k8s and "tolerations" not in k8s
    assert k8s["fieldPathAsEnv"] == [{"fieldPath": "metadata.namespace", "name": "POD_NAMESPACE"}]
    # the CPU pipeline (what kfp.local runs) keeps the single train step
    cpu, _ = compiled["synthesis-cpu.yaml"]
    assert "train-distributed" not in _executors(cpu) and "train" in cpu["root"]["dag"]["tasks"]


# --------------------------------------------------------------------------------------------
# where the steps run


def test_train_and_sample_request_a_gpu(compiled):
    spec, platform = compiled["synthesis.yaml"]
    execs, k8s = _executors(spec), _k8s(platform)
    for step in ("train", "sample", "evaluate"):
        acc = execs[step]["resources"]["accelerator"]
        assert acc["type"] == "nvidia.com/gpu" and str(acc["count"]) == "1"
        assert acc["resourceType"] == "nvidia.com/gpu" and str(acc["resourceCount"]) == "1"
        assert k8s[step]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[step]["tolerations"]
    for step in ("prepare", "validate", "train-distributed", "gate", "register", "promote"):
        assert "accelerator" not in execs[step]["resources"]
        assert "nodeSelector" not in k8s[step] and "tolerations" not in k8s[step]
    # the CPU variant asks for no GPU anywhere
    for name in ("synthesis-cpu.yaml", "publish-cpu.yaml"):
        spec, platform = compiled[name]
        assert all("accelerator" not in c["resources"] for c in _executors(spec).values())
        assert all("nodeSelector" not in e and "tolerations" not in e for e in _k8s(platform).values())
    spec, _ = compiled["publish.yaml"]
    assert _executors(spec)["publish"]["resources"]["accelerator"]["type"] == "nvidia.com/gpu"


def test_secrets_config_map_and_resources(compiled):
    for name, (spec, platform) in compiled.items():
        execs, k8s = _executors(spec), _k8s(platform)
        assert set(execs) == set(k8s)
        for step, container in execs.items():
            res = container["resources"]
            for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
                assert res.get(key), f"{name}: {step} has no {key}"
            cms = {cm["configMapName"]: {(e["configMapKey"], e["envVar"]) for e in cm["keyToEnv"]}
                   for cm in k8s[step]["configMapAsEnv"]}
            assert cms["synthgate-endpoints"] == {
                (k, k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "PUSHGATEWAY_URL",
                                 "SYNTHGATE_GATEKEEPER_URL")}
            secrets = {sec["secretName"]: {(e["secretKey"], e["envVar"]) for e in sec["keyToEnv"]}
                       for sec in k8s[step].get("secretAsEnv", [])}
            s3 = step in ("prepare", "train", "train-distributed", "register", "promote", "publish")
            mlflow = step in ("train", "train-distributed", "register", "promote", "publish")
            # the gatekeeper's trust root (its public key) wherever a step talks to the registry
            assert set(cms) == {"synthgate-endpoints"} | ({"synthgate-trust-root"} if mlflow else set()), step
            if mlflow:
                assert cms["synthgate-trust-root"] == {("SYNTHGATE_TRUST_ROOT", "SYNTHGATE_TRUST_ROOT")}
            assert set(secrets) == ({"synthgate-s3"} if s3 else set()) | (
                {"synthgate-mlflow-pipeline"} if mlflow else set()), step
            if s3:
                assert secrets["synthgate-s3"] == {
                    ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")}
            if mlflow:  # the pipeline's MLflow account (the server runs basic-auth)
                assert secrets["synthgate-mlflow-pipeline"] == {
                    ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_USERNAME"),
                    ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_PASSWORD")}


def test_every_step_runs_in_the_project_image_with_a_version_tag(compiled):
    for name, (spec, _) in compiled.items():
        for step, container in _executors(spec).items():
            image = container["image"]
            repo, _, tag = image.rpartition(":")
            assert repo == "ghcr.io/synthgate/synthgate", image
            assert tag != "latest" and tag.startswith(__version__), image
            on_gpu = step in GPU_STEPS and "-cpu" not in name
            assert tag.endswith("-cuda" if on_gpu else "-cpu"), f"{name}: {step} runs in {image}"
            # no pip install at start-up: the image holds synthgate and kfp
            assert "pip install" not in " ".join(container["command"])


def test_caching(compiled, tmp_path):
    spec, _ = compiled["synthesis.yaml"]
    cached = {name: bool(t.get("cachingOptions", {}).get("enableCache")) for name, t in _tasks(spec).items()
              if not name.startswith("condition-")}
    assert cached == {"prepare": True, "validate": True, "sample": True, "evaluate": True, "gate": True,
                      "train": False, "train-distributed": False, "register": False, "promote": False,
                      "publish": False}
    from kfp import compiler
    from pipelines import synthesis

    compiler.Compiler().compile(synthesis.build(cache_training=True), str(tmp_path / "cached.yaml"))
    spec, _ = _load(tmp_path / "cached.yaml")
    assert _tasks(spec)["train"]["cachingOptions"]["enableCache"] is True


# --------------------------------------------------------------------------------------------
# the components stay thin

_CONTROL_FLOW = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith, ast.IfExp, ast.BoolOp,
                 ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda, ast.FunctionDef, ast.Raise)


@pytest.mark.parametrize("stage", STAGES)
def test_component_body_only_imports_synthgate_and_calls_its_stage(stage):
    from components import COMPONENTS

    func = COMPONENTS[stage].python_func
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    (fn,) = tree.body
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    imports = [s for s in body if isinstance(s, ast.Import | ast.ImportFrom)]
    rest = body[len(imports):]
    assert imports and all(isinstance(s, ast.ImportFrom) and s.module in ("synthgate", "synthgate.kubeflow")
                           for s in imports)
    assert len(rest) == 1 and isinstance(rest[0], ast.Expr | ast.Return), "one statement after the imports"
    assert not [n for n in ast.walk(rest[0]) if isinstance(n, _CONTROL_FLOW)], "no logic in a component body"
    calls = [n.func for n in ast.walk(rest[0]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    stage_calls = [c.attr for c in calls if isinstance(c.value, ast.Name) and c.value.id == "stages"]
    assert stage_calls == [stage]
    others = {c.value.id for c in calls if isinstance(c.value, ast.Name)} - {"stages"}
    assert others <= {"kfp_io"}, f"only synthgate.kubeflow.io helpers besides the stage, got {others}"
    import synthgate.kubeflow.io as kfp_io
    import synthgate.stages as stages

    assert hasattr(stages, stage)
    assert all(hasattr(kfp_io, c.attr) for c in calls if isinstance(c.value, ast.Name) and c.value.id == "kfp_io")


def test_train_distributed_component_body_only_imports_synthgate_and_calls_run_trainjob():
    from components import DISTRIBUTED

    func = DISTRIBUTED["train_distributed"].python_func
    (fn,) = ast.parse(textwrap.dedent(inspect.getsource(func))).body
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    imports, rest = body[:1], body[1:]
    assert isinstance(imports[0], ast.ImportFrom) and imports[0].module == "synthgate.kubeflow"
    assert len(rest) == 1 and isinstance(rest[0], ast.Expr)
    assert not [n for n in ast.walk(rest[0]) if isinstance(n, _CONTROL_FLOW)], "no logic in a component body"
    calls = [n.func for n in ast.walk(rest[0]) if isinstance(n, ast.Call)]
    assert [(c.value.id, c.attr) for c in calls] == [("trainjob", "run_trainjob")]
    assert set(inspect.signature(func).parameters) == {
        "params_json", "generator_type", "generator_size", "train_steps", "num_nodes", "gpus_per_node",
        "trainer_image", "dataset", "generator", "tracking_uri"}


# --------------------------------------------------------------------------------------------
# submit


class FakeClient:
    calls: list = []

    def __init__(self, **kwargs):
        FakeClient.calls.append(("init", kwargs))

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        FakeClient.calls.append(("run", pipeline_file, kwargs))
        return type("Result", (), {"run_id": "run-123"})()


def test_submit_converts_parameters_and_calls_the_client(tmp_path):
    from synthgate.kubeflow.submit import submit

    FakeClient.calls = []
    policy = tmp_path / "policy.yaml"
    policy.write_text("samples:\n  min_per_class: 5\n")
    package = REPO / "pipelines/compiled/synthesis.yaml"
    r = submit("http://kfp.example:8080/", package,
               ["train_steps=20000", "auto_promote=true", "publish_store=s3://synthgate-datasets/",
                f"gate_policy_yaml=@{policy}", "source_uri=s3://raw/a=b.npz"],
               experiment="exp", run_name="nightly", client_factory=FakeClient)
    (_, init), (_, pkg, kwargs) = FakeClient.calls
    assert init == {"host": "http://kfp.example:8080/"}
    assert pkg == str(package)
    assert kwargs["arguments"] == {"train_steps": 20000, "auto_promote": True,
                                   "publish_store": "s3://synthgate-datasets/",
                                   "gate_policy_yaml": "samples:\n  min_per_class: 5\n",
                                   "source_uri": "s3://raw/a=b.npz"}
    assert kwargs["experiment_name"] == "exp" and kwargs["run_name"] == "nightly"
    assert kwargs["service_account"] == "synthgate-pipeline"
    assert r.run_id == "run-123" and r.url == "http://kfp.example:8080/#/runs/details/run-123"
    assert r.pipeline == "synthgate-synthesis"


@pytest.mark.parametrize("param, message", [
    ("nope=1", "has no parameter 'nope'"),
    ("train_steps=many", "not a valid integer"),
    ("auto_promote=perhaps", "not a valid boolean"),
    ("train_steps", "expected NAME=VALUE"),
])
def test_submit_refuses_bad_parameters_before_contacting_the_host(param, message):
    from synthgate.kubeflow.submit import submit

    FakeClient.calls = []
    with pytest.raises(ConfigError, match=message):
        submit("http://kfp.example", REPO / "pipelines/compiled/synthesis.yaml", [param], client_factory=FakeClient)
    assert FakeClient.calls == []


def test_submit_refuses_a_file_that_is_not_a_compiled_pipeline(tmp_path):
    from synthgate.kubeflow.submit import PipelineError, submit

    with pytest.raises(PipelineError, match="not found"):
        submit("http://kfp.example", tmp_path / "missing.yaml", client_factory=FakeClient)
    (tmp_path / "other.yaml").write_text("a: 1\n")
    with pytest.raises(PipelineError, match="not a compiled KFP pipeline"):
        submit("http://kfp.example", tmp_path / "other.yaml", client_factory=FakeClient)


def test_submit_to_an_unreachable_host_is_a_clear_error():
    from synthgate.registry.server import free_port

    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = run_cli("pipeline", "submit", "--host", host, "--param", "train_steps=10", cwd=REPO, timeout=120)
    assert r.code == 2, r.output
    assert f"Kubeflow Pipelines API at {host} is not reachable" in r.stderr
    assert "Connection refused" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.output and "Retrying" not in r.output


# --------------------------------------------------------------------------------------------
# synthgate.kubeflow.io


def test_params_json_round_trip_and_overrides():
    from synthgate.config import load_params
    from synthgate.kubeflow.io import params, params_json

    p = load_params(REPO / "params.yaml")
    text = params_json(p)
    assert params(text) == p
    q = params(text, {"train.steps": 20, "generator.type": "gan", "sample.per_class": 0, "generator.size": "",
                      "prepare.resolution": None})
    assert q.train.steps == 20 and q.generator.type == "gan"
    assert q.sample.per_class == p.sample.per_class and q.prepare.resolution == p.prepare.resolution
    assert params("").train == load_params(None).train  # empty: the built-in defaults
    with pytest.raises(ConfigError, match="params_json: not valid JSON"):
        params("{nope")
    with pytest.raises(ConfigError, match=r"params_json: prepare\.resolution"):
        params(text, {"prepare.resolution": 30})


def test_dvc_get_command():
    from synthgate.kubeflow.io import dvc_get_command

    cmd = dvc_get_command("https://github.com/org/data.git", "data/raw/pneumoniamnist.npz", "v1.2",
                          Path("/tmp/x/pneumoniamnist.npz"))
    assert cmd == [sys.executable, "-m", "dvc", "get", "https://github.com/org/data.git",
                   "data/raw/pneumoniamnist.npz", "-o", "/tmp/x/pneumoniamnist.npz", "--rev", "v1.2"]
    assert "--rev" not in dvc_get_command("repo", "data/raw", "", Path("out"))


def test_fetch_source_with_dvc(tmp_path, monkeypatch):
    import synthgate.kubeflow.io as kfp_io

    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        Path(cmd[cmd.index("-o") + 1]).write_text("data")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(kfp_io.subprocess, "run", fake_run)
    out = kfp_io.fetch_source("data/raw/pneumoniamnist.npz", "git@example.org:data.git", "abc123", tmp_path)
    assert out == tmp_path / "pneumoniamnist.npz" and out.read_text() == "data"
    assert seen[0][3:] == ["get", "git@example.org:data.git", "data/raw/pneumoniamnist.npz", "-o", str(out),
                           "--rev", "abc123"]

    monkeypatch.setattr(kfp_io.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: unexpected error - no rev"))
    with pytest.raises(DataError, match="dvc get git@example.org:data.git data/raw --rev nope failed: .*no rev"):
        kfp_io.fetch_source("data/raw", "git@example.org:data.git", "nope", tmp_path)
    with pytest.raises(ConfigError, match="dvc_rev is set but dvc_repo is empty"):
        kfp_io.fetch_source("data/raw", "", "v1")
    with pytest.raises(ConfigError, match="source_uri is empty"):
        kfp_io.fetch_source("", "git@example.org:data.git", "v1")
    assert kfp_io.fetch_source("/data/raw.npz") == Path("/data/raw.npz")
    assert kfp_io.fetch_source("file:///data/raw.npz") == Path("/data/raw.npz")


def test_fetch_source_from_s3(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    import synthgate.kubeflow.io as kfp_io

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_ENDPOINT_URL", "SYNTHGATE_S3_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="raw")
        s3.put_object(Bucket="raw", Key="medmnist/pneumoniamnist.npz", Body=b"npz")
        s3.put_object(Bucket="raw", Key="folders/xray/a/1.png", Body=b"1")
        s3.put_object(Bucket="raw", Key="folders/xray/b/2.png", Body=b"2")
        one = kfp_io.fetch_source("s3://raw/medmnist/pneumoniamnist.npz", dest=tmp_path / "one")
        assert one == tmp_path / "one" / "pneumoniamnist.npz" and one.read_bytes() == b"npz"
        folder = kfp_io.fetch_source("s3://raw/folders/xray", dest=tmp_path / "two")
        assert folder == tmp_path / "two" / "xray"
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == ["a/1.png", "b/2.png"]
        with pytest.raises(DataError, match="no object or prefix"):
            kfp_io.fetch_source("s3://raw/nothing/here", dest=tmp_path / "three")


@pytest.mark.parametrize("name", ["synthesis.yaml", "synthesis-cpu.yaml"])
def test_train_step_is_resumable(compiled, name):
    """The train step gets checkpoint_uri, so a restarted pod resumes from its mirror; on GPU nodes
    (preemptible) KFP retries it."""
    spec, _ = compiled[name]
    train = _tasks(spec)["train"]
    args = train["inputs"]["parameters"]
    assert args["checkpoint_uri"] == {"componentInputParameter": "pipelinechannel--checkpoint_uri"} or \
        args["checkpoint_uri"] == {"componentInputParameter": "checkpoint_uri"}
    assert "run_id" not in args  # a per-run input would change the cache key (--cache-training) every run
    if name == "synthesis.yaml":
        assert train["retryPolicy"]["maxRetryCount"] == 2 and train["retryPolicy"]["backoffDuration"] == "60s"
    else:
        assert "retryPolicy" not in train


def test_run_scoped_checkpoint_uri():
    from types import SimpleNamespace

    from synthgate.kubeflow.io import run_scoped

    a = SimpleNamespace(uri="minio://mlpipeline/v2/artifacts/synthgate-synthesis/run-1/train/generator")
    b = SimpleNamespace(uri="minio://mlpipeline/v2/artifacts/synthgate-synthesis/run-2/train/generator")
    assert run_scoped("", a) is None and run_scoped("  ", a) is None
    scoped = run_scoped("s3://bucket/ckpt/", a)
    assert scoped.startswith("s3://bucket/ckpt/") and len(scoped.rsplit("/", 1)[1]) == 16
    assert run_scoped("s3://bucket/ckpt", a) == scoped  # a retried pod of the task: the same folder
    assert run_scoped("s3://bucket/ckpt", b) != scoped  # another run: another folder
