"""Issue #41: an MLflow outage during ``register`` is an answer within ``SYNTHGATE_MLFLOW_TIMEOUT``, naming the
tracking URI, and leaves no promotable half version; re-running ``register`` is idempotent.

The tests run their own MLflow server and gatekeeper (the session's are shared and must not be killed) on a
fixed port of 127.0.0.1, kill the server (SIGKILL of its process group) in the middle of ``register`` and
start it again on the same port and stores. Measured on main before this change: a 4 min 7 s hang, then
"unexpected error: MlflowException ... Connection refused ... report it", and a version with 3 of its 24 tags
that ``promote --force`` released."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from synthgate.registry.client import connect
from synthgate.registry.outage import budget
from synthgate.registry.registration import REGISTRATION_TAG, state
from tests.integration.test_publish import GENERATOR, model_dir, samples  # noqa: F401 - module fixtures

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BOUND = 15  # SYNTHGATE_MLFLOW_TIMEOUT in these tests (s): 2 attempts of 7 s (budget(15))
SLACK = 3.0  # what a command adds to the bound: Python and MLflow's own work around the requests
MLFLOW_HTTP = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")


@contextlib.contextmanager
def _kept_bound():
    """MLflow's HTTP variables and what synthgate wrote, as they were before (later tests get their own bound)."""
    from synthgate.registry import outage

    saved, applied = {k: os.environ.get(k) for k in MLFLOW_HTTP}, dict(outage._APPLIED)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        outage._APPLIED.clear()
        outage._APPLIED.update(applied)


@pytest.fixture(autouse=True)
def _bound_per_test():
    with _kept_bound():
        yield


