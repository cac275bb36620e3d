"""``keyward sandbox`` and its cmctl-like subcommands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
import kr8s.asyncio

from keyward.errors import UserError
from keyward.host import run_until_signalled


@click.group(invoke_without_command=True)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".keyward"),
    show_default=True,
    help="Where the token (and the kubeconfig, by default) live.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="API port on 127.0.0.1; 0 picks a free port.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the kubeconfig here once the API answers [default: STATE_DIR/kubeconfig].",
)
@click.option(
    "--no-operator", is_flag=True, help="API, stand-in and token only (tests run their own operator)."
)
@click.option(
    "--auto-approve",
    is_flag=True,
    help="Approve CertificateRequests like cert-manager's built-in "
    "approver (default: manual approval, as in the TCS seed).",
)
@click.option(
    "--faults",
    default="",
    metavar="SPEC",
    help="Answer some requests as an unfriendly cluster would, e.g. "
    "'500@verb=patch,resource=certificaterequests/status,first=3;429/2@rate=0.2,seed=1;watch-window=50' "
    "(effects 500, 429[/RETRY_AFTER], 403, 422, delay=S, cut-watch=N, watch-window=N; filters verb, "
    "resource[/sub], user, namespace, first, every, rate, seed; see docs/SANDBOX-API.md).",
)
@click.pass_context
def sandbox(
    ctx: click.Context,
    state_dir: Path,
    port: int,
    kubeconfig: Path | None,
    no_operator: bool,
    auto_approve: bool,
    faults: str,
) -> None:
    """Run a local Kubernetes API emulation with keyward in it (development and demos only).

    The API authenticates and authorizes every request like kube-apiserver (RBAC); the kubeconfig it
    writes is cluster-admin. The cert-manager stand-in acts as its ServiceAccount with cert-manager's
    RBAC, including approval of keyward's issuer kinds."""
    if ctx.invoked_subcommand is not None:
        return
    from keyward.sandbox.runner import SandboxOptions, serve

    options = SandboxOptions(
        state_dir=state_dir,
        port=port,
        kubeconfig=kubeconfig,
        run_operator=not no_operator,
        auto_approve=auto_approve,
        faults=faults,
    )
    run_until_signalled(serve(options))


def _cmctl(
    action: Callable[..., Awaitable[None]],
    name: str,
    namespace: str,
    kubeconfig: str | None,
    **kwargs: object,
) -> None:
    from keyward.kube.client import Kube

    async def go() -> None:
        kube = Kube(await kr8s.asyncio.api(kubeconfig=kubeconfig))
        await action(kube, name, namespace, **kwargs)

    try:
        asyncio.run(go())
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"cannot reach the sandbox API ({type(exc).__name__}: {exc})",
            "start `keyward sandbox` and export the KUBECONFIG it prints",
        ) from exc


_ns = click.option("-n", "--namespace", default="default", show_default=True)
_kc = click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig of the sandbox [env KUBECONFIG].")


@sandbox.command()
@click.argument("name")
@_ns
@_kc
@click.option("--reason", default="KeywardSandbox", show_default=True)
@click.option("--message", default="manually approved by keyward sandbox", show_default=True)
def approve(name: str, namespace: str, kubeconfig: str | None, reason: str, message: str) -> None:
    """Approve a CertificateRequest (like `cmctl approve`)."""
    from keyward.sandbox.certmanager import approve as do_approve

    _cmctl(do_approve, name, namespace, kubeconfig, reason=reason, message=message)
    click.echo(f"Approved CertificateRequest '{namespace}/{name}'")


@sandbox.command()
@click.argument("name")
@_ns
@_kc
@click.option("--reason", default="KeywardSandbox", show_default=True)
@click.option("--message", default="manually denied by keyward sandbox", show_default=True)
def deny(name: str, namespace: str, kubeconfig: str | None, reason: str, message: str) -> None:
    """Deny a CertificateRequest (like `cmctl deny`)."""
    from keyward.sandbox.certmanager import deny as do_deny

    _cmctl(do_deny, name, namespace, kubeconfig, reason=reason, message=message)
    click.echo(f"Denied CertificateRequest '{namespace}/{name}'")


@sandbox.command()
@click.argument("name")
@_ns
@_kc
def renew(name: str, namespace: str, kubeconfig: str | None) -> None:
    """Renew a Certificate now (like `cmctl renew`)."""
    from keyward.sandbox.certmanager import renew as do_renew

    _cmctl(do_renew, name, namespace, kubeconfig)
    click.echo(f"Manually triggered issuance of Certificate '{namespace}/{name}'")
