"""Who may do what in the registry: users and per-model roles on an MLflow server that runs the
``basic-auth`` app (``make mlflow``, the demo's server and the cluster's all do).

Roles map onto MLflow's permissions on one registered model:

===========  ==========  ===============================================================
role         permission  may
===========  ==========  ===============================================================
consumer     READ        read versions, their gate records and artifacts; load and pull
reviewer     EDIT        the above, and move aliases (``synthgate promote``)
pipeline     EDIT        the above, and register versions (the pipeline's account)
owner        MANAGE      the above, and delete versions and grant roles
===========  ==========  ===============================================================

MLflow checks one permission for registering a version and for moving an alias (EDIT on the model),
so it cannot keep a pipeline account from promoting or a reviewer from editing a version's tags;
``synthgate promote``, ``publish``, ``pull`` and the registered pyfunc re-verify every gate record
whoever moved the alias (:mod:`synthgate.registry.registry`). A consumer cannot move an alias: MLflow
refuses it (HTTP 403), and :func:`refusal` turns that into a message naming the user and the
permission.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from synthgate.errors import SynthgateError

ROLES: dict[str, str] = {"consumer": "READ", "reviewer": "EDIT", "pipeline": "EDIT", "owner": "MANAGE"}
#: MLflow's permission names, weakest first.
PERMISSIONS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
RESOURCE = "registered_model"


class AccessDenied(SynthgateError):
    """MLflow refused a request: no or wrong credentials (401), or a missing permission (403)."""


#: (REST endpoint pattern) -> (what the request does, permission it needs). MLflow's error names the
#: endpoint but not the HTTP method: ``registered-models/alias`` serves reading an alias (READ), setting
#: it (EDIT) and deleting it (MANAGE), so its message names all three.
_ENDPOINTS: list[tuple[str, str, str]] = [
    (r"registered-models/alias", "read or move an alias of the model (reading needs READ, setting EDIT, "
                                 "deleting MANAGE)", "EDIT"),
    (r"model-versions/create", "register a model version", "EDIT"),
    (r"model-versions/set-tag|registered-models/set-tag", "set a tag", "EDIT"),
    # MLflow 3.17 (server/auth): a registered model's tag is deleted with EDIT (can_update), a version's with
    # MANAGE (can_delete)
    (r"registered-models/delete-tag", "delete a registered model's tag", "EDIT"),
    (r"model-versions/delete-tag", "delete a version's tag", "MANAGE"),
    (r"model-versions/update|registered-models/update|registered-models/rename", "edit the model", "EDIT"),
    (r"model-versions/delete|registered-models/delete", "delete a model or version", "MANAGE"),
    (r"registered-models/create", "create a registered model", "EDIT"),
    (r"runs/|experiments/|artifacts|logged-models", "log or read a run or its artifacts", "experiment"),
    (r"users/permissions/(grant|revoke)", "grant or revoke a role", "MANAGE"),
    (r"users/|roles/", "manage users", "admin"),
    (r"", "read the registry", "READ"),
]


def refusal(e: BaseException, model: str | None = None) -> AccessDenied | None:
    """:class:`AccessDenied` for an MLflow 401/403 (``e`` from any MLflow client call), naming the
    user, what was refused and the permission it needs; None for any other error."""
    code = getattr(e, "error_code", None)
    text = " ".join(str(e).split())
    if code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        m = re.search(r"error code (401|403)", text)
        if not m:
            return None
        code = "UNAUTHENTICATED" if m.group(1) == "401" else "PERMISSION_DENIED"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    endpoint = (re.search(r"endpoint (\S+)", text) or re.search(r"(/api/\S+)", text))
    path = endpoint.group(1) if endpoint else ""
    action, needed = next((a, p) for pat, a, p in _ENDPOINTS if re.search(pat, path))
    on = f" on registered model '{model}'" if model else ""
    if code == "UNAUTHENTICATED":
        if not user:
            return AccessDenied(f"the MLflow server requires a login to {action}: MLFLOW_TRACKING_USERNAME and "
                                "MLFLOW_TRACKING_PASSWORD are not set",
                                hint="set them (or MLFLOW_TRACKING_TOKEN); for the local server: "
                                     "`set -a; . mlruns/credentials.env; set +a`")
        return AccessDenied(f"the MLflow server rejected the credentials of user '{user}' (wrong password, or no "
                            "such user)", hint="check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; an admin "
                                               "creates users with `synthgate access add-user`")
    if needed == "experiment":
        return AccessDenied(f"MLflow refused user '{user or 'of the current login'}' to {action}: that needs a "
                            "permission on the run's experiment (EDIT to log, READ to read)",
                            hint="an admin grants it with MLflow's permissions API "
                                 "(/api/3.0/mlflow/users/permissions/grant, resource type experiment)")
    need = "an admin account" if needed == "admin" else f"{needed} permission{on}"
    role = {"READ": "consumer", "EDIT": "reviewer or pipeline", "MANAGE": "owner"}.get(needed)
    return AccessDenied(f"MLflow refused user '{user or 'of the current login'}' to {action}: that needs {need}",
                        hint=(f"an owner grants it: `synthgate access grant {model or 'MODEL'} --user {user or 'USER'} "
                              f"--role {role.split()[0]}`" if role else "ask an MLflow admin"))


def translate(e: BaseException, model: str | None = None) -> None:
    """Raise :func:`refusal`'s error for an MLflow 401/403; return otherwise."""
    denied = refusal(e, model)
    if denied is not None:
        raise denied from None