class Server:
    """This module's MLflow server (and gatekeeper) under ``root`` on ``port``: killed and started again."""

    def __init__(self, root: Path) -> None:
        from synthgate.registry.server import free_port

        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from synthgate.registry.server import start_server

        uri, _ = start_server(self.root, port=self.port, detach=True)
        assert uri == self.uri

    def pid(self) -> int:
        return int((self.root / "server.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL of the server's whole process group (it was started in a session of its own)."""
        os.killpg(self.pid(), signal.SIGKILL)
        (self.root / "server.pid").unlink()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from synthgate.registry.server import start_gatekeeper, stop_server, use_credentials

    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "SYNTHGATE_GATEKEEPER_URL", "SYNTHGATE_TRUST_ROOT",
            "SYNTHGATE_MLFLOW_TIMEOUT")
    saved = {k: os.environ.get(k) for k in keys}
    bound = _kept_bound()
    bound.__enter__()
    s = Server(tmp_path_factory.mktemp("outage-mlflow"))
    s.start()
    use_credentials(s.root)
    os.environ["SYNTHGATE_GATEKEEPER_URL"] = start_gatekeeper(s.root, s.uri, None)
    os.environ["SYNTHGATE_TRUST_ROOT"] = str(s.root / "gatekeeper" / "trust.json")
    os.environ["SYNTHGATE_MLFLOW_TIMEOUT"] = str(BOUND)
    yield s
    stop_server(s.root)
    bound.__exit__(None, None, None)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _gated(tmp: Path, samples, tag: str) -> tuple[Path, Path]:  # noqa: F811
    """An evaluation of the model_dir fixture's samples, gated (passing): as test_publish's ``_registered``."""
    from synthgate.data.canonical import pixel_hashes
    from synthgate.evaluation.evaluate import evaluation_hash
    from synthgate.evaluation.report import PUBLIC_MARK
    from synthgate.gates.decision import gate
    from synthgate.gates.policy import GatePolicy
    from tests.unit.test_gates import _evaluation

    d = tmp / tag
    d.mkdir()
    e = _evaluation()
    e["real"]["path"] = str(d / "MedNIST")
    e["synthetic"].update(path=str(samples.root), content_hash=samples.content_hash, num_images=120,
                          counts={"a": 60, "b": 60}, generator=dict(GENERATOR),
                          image_sha256=pixel_hashes(np.asarray(samples.images)))
    e["evaluation_hash"] = evaluation_hash(e)
    (d / "evaluation.json").write_text(json.dumps(e))
    (d / "report_public.html").write_text(f"<html><body>{PUBLIC_MARK} public report</body></html>")
    gate(d / "evaluation.json", GatePolicy(), d / "gate.json")
    return d / "evaluation.json", d / "gate.json"


def _register_args(model: Path, ev: Path, gate: Path, name: str, uri: str) -> list[str]:
    return ["register", "--model", str(model), "--evaluation", str(ev), "--gate", str(gate), "--name", name,
            "--tracking-uri", uri]


def _refused(cli, uri: str, name: str, version: str, *fragments: str) -> None:
    """promote, promote --force and load all refuse ``name`` version ``version`` naming it."""
    from synthgate.errors import SynthgateError
    from synthgate.registry.registry import load_model

    for extra in ([], ["--force", "--reason", "the committee said so"]):
        code, out, err = cli("promote", name, version, "--tracking-uri", uri, *extra)
        assert code == 1 and f"{name} version {version}" in err and "@approved" not in out, (extra, out, err)
        for f in fragments:
            assert f in err, (f, err)
    connect(uri).set_registered_model_alias(name, "approved", version)  # as if moved by hand (the admin may)
    with pytest.raises(SynthgateError, match=f"{name} version {version}"):  # no release signed: refused for that
        load_model(name, "approved", uri)


def _signed_by_an_older_gatekeeper(server: Server, name: str, version: str, released: str) -> None:
    """The release of ``released`` retargeted to ``version`` and signed with the gatekeeper's key, as the
    gatekeeper before this change signed the half version that `promote --force` was asked for; the alias on it."""
    import base64

    from synthgate.registry.gatekeeper import RELEASE_TAG
    from synthgate.trust import attest
    from synthgate.trust.keys import KEY_FILE, load_signer

    client = connect(server.uri)
    stmt = json.loads(base64.b64decode(json.loads(client.get_model_version(name, released).tags[RELEASE_TAG])["payload"]))
    stmt["subject"][0]["name"] = f"{name}/{version}"
    stmt["predicate"].update(version=version, verdict="override", override={"reason": "promote --force", "user": "admin"})
    env = attest.sign(stmt, load_signer(server.root / "gatekeeper" / KEY_FILE))
    client.set_model_version_tag(name, version, RELEASE_TAG, json.dumps(env))
    client.set_registered_model_alias(name, "approved", version)


def test_the_bound_fits_in_the_setting(monkeypatch):
    from synthgate.errors import ConfigError
    from synthgate.registry.outage import bound_mlflow

    for total in (1, 2, 3, 5, 8, 15, 30, 45, 60, 600):
        b = budget(total)
        assert b.worst_case() <= total and b.timeout >= 1, (total, b)
    assert (budget(30).retries, budget(30).timeout) == (1, 15)
    monkeypatch.setenv("SYNTHGATE_MLFLOW_TIMEOUT", "20")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "50")  # the user's own: kept
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    b = bound_mlflow()
    assert (os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == ("50", "1")
    assert (b.timeout, b.retries) == (50, 1)
    monkeypatch.setenv("SYNTHGATE_MLFLOW_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="SYNTHGATE_MLFLOW_TIMEOUT='soon': expected a number of seconds"):
        bound_mlflow()


def test_which_versions_are_whole():
    """A version written in one request carries the marker; one registered whole by an older synthgate (every
    tag, then the description) stays complete without it; anything less is incomplete."""
    from synthgate.registry.registration import REQUIRED, with_marker

    tags = {**dict.fromkeys(REQUIRED, "x"), "gate.rule.fid": "pass: 1 <= 2"}
    new = with_marker(tags, "k" * 64)
    assert new[REGISTRATION_TAG] == f"complete; {len(tags) + 1} tags" and state(new, None).complete
    assert state(tags, "## Release gate: PASSED\n...").complete  # an older synthgate's whole version
    assert not state(tags, None).complete and "no description" in state(tags, None).detail
    three = dict(list(tags.items())[:3])
    assert state(three, None).label.startswith("INCOMPLETE (3 registration tags, missing evaluation_hash")
    assert not state({k: v for k, v in new.items() if k != "gate.sha256"}, None).complete  # a tag deleted later
    assert state({**new, REGISTRATION_TAG: "superseded by version 7: ..."}, None).label == "superseded by version 7"
    assert not state({}, None).registered and not state({"release.attestation": "{}"}, None).complete


def test_an_outage_is_told_from_a_refusal():
    from mlflow.exceptions import MlflowException

    from synthgate.registry.outage import outage

    cut = MlflowException("API request to http://mlflow:5000/api/2.0/mlflow/model-versions/create failed with exception "
                          "HTTPConnectionPool(host='mlflow', port=5000): Max retries exceeded (Caused by "
                          "NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))")
    err = outage(cut, doing="registering", elapsed=1.5)
    assert err is not None and err.message.startswith("the MLflow server at http://mlflow:5000 did not answer while "
                                                      "registering (connection refused: nothing listens there); "
                                                      "synthgate gave up after 1.5 s")
    assert outage(MlflowException("RESOURCE_DOES_NOT_EXIST: no such version")) is None
    assert outage(ConnectionResetError("peer"), mlflow_only=True) is None and outage(ConnectionResetError("x"))


def test_nothing_listening_is_an_answer_within_the_bound(cli, tmp_path, monkeypatch):
    from synthgate.registry.server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    code, _, err = cli("models", "--tracking-uri", uri, env={"SYNTHGATE_MLFLOW_TIMEOUT": "3"})
    took = time.monotonic() - t0
    assert code == 1 and took < 3 + SLACK, (took, err)
    assert f"MLflow tracking server at {uri} is not reachable" in err and "connection refused" in err, err
    assert "SYNTHGATE_MLFLOW_TIMEOUT=3 s" in err and "unexpected" not in err


class _Hung(http.server.BaseHTTPRequestHandler):
    """A server that answers its health check and then nothing: every other request waits forever."""

    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
            return
        self.server.release.wait(60)

    def log_message(self, *a):
        pass


def test_a_server_that_stops_answering_is_an_answer_within_the_bound(cli):
    """Each request waits its attempt's timeout (SYNTHGATE_MLFLOW_TIMEOUT 4 s: 2 attempts of 2 s)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hung)
    server.release = threading.Event()
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        t0 = time.monotonic()
        code, _, err = cli("models", "--tracking-uri", uri, env={"SYNTHGATE_MLFLOW_TIMEOUT": "4"})
        took = time.monotonic() - t0
    finally:
        server.release.set()
        server.shutdown()
    assert code == 1 and 3.5 < took < 4 + SLACK, (took, err)
    assert f"the MLflow server at {uri} did not answer while listing the versions (no answer: the request timed out)" \
        in err and "SYNTHGATE_MLFLOW_TIMEOUT=4 s" in err and "unexpected" not in err, err


def test_a_server_killed_mid_register_is_an_answer_and_leaves_no_half_version(server, model_dir, samples,  # noqa: F811
                                                                              tmp_path, cli, monkeypatch, capsys):
    """The server is stopped (SIGSTOP) as the version's create request goes out, then killed 1 s later: the
    request is in flight when the server dies. Nothing registered before is lost; no version of the
    interrupted register is visible; running it again registers it whole and it is promoted."""
    from mlflow.tracking import MlflowClient

    from synthgate.registry.verify import verify_version

    before = _gated(tmp_path, samples, "before")
    code, out, err = cli(*_register_args(model_dir, *before, "kept-generator", server.uri))
    assert code == 0, err
    ev, gate = _gated(tmp_path, samples, "cut")
    real = MlflowClient.create_model_version
    calls = []

    def dies_mid_request(self, *a, **k):
        calls.append(time.monotonic())
        os.killpg(server.pid(), signal.SIGSTOP)  # the whole group: `mlflow server` may serve from a child
        threading.Timer(1.0, server.kill).start()
        return real(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "create_model_version", dies_mid_request)
        code, out, err = cli(*_register_args(model_dir, ev, gate, "cut-generator", server.uri))
    answered = time.monotonic() - calls[0]
    assert code == 1 and answered < BOUND + SLACK, (answered, err)
    assert f"the MLflow server at {server.uri} did not answer while registering" in err, err
    assert f"SYNTHGATE_MLFLOW_TIMEOUT={BOUND} s" in err and "leaves no version" in err and "unexpected" not in err
    with capsys.disabled():
        print(f"\nregister answered {answered:.1f} s after the server stopped (killed 1 s later; bound {BOUND} s)")

    server.start()
    client = connect(server.uri)
    assert [mv.version for mv in client.search_model_versions("name='cut-generator'")] == []
    kept = client.get_model_version("kept-generator", "1")
    assert state(kept.tags, kept.description).complete  # nothing registered before the outage is lost
    code, out, err = cli(*_register_args(model_dir, ev, gate, "cut-generator", server.uri))
    assert code == 0 and "registered cut-generator version 1" in out and "already" not in out, (out, err)
    mv = client.get_model_version("cut-generator", "1")
    assert mv.tags[REGISTRATION_TAG] == f"complete; {len([k for k in mv.tags if k.startswith(('gate.', 'lineage.', 'reader_study', 'registration.')) or k == 'evaluation_hash'])} tags"
    code, out, err = cli(*_register_args(model_dir, ev, gate, "cut-generator", server.uri))
    assert code == 0 and "already registered: cut-generator version 1" in out, out  # idempotent
    assert len(client.search_model_versions("name='cut-generator'")) == 1
    code, out, err = cli("promote", "cut-generator", "1", "--tracking-uri", server.uri)
    assert code == 0 and "now @approved (gate passed)" in out, err
    verify_version(client, "kept-generator", "1")  # its records are all there


def test_a_half_version_is_refused_everywhere_and_superseded_by_a_re_run(server, model_dir, samples,  # noqa: F811
                                                                        tmp_path, cli):
    """Half versions as synthgate before this change left them (the version, then its tags one request at a
    time, the description last): 3 of the tags, and every tag but no description. Listed INCOMPLETE; refused
    by promote, promote --force (the gatekeeper refuses to sign: server side), load and publish, naming
    them; running register again registers the version whole and marks both superseded."""
    import mlflow

    from synthgate.config import PublishConfig
    from synthgate.errors import SynthgateError
    from synthgate.gates.decision import check_record, load_evaluation
    from synthgate.generators.model import read_generator_info
    from synthgate.publish.package import publish
    from synthgate.registry.registration import version_tags
    from synthgate.registry.registry import _log_run, _tracking_env
    from synthgate.utils import read_json, sha256_file

    name = "half-generator"
    ev, gate = _gated(tmp_path, samples, "half")
    client = connect(server.uri)
    info, evaluation, record = read_generator_info(model_dir), load_evaluation(ev), read_json(gate)
    tags = version_tags(record, sha256_file(gate), evaluation, info, check_record(record, evaluation, str(gate)))
    for written in (3, len(tags)):  # what a server killed after the 3rd tag / before the description left
        _, model_info, _ = _log_run(client, server.uri, model_dir, ev, gate, info, evaluation)
        with _tracking_env(server.uri):
            mv = mlflow.register_model(model_info.model_uri, name)
        for k, v in list(tags.items())[:written]:
            client.set_model_version_tag(name, mv.version, k, v)
    code, out, _ = cli("models", name, "--tracking-uri", server.uri)
    assert code == 0 and out.count("INCOMPLETE") == 2, out
    _refused(cli, server.uri, name, "1", "is incomplete", "re-run `synthgate register`")
    _refused(cli, server.uri, name, "2", "is incomplete", "no description", "re-run `synthgate register`")
    store = tmp_path / "store"
    with pytest.raises(SynthgateError, match=f"{name} version 2 is incomplete"):
        publish(name, store, samples=samples.root, tracking_uri=server.uri, config=PublishConfig())

    code, out, err = cli(*_register_args(model_dir, ev, gate, name, server.uri))
    assert code == 0 and f"registered {name} version 3" in out, (out, err)
    assert "version(s) 1, 2: half-registered" in " ".join(out.split()) and "superseded by version 3" in out, out
    code, out, _ = cli("models", name, "--tracking-uri", server.uri)
    assert out.count("superseded by version 3") == 2 and "INCOMPLETE" not in out, out
    _refused(cli, server.uri, name, "1", "superseded by version 3")
    code, out, err = cli("promote", name, "3", "--tracking-uri", server.uri)
    assert code == 0 and "now @approved" in out, err

    # a half version that an older gatekeeper signed (the issue's `promote --force`): load and publish refuse it
    _signed_by_an_older_gatekeeper(server, name, "2", "3")
    from synthgate.registry.registry import load_model

    for act in (lambda: load_model(name, "approved", server.uri),
                lambda: publish(name, store, samples=samples.root, tracking_uri=server.uri, config=PublishConfig())):
        with pytest.raises(SynthgateError, match=f"{name} version 2 is incomplete and was superseded by version 3"):
            act()
    assert not store.exists() or not any(store.rglob("manifest.json"))
