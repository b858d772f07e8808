"""Registry access without a server: MLflow's 401/403 become messages that name the user, the action
and the permission; the local server's credentials are private; a server without authentication has
no roles to grant."""

import os
import stat

import pytest

from synthgate.errors import SynthgateError
from synthgate.registry import access
from synthgate.registry.server import local_credentials


class _Refused(Exception):
    def __init__(self, code: str, endpoint: str, status: int) -> None:
        super().__init__(f"API request to endpoint {endpoint} failed with error code {status} != 200. "
                         "Response body: 'Permission denied'")
        self.error_code = code


def test_a_refusal_names_the_user_the_action_and_the_permission(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")
    e = access.refusal(_Refused("PERMISSION_DENIED", "/api/2.0/mlflow/model-versions/create", 403), "m")
    assert e.message == ("MLflow refused user 'carol' to register a model version: that needs EDIT permission "
                         "on registered model 'm'")
    assert "synthgate access grant m --user carol --role reviewer" in e.hint
    e = access.refusal(_Refused("PERMISSION_DENIED", "/api/2.0/mlflow/registered-models/alias", 403))
    assert "to read or move an alias of the model (reading needs READ, setting EDIT, deleting MANAGE)" in e.message
    e = access.refusal(_Refused("PERMISSION_DENIED", "/api/2.0/mlflow/model-versions/delete-tag", 403), "m")
    assert "to delete a version's tag: that needs MANAGE permission" in e.message
    e = access.refusal(_Refused("PERMISSION_DENIED", "/api/2.0/mlflow/runs/create", 403), "m")
    assert "permission on the run's experiment" in e.message and "resource type experiment" in e.hint
    e = access.refusal(_Refused("PERMISSION_DENIED", "/api/2.0/mlflow/model-versions/delete", 403), "m")
    assert "needs MANAGE permission" in e.message and "--role owner" in e.hint
    e = access.refusal(_Refused("UNAUTHENTICATED", "/api/2.0/mlflow/registered-models/get", 401))
    assert e.message == "the MLflow server rejected the credentials of user 'carol' (wrong password, or no such user)"
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    e = access.refusal(_Refused("UNAUTHENTICATED", "/api/2.0/mlflow/registered-models/get", 401))
    assert "requires a login to read the registry" in e.message and "MLFLOW_TRACKING_PASSWORD" in e.message
    # a plain HTTP error text (no MLflow error code) is recognised too; anything else is not a refusal
    assert access.refusal(RuntimeError("endpoint /api/2.0/mlflow/runs/create failed with error code 403")) is not None
    assert access.refusal(_Refused("RESOURCE_DOES_NOT_EXIST", "/api/2.0/mlflow/registered-models/get", 404)) is None
    assert access.refusal(ValueError("boom")) is None


def test_checked_access_names_the_model():
    @access.checked_access
    def promote(name: str, version: str) -> None:
        raise _Refused("PERMISSION_DENIED", "/api/2.0/mlflow/registered-models/alias", 403)

    with pytest.raises(access.AccessDenied, match="on registered model 'mednist-generator'"):
        promote("mednist-generator", "1")

    @access.checked_access
    def other() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        other()


def test_a_server_without_authentication_has_no_roles(monkeypatch):
    import requests

    class _R:
        status_code = 404

    monkeypatch.setattr(requests, "get", lambda *a, **k: _R())
    with pytest.raises(SynthgateError, match="runs without authentication: there are no users or roles"):
        access.grant("http://127.0.0.1:1", "m", "carol", "consumer")
    with pytest.raises(SynthgateError, match="unknown role 'boss'"):
        access.grant("http://127.0.0.1:1", "m", "carol", "boss")


def test_local_credentials_are_private_and_stable(tmp_path):
    c = local_credentials(tmp_path)
    assert c.username == "admin" and len(c.password) >= 24
    assert stat.S_IMODE(c.path.stat().st_mode) == 0o600
    assert local_credentials(tmp_path) == c  # generated once
    assert c.env() == {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": c.password}
    os.chmod(c.path, 0o644)
    with pytest.raises(SynthgateError, match="may be read by other users") as e:
        local_credentials(tmp_path)
    assert e.value.hint == f"chmod 600 {c.path}"
    with pytest.raises(SynthgateError, match="no MLflow credentials"):
        local_credentials(tmp_path / "other", create=False)


def test_search_filters_cannot_be_broken_out_of():
    """Issue #33: a model named ``q' OR name LIKE '%`` made `synthgate models` fail for everyone."""
    from synthgate.errors import DataError
    from synthgate.registry.client import equals_filter

    assert equals_filter("name", "q' OR name LIKE '%") == "name = \"q' OR name LIKE '%\""
    assert equals_filter("name", 'a "b"') == "name = 'a \"b\"'"
    with pytest.raises(DataError, match="holds both kinds of quote and cannot be searched for safely"):
        equals_filter("name", "a'\"")


def test_access_list_names_reviewers_and_the_pipeline_alike():
    from synthgate.registry.access import Grant

    assert Grant("rita", "EDIT", False).role == "reviewer/pipeline"
    assert Grant("carol", "READ", False).role == "consumer" and Grant("o", "MANAGE", False).role == "owner"
    assert Grant("admin", "MANAGE", True).role == "admin"
