"""The registry's servers and users: the local MLflow server, access (users and roles), the promotion guard."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from synthgate.cli._app import UriOpt, app, console
from synthgate.errors import SynthgateError


@app.command("mlflow-stop")
def mlflow_stop(root: Annotated[Path, typer.Option(help="the demo's MLflow folder")] = Path("mlruns")) -> None:
    """Stop an MLflow server that `synthgate demo` left running."""
    from synthgate.registry.server import stop_server

    console.print("stopped" if stop_server(root) else f"no server recorded under {root}")


@app.command("mlflow-serve")
def mlflow_serve(
    root: Annotated[Path, typer.Option(help="folder of the stores and credentials")] = Path("mlruns"),
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="without authentication (anyone who reaches the port "
                                                             "may do anything)")] = False,
    policy: Annotated[Path | None, typer.Option(help="the local gatekeeper's default policy")] = Path("gates.yaml"),
) -> None:
    """Run the local MLflow server in the foreground (`make mlflow`), with authentication unless --no-auth,
    and the local gatekeeper beside it (key and trust root under ROOT/gatekeeper)."""
    import time

    from synthgate.registry import server as srv

    uri, _ = srv.start_server(root, port, auth=not no_auth)
    if not no_auth:
        creds = srv.local_credentials(root, create=False)
        console.print(f"MLflow at {uri}; admin '{creds.username}', password in {creds.path} (mode 0600). "
                      f"For this shell: [bold]set -a; . {creds.path}; set +a[/]", highlight=False)
        url = srv.start_gatekeeper(root, uri, policy if policy is not None and policy.exists() else None)
        console.print(f"gatekeeper at {url}; consumers verify with SYNTHGATE_TRUST_ROOT={root / 'gatekeeper' / 'trust.json'}",
                      highlight=False)
    else:
        console.print(f"MLflow at {uri} [red]without authentication[/]", highlight=False)
    try:
        while srv.running_server(root):
            time.sleep(2)
    finally:
        srv.stop_server(root)


access_app = typer.Typer(help="Registry users and roles (an MLflow server with authentication; admins and owners).",
                         no_args_is_help=True)


@access_app.command("add-user")
def access_add_user(
    user: Annotated[str, typer.Argument(help="user name")],
    password_file: Annotated[Path | None, typer.Option(help="read the password from this file (default: generate "
                                                            "one into USER.credentials.env, mode 0600)")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Create a registry user (admin only)."""
    import secrets

    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    uri = _uri(tracking_uri)
    if password_file is not None:
        access.add_user(uri, user, password_file.read_text().strip())
        console.print(f"created user {user}")
        return
    out = Path(f"{user}.credentials.env")
    if out.exists():
        raise SynthgateError(f"{out} exists", hint="move it away, or pass --password-file")
    password = secrets.token_urlsafe(18)
    access.add_user(uri, user, password)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"MLFLOW_TRACKING_USERNAME={user}\nMLFLOW_TRACKING_PASSWORD={password}\n")
    console.print(f"created user {user}; credentials in {out} (mode 0600): hand them over, then delete the file")


@access_app.command("grant")
def access_grant(
    name: Annotated[str, typer.Argument(help="registered model name")],
    user: Annotated[str, typer.Option(help="user name")],
    role: Annotated[str, typer.Option(help="consumer (READ), reviewer or pipeline (EDIT), owner (MANAGE)")],
    tracking_uri: UriOpt = None,
) -> None:
    """Give a user a role on one registered model."""
    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    console.print(f"{user} is {role} of {name} ({access.grant(_uri(tracking_uri), name, user, role)})")


@access_app.command("revoke")
def access_revoke(name: Annotated[str, typer.Argument(help="registered model name")],
                  user: Annotated[str, typer.Option(help="user name")], tracking_uri: UriOpt = None) -> None:
    """Remove a user's role on a registered model (the server's default permission applies again)."""
    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    access.revoke(_uri(tracking_uri), name, user)
    console.print(f"revoked {user} on {name}")