F = TypeVar("F", bound=Callable[..., Any])


def checked_access(fn: F) -> F:
    """Turn an MLflow 401/403 raised inside ``fn`` into :class:`AccessDenied`, naming the model when
    ``fn`` has a ``name`` argument."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AccessDenied:
            raise
        except Exception as e:
            try:
                model = sig.bind_partial(*args, **kwargs).arguments.get("name")
            except TypeError:
                model = None
            translate(e, model if isinstance(model, str) else None)
            raise

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Grant:
    user: str
    permission: str
    admin: bool

    @property
    def role(self) -> str:
        if self.admin:
            return "admin"
        # reviewers and the pipeline's account hold the same MLflow permission (EDIT): MLflow cannot tell them
        # apart, so neither can this list; the gatekeeper gives EDIT the same rights (release a passing version)
        roles = [r for r, p in ROLES.items() if p == self.permission]
        return "/".join(roles) if roles else self.permission.lower()


def _request(uri: str, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    try:
        resp = http_request(get_default_host_creds(uri), endpoint, method, **kwargs)
        verify_rest_response(resp, endpoint)
    except Exception as e:
        translate(e)
        raise
    return dict(resp.json() or {})


def _require_auth(uri: str) -> None:
    import requests

    try:
        info = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/users/current", timeout=10)
    except requests.RequestException as e:
        raise SynthgateError(f"the MLflow server at {uri} is not reachable ({type(e).__name__})") from None
    if info.status_code == 404:
        raise SynthgateError(f"the MLflow server at {uri} runs without authentication: there are no users or roles",
                             hint="start it with `make mlflow` or `synthgate mlflow-serve` (basic-auth); the "
                                  "cluster's server runs with it (k8s/base/mlflow)")


def add_user(uri: str, user: str, password: str) -> None:
    """Create ``user`` (admin only)."""
    _require_auth(uri)
    if len(password) < 12:
        raise SynthgateError("a password needs at least 12 characters")
    _request(uri, "POST", "/api/2.0/mlflow/users/create", json={"username": user, "password": password})


def grant(uri: str, model: str, user: str, role: str) -> str:
    """Give ``user`` the permission of ``role`` on registered model ``model``; return it."""
    if role not in ROLES:
        raise SynthgateError(f"unknown role {role!r}", hint=f"one of {', '.join(ROLES)}")
    _require_auth(uri)
    _request(uri, "POST", "/api/3.0/mlflow/users/permissions/grant",
             json={"username": user, "resource_type": RESOURCE, "resource_id": model, "permission": ROLES[role]})
    if role == "pipeline":  # registering logs a run first: EDIT on the registry's experiment too
        _grant_at_least(uri, user, "experiment", _experiment_id(uri), "EDIT")
    return ROLES[role]


def _grant_at_least(uri: str, user: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give ``user`` at least ``permission`` on the resource: granted if none, raised if weaker (MLflow has
    no update: revoke and grant), left alone if as strong (a second model's pipeline grant, an owner)."""
    key = {"username": user, "resource_type": resource_type, "resource_id": resource_id}
    try:
        have = str(_request(uri, "GET", "/api/3.0/mlflow/users/permissions/get", params=key).get("permission") or "")
    except AccessDenied:
        raise
    except Exception:
        have = ""
    if have in PERMISSIONS and PERMISSIONS.index(have) >= PERMISSIONS.index(permission):
        return
    try:  # an explicit weaker grant goes first (get reports the server's default when there is none)
        _request(uri, "POST", "/api/3.0/mlflow/users/permissions/revoke", json=key)
    except AccessDenied:
        raise
    except Exception:
        pass
    _request(uri, "POST", "/api/3.0/mlflow/users/permissions/grant", json={**key, "permission": permission})


def _experiment_id(uri: str) -> str:
    """The id of the experiment ``synthgate register`` logs to, created (as the admin) if missing."""
    from synthgate.registry.registry import EXPERIMENT

    try:
        got = _request(uri, "GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": EXPERIMENT})
        return str(got["experiment"]["experiment_id"])
    except SynthgateError:
        raise
    except Exception:
        got = _request(uri, "POST", "/api/2.0/mlflow/experiments/create", json={"name": EXPERIMENT})
        return str(got["experiment_id"])


def revoke(uri: str, model: str, user: str) -> None:
    _require_auth(uri)
    _request(uri, "POST", "/api/3.0/mlflow/users/permissions/revoke",
             json={"username": user, "resource_type": RESOURCE, "resource_id": model})


def list_access(uri: str, model: str) -> list[Grant]:
    """Every user's effective permission on ``model`` (admins: all of them), strongest first."""
    _require_auth(uri)
    users = _request(uri, "GET", "/api/2.0/mlflow/users/list").get("users", [])
    out = []
    for u in users:
        if u.get("is_admin"):
            out.append(Grant(u["username"], "MANAGE", True))
            continue
        got = _request(uri, "GET", "/api/3.0/mlflow/users/permissions/get",
                       params={"username": u["username"], "resource_type": RESOURCE, "resource_id": model})
        out.append(Grant(u["username"], str(got.get("permission", "NO_PERMISSIONS")), False))
    rank = {p: i for i, p in enumerate(PERMISSIONS)}
    return sorted(out, key=lambda g: (-int(g.admin), -rank.get(g.permission, 0), g.user))
