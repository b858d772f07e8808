"""The gatekeeper's commands: make its key, serve it, revoke a release or a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgate.cli._app import GatekeeperOpt, UriOpt, app, console

gatekeeper_app = typer.Typer(help="The gatekeeper: the only holder of the signing key; signs releases, datasets, "
                                  "policy pins and revocations after recomputing the verdict.", no_args_is_help=True)
HomeOpt = Annotated[Path, typer.Option(help="the gatekeeper's folder: gatekeeper.key (0600), trust.json, its state")]


@gatekeeper_app.command("init")
def gatekeeper_init(home: HomeOpt = Path("mlruns/gatekeeper")) -> None:
    """Create the gatekeeper's Ed25519 key (0600) and the trust root consumers verify with."""
    from synthgate.trust.keys import generate_key

    key, trust = generate_key(home)
    console.print(f"gatekeeper key {key} (keep it secret); trust root {trust}: give it to every consumer "
                  f"(SYNTHGATE_TRUST_ROOT={trust})", highlight=False)


@gatekeeper_app.command("serve")
def gatekeeper_serve(
    home: HomeOpt = Path("mlruns/gatekeeper"),
    policy: Annotated[Path | None, typer.Option(help="the default policy (gates.yaml) versions are released under "
                                                     "(default: the built-in defaults)")] = None,
    key: Annotated[Path | None, typer.Option(help="the signing key (default HOME/gatekeeper.key)")] = None,
    trust_root: Annotated[Path | None, typer.Option(help="the trust root its key must be in (default "
                                                         "HOME/trust.json)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8090,
    tracking_uri: UriOpt = None,
    store: Annotated[list[str] | None, typer.Option(
        envvar="SYNTHGATE_GATEKEEPER_STORES", help="a store (s3://BUCKET/PREFIX or a folder) it reads staged "
        "packages from; repeat for several (the variable: separated by spaces); none: any store a caller names")] = None,
) -> None:
    """Serve the gatekeeper (it logs in to MLflow as MLFLOW_TRACKING_USERNAME, an admin)."""
    from synthgate.registry.client import tracking_uri as _uri
    from synthgate.registry.gatekeeper import Gatekeeper
    from synthgate.registry.gatekeeper_app import serve

    gk = Gatekeeper.open(home, policy, _uri(tracking_uri), key, trust_root, tuple(store or ()))
    console.print(f"gatekeeper on http://{host}:{port} for {_uri(tracking_uri)}; key "
                  f"{gk.signer.public_key.keyid[:16]}; default policy {policy or 'the built-in defaults'}; stores "
                  f"{', '.join(gk.stores) or 'any'}", highlight=False)
    serve(gk, host, port)


@gatekeeper_app.command("revoke")
def gatekeeper_revoke(
    subject: Annotated[str, typer.Argument(help="MODEL/VERSION, or dataset:NAME/VERSION")],
    reason: Annotated[str, typer.Option(help="why (shown to every consumer)")],
    gatekeeper: GatekeeperOpt = None,
) -> None:
    """Withdraw a release or a published dataset: a signed revocation that pull and load honour (reviewers and
    owners of the model it belongs to)."""
    from synthgate.registry.gatekeeper_app import call

    call("/v1/revocations", {"subject": subject, "reason": reason}, gatekeeper)
    console.print(f"revoked {subject}: {reason}", highlight=False)


app.add_typer(gatekeeper_app, name="gatekeeper")