@access_app.command("list")
def access_list(name: Annotated[str, typer.Argument(help="registered model name")], tracking_uri: UriOpt = None) -> None:
    """Who may do what on a registered model."""

    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    table = Table("user", "role", "MLflow permission")
    for g in access.list_access(_uri(tracking_uri), name):
        table.add_row(g.user, g.role, g.permission)
    console.print(table)


app.add_typer(access_app, name="access")


guard_app = typer.Typer(help="The promotion guard: reverts a protected alias set on a version that failed its gate.",
                        no_args_is_help=True)


SecretOpt = Annotated[Path, typer.Option(help="file with the webhook's shared secret (at least 16 characters)")]


PolicyOpt = Annotated[Path | None, typer.Option(help="gates.yaml every holder of a protected alias must be gated with "
                                                     "(the guard's own copy; default: the registry's pin)")]


def _policy_hash(policy: Path | None) -> str | None:
    from synthgate.gates.policy import load_policy

    return load_policy(policy).policy_hash() if policy is not None else None


@guard_app.command("serve")
def guard_serve(
    secret_file: SecretOpt,
    tracking_uri: UriOpt = None,
    alias: Annotated[list[str] | None, typer.Option(help="protected alias (repeatable; default: approved)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8089,
    state: Annotated[Path, typer.Option(help="SQLite file: seen deliveries, last approved holders")] = Path(
        "guard.db"),
    sweep_every: Annotated[float, typer.Option(help="seconds between sweeps of every protected alias")] = 300.0,
    policy: PolicyOpt = None,
    webhook_name: Annotated[str, typer.Option(help="MLflow webhook checked at every sweep ('' : not checked)")] = (
        "synthgate-guard"),
) -> None:
    """Receive MLflow's registry webhooks (POST /webhook) and sweep the protected aliases."""
    from synthgate.registry import guard as g
    from synthgate.registry.client import tracking_uri as _uri

    gd = g.Guard(_uri(tracking_uri), g.read_secret(secret_file), state, tuple(alias or ("approved",)),
                 _policy_hash(policy), webhook_name or None)
    console.print(f"guard on http://{host}:{port}/webhook for {_uri(tracking_uri)}; protected: "
                  f"{', '.join(gd.aliases)}; sweeping every {sweep_every:.0f} s", highlight=False)
    g.serve(gd, host, port, sweep_every)


@guard_app.command("register-webhook")
def guard_register_webhook(
    url: Annotated[str, typer.Argument(help="the guard's webhook URL, e.g. http://synthgate-guard:8089/webhook")],
    secret_file: SecretOpt,
    tracking_uri: UriOpt = None,
) -> None:
    """Create (or replace) the MLflow webhook that delivers alias and tag events to the guard (admin)."""
    from synthgate.registry import guard as g
    from synthgate.registry.client import tracking_uri as _uri

    wid = g.register_webhook(_uri(tracking_uri), url, g.read_secret(secret_file))
    console.print(f"webhook {wid}: {', '.join(g.EVENTS)} -> {url}")


@guard_app.command("sweep")
def guard_sweep(tracking_uri: UriOpt = None,
                alias: Annotated[list[str] | None, typer.Option(help="protected alias (repeatable)")] = None,
                state: Annotated[Path, typer.Option(help="the guard's SQLite file")] = Path("guard.db"),
                policy: PolicyOpt = None) -> None:
    """Check every protected alias once (what the service does at start and every few minutes)."""
    from synthgate.registry import guard as g
    from synthgate.registry.client import tracking_uri as _uri

    done = g.Guard(_uri(tracking_uri), "", state, tuple(alias or ("approved",)),  # no deliveries: no secret
                   _policy_hash(policy)).sweep()
    console.print("\n".join(done) or "every protected alias holds a version that may hold it")


app.add_typer(guard_app, name="guard")

