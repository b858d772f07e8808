"""Monitoring against Debian's real Prometheus and Pushgateway on 127.0.0.1 (``make test`` installs
them): stages push their metrics, Prometheus scrapes the Pushgateway with the shipped alert rules
(k8s/base/prometheus/alerts.yml), and a failed gate and a failed stage show up as metrics and as
pending alerts. Plus the ``/metrics`` endpoint of a long-running process."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from synthgate.registry.server import free_port
from tests.helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ALERTS = REPO / "k8s" / "base" / "prometheus" / "alerts.yml"


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (make test installs it: apt-get install prometheus prometheus-pushgateway)")
    return path


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _wait(url: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


@pytest.fixture
def prometheus(tmp_path):
    pg_bin, prom_bin = _need("prometheus-pushgateway"), _need("prometheus")
    pg_port, prom_port = free_port(), free_port()
    rules = tmp_path / "alerts.yml"
    shutil.copyfile(ALERTS, rules)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{rules}]\n"
        "scrape_configs:\n"
        f"  - job_name: pushgateway\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{pg_port}']}}]\n"
    )
    procs = [
        subprocess.Popen([pg_bin, f"--web.listen-address=127.0.0.1:{pg_port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([prom_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
    ]
    try:
        _wait(f"http://127.0.0.1:{pg_port}/-/ready")
        _wait(f"http://127.0.0.1:{prom_port}/-/ready")
        yield f"http://127.0.0.1:{pg_port}", f"http://127.0.0.1:{prom_port}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


def _query(prom: str, expr: str, timeout: float = 30) -> list[dict]:
    """Poll Prometheus until ``expr`` returns something (first scrapes take a few seconds)."""
    end = time.monotonic() + timeout
    while True:
        data = json.loads(_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        if data["data"]["result"] or time.monotonic() > end:
            return data["data"]["result"]
        time.sleep(0.5)


def test_stages_push_and_prometheus_alerts(prometheus, tmp_path, monkeypatch):
    from synthgate import stages
    from synthgate.errors import DataError
    from synthgate.evaluation.evaluate import evaluation_hash
    from tests.unit.test_gates import _evaluation

    pushgateway, prom = prometheus
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway)
    e = _evaluation(copies=3)  # a generator that copies
    e["real"]["path"] = str(tmp_path / "MedNIST")
    e["evaluation_hash"] = evaluation_hash(e)
    (tmp_path / "evaluation.json").write_text(json.dumps(e))
    decision = stages.gate(evaluation=tmp_path / "evaluation.json", policy=None, out=tmp_path / "gate.json")
    assert not decision.passed
    with pytest.raises(DataError):  # a stage that fails: pulling a dataset that does not exist
        (tmp_path / "empty-store").mkdir()
        stages.pull("nothing-here", to=tmp_path / "out", store=str(tmp_path / "empty-store"))

    pushed = _get(f"{pushgateway}/metrics")
    assert 'synthgate_gate_passed{dataset="mednist",instance="",job="synthgate",stage="gate"} 0' in pushed

    [gate] = _query(prom, 'synthgate_gate_passed{job="synthgate",dataset="mednist"}')
    assert gate["value"][1] == "0" and gate["metric"]["stage"] == "gate"
    [rule] = _query(prom, 'synthgate_gate_rule_passed{rule="memorization.max_flagged_copies"}')
    assert rule["value"][1] == "0"
    [ok_rule] = _query(prom, 'synthgate_gate_rule_passed{rule="utility.max_auc_gap"}')
    assert ok_rule["value"][1] == "1"
    [failed] = _query(prom, 'synthgate_stage_failed{stage="pull"}')
    assert failed["value"][1] == "1"
    [runs] = _query(prom, 'synthgate_stage_runs_total{stage="gate",outcome="success"}')
    assert runs["value"][1] == "1"
    [duration] = _query(prom, 'synthgate_stage_duration_seconds{stage="gate"}')
    assert 0 < float(duration["value"][1]) < 60
    # series of one stage are not pushed under another stage's group
    assert not _query(prom, 'synthgate_stage_failed{stage="gate"} == 1', timeout=0)

    end = time.monotonic() + 30
    while True:
        alerts = json.loads(_get(f"{prom}/api/v1/alerts"))["data"]["alerts"]
        names = {(a["labels"]["alertname"], a["labels"].get("stage") or a["labels"].get("rule") or "") for a in alerts}
        wanted = {("SynthgateGateFailed", "gate"), ("SynthgateStageFailed", "pull"),
                  ("SynthgateGateRuleFailed", "gate")}
        got = {(n, s) for n, s in names if n in {w[0] for w in wanted}}
        if {w[0] for w in wanted} <= {n for n, _ in got} or time.monotonic() > end:
            break
        time.sleep(0.5)
    firing = {a["labels"]["alertname"]: a for a in alerts}
    assert {"SynthgateGateFailed", "SynthgateStageFailed", "SynthgateGateRuleFailed"} <= set(firing)
    assert firing["SynthgateStageFailed"]["labels"]["stage"] == "pull"
    assert firing["SynthgateGateRuleFailed"]["labels"]["rule"] == "memorization.max_flagged_copies"
    assert "SynthgatePublishFailed" not in firing


def test_long_running_process_serves_metrics(tmp_path):
    """``SYNTHGATE_METRICS_PORT`` makes any command serve /metrics while it runs (e.g. training)."""
    import sys

    port = free_port()
    script = ("import time, urllib.request\n"
              "from synthgate.cli import _setup\n"
              "from synthgate.monitoring.metrics import TRAIN_STEPS\n"
              "_setup(); TRAIN_STEPS.labels('diffusion').inc(7)\n"
              f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())\n")
    out = subprocess.run([sys.executable, "-c", script], env={**__import__("os").environ,
                         "SYNTHGATE_METRICS_PORT": str(port)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'synthgate_train_steps_total{model_type="diffusion"} 7.0' in out.stdout


def test_push_failure_never_fails_the_stage(tmp_path, monkeypatch, caplog):
    from synthgate.monitoring.push import track_stage

    monkeypatch.setenv("PUSHGATEWAY_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    with track_stage("prepare"):
        pass
    assert "could not push metrics of stage prepare" in caplog.text


def test_alert_rules_pass_promtool():
    promtool = _need("promtool")
    out = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_grafana_dashboard_queries_exported_metrics():
    """Every metric the dashboard queries is one synthgate exports (a renamed metric breaks this)."""
    import re

    from synthgate.monitoring.metrics import REGISTRY
    from synthgate.registry.gatekeeper import Metrics as GatekeeperMetrics
    from synthgate.registry.guard import Metrics

    exported = set()
    # the stages', the promotion guard's and the gatekeeper's
    for family in [*REGISTRY.collect(), *Metrics().registry.collect(), *GatekeeperMetrics().registry.collect()]:
        exported |= {family.name, family.name + "_total"}
    dashboard = json.loads(Path(REPO / "k8s/base/grafana/synthgate-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bsynthgate_[a-z_]+", e)}
    assert used and used <= exported, used - exported
    rules = Path(ALERTS).read_text()
    assert set(re.findall(r"\bsynthgate_[a-z_]+", rules)) <= exported
