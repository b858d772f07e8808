"""Who may do what, against a real MLflow server with basic-auth (the session's server, as `make
mlflow` runs it): users and roles through `synthgate access`, a consumer refused by MLflow itself when
it moves an alias, a reviewer promoting, and a message of its own for wrong, missing and
insufficient credentials. The commands run in-process (``synthgate.cli.main``), as users would type
them, with each user's credentials in the environment."""

import os
import stat

import pytest

from synthgate.registry import access
from synthgate.registry.client import connect
from synthgate.registry.registry import register
from tests.integration.test_registry import _gated, model_dir  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LOGIN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _as(user: str, password: str) -> dict[str, str | None]:
    return dict(zip(LOGIN, (user, password), strict=True))


def test_roles_and_refusals(mlflow_server, model_dir, tmp_path, cli):  # noqa: F811
    uri = mlflow_server
    name = "access-generator"
    reg = register(model_dir, *_gated(tmp_path, "ok"), uri=uri, name=name)  # as the admin (the session's login)
    assert reg.gate_passed

    code, out, err = cli("access", "add-user", "carol", "--tracking-uri", uri, cwd=tmp_path)
    assert code == 0, err
    creds = tmp_path / "carol.credentials.env"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and creds.name in out
    carol = dict(line.split("=", 1) for line in creds.read_text().splitlines())
    (tmp_path / "rita.pw").write_text("rita-has-a-long-password\n")
    assert cli("access", "add-user", "rita", "--password-file", str(tmp_path / "rita.pw"), "--tracking-uri", uri)[0] == 0
    for user, role in (("carol", "consumer"), ("rita", "reviewer")):
        code, out, err = cli("access", "grant", name, "--user", user, "--role", role, "--tracking-uri", uri)
        assert code == 0 and f"{user} is {role} of {name}" in out, err
    mine = {"admin", "rita", "carol"}  # the session's server holds other tests' users too
    assert [(g.user, g.role, g.permission) for g in access.list_access(uri, name) if g.user in mine] == [
        ("admin", "admin", "MANAGE"), ("rita", "reviewer/pipeline", "EDIT"), ("carol", "consumer", "READ")]
    code, out, _ = cli("access", "list", name, "--tracking-uri", uri)
    assert code == 0 and "reviewer" in out and "consumer" in out

    # a consumer reads, but cannot move an alias: MLflow itself refuses (not only synthgate's commands)
    assert cli("models", name, "--tracking-uri", uri, env=carol)[0] == 0
    code, _, err = cli("promote", name, reg.version, "--tracking-uri", uri, env=carol)
    assert code != 0 and "Traceback" not in err
    # the gatekeeper checks who asks against MLflow's authentication, and their permission on the model
    assert f"the gatekeeper refused: carol has READ on {name}; a release needs EDIT (the reviewer role)" in err
    assert f"synthgate access grant {name} --user carol --role reviewer" in err
    admin = {k: os.environ[k] for k in LOGIN}
    os.environ.update(carol)
    try:
        from mlflow.exceptions import MlflowException

        with pytest.raises(MlflowException) as e:
            connect(uri).set_registered_model_alias(name, "approved", reg.version)
        assert e.value.error_code == "PERMISSION_DENIED"
    finally:
        os.environ.update(admin)
    assert "approved" not in (connect(uri).get_registered_model(name).aliases or {})
    # nor grant itself a role
    code, _, err = cli("access", "grant", name, "--user", "carol", "--role", "owner", "--tracking-uri", uri, env=carol)
    assert code != 0 and "MLflow refused user 'carol' to grant or revoke a role: that needs MANAGE" in err

    # the reviewer promotes through the gate check; the audit names the MLflow user
    code, out, err = cli("promote", name, reg.version, "--tracking-uri", uri, env=_as("rita", "rita-has-a-long-password"))
    assert code == 0 and "now @approved (gate passed)" in out, err
    assert connect(uri).get_model_version(name, reg.version).tags["audit.1.user"] == "rita (gatekeeper)"

    # wrong password, no credentials: each its own message
    code, _, err = cli("models", name, "--tracking-uri", uri, env=_as("carol", "not-her-password"))
    assert code != 0 and "the MLflow server rejected the credentials of user 'carol'" in err
    code, _, err = cli("models", name, "--tracking-uri", uri, env=dict.fromkeys(LOGIN))
    assert code != 0 and "requires a login" in err and "MLFLOW_TRACKING_USERNAME" in err

    # bad input: an unknown role, a short password
    code, _, err = cli("access", "grant", name, "--user", "carol", "--role", "boss", "--tracking-uri", uri)
    assert code != 0 and "unknown role 'boss'" in err and "consumer, reviewer, pipeline, owner" in err
    (tmp_path / "short.pw").write_text("short\n")
    code, _, err = cli("access", "add-user", "sam", "--password-file", str(tmp_path / "short.pw"), "--tracking-uri", uri)
    assert code != 0 and "at least 12 characters" in err


def test_the_pipeline_role_registers_without_a_separate_grant(mlflow_server, model_dir, tmp_path, cli,  # noqa: F811
                                                              monkeypatch):
    """Issue #33 item 6: `access grant --role pipeline` also grants EDIT on the registry's experiment, so the
    pipeline's account can log the run that registering needs; it still cannot release a failed version."""
    uri = mlflow_server
    name = "pipe-generator"
    register(model_dir, *_gated(tmp_path, "first"), uri=uri, name=name)  # the model exists (as the admin)
    (tmp_path / "pipe.pw").write_text("pipe-has-a-long-password\n")
    assert cli("access", "add-user", "pipe-bot", "--password-file", str(tmp_path / "pipe.pw"), "--tracking-uri", uri)[0] == 0
    code, out, err = cli("access", "grant", name, "--user", "pipe-bot", "--role", "pipeline", "--tracking-uri", uri)
    assert code == 0, err
    for k, v in _as("pipe-bot", "pipe-has-a-long-password").items():
        monkeypatch.setenv(k, v)
    reg = register(model_dir, *_gated(tmp_path, "by-pipe", copies=3), uri=uri, name=name)
    assert reg.version == "2" and not reg.gate_passed
    code, _, err = cli("promote", name, "2", "--force", "--reason", "because", "--tracking-uri", uri)
    assert code != 0 and "pipe-bot has EDIT on pipe-generator; an override needs MANAGE (the owner role)" in err
