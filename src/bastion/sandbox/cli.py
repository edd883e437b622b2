"""``bastion sandbox``: run a Python file in the sandbox like ``python3 FILE.py``; check a host.

Owns: the command line of the sandbox component (mounted by ``bastion.cli`` as ``bastion
sandbox``; also ``python -m bastion.sandbox``). Exit statuses of ``run``:

* the code's own status when it finished (a limit it hit is also named on stderr);
* 128+N when the code died of signal N, 137 when the sandbox killed it (wall time, output);
* 126 when the pre-check refused it; 125 when the sandbox is unavailable on this host.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.core.errors import BastionError, UserError
from bastion.sandbox._check import Layer, live_layers, static_layers
from bastion.sandbox._local import NamespaceOptions, NamespaceSandbox
from bastion.sandbox._types import ExecResult, Limits, check_input_name
from bastion.sandbox.precheck import GuardedSandbox, PrecheckPolicy

EXIT_KILLED = 137
EXIT_REFUSED = 126
EXIT_UNAVAILABLE = 125

app = typer.Typer(
    help="Run Python in Bastion's sandbox, and check which isolation layers this host has.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


async def _execute(
    code: str, files: dict[str, bytes], outputs: list[str], limits: Limits, precheck: bool
) -> ExecResult:
    # One execution: no pool and no zygote to start. Not calling start() skips only the
    # probe sandbox; the execution's own sandbox fails closed the same way.
    inner = NamespaceSandbox(NamespaceOptions(pool_size=0, zygote=False, default_limits=limits))
    sandbox = GuardedSandbox(inner, PrecheckPolicy(mode="block" if precheck else "off"))
    try:
        return await sandbox.execute(code, files=files, outputs=outputs, limits=limits)
    finally:
        await sandbox.aclose()


def _exit_status(result: ExecResult) -> int:
    if result.killed_reason == "precheck":
        return EXIT_REFUSED
    if result.exit_status is None:
        return EXIT_KILLED
    if result.exit_status < 0:
        return 128 - result.exit_status
    return result.exit_status


@app.command()
def run(
    file: Annotated[
        Path, typer.Argument(help="The Python file to run.", exists=True, dir_okay=False)
    ],
    timeout: Annotated[float, typer.Option(help="Wall-clock limit in seconds.")] = 10.0,
    memory: Annotated[
        int, typer.Option(help="Memory limit in MB (on top of the interpreter).")
    ] = 512,
    cpu: Annotated[
        int | None, typer.Option(help="CPU-time limit in seconds (default: timeout).")
    ] = None,
    precheck: Annotated[bool, typer.Option(help="Refuse code the static pre-check blocks.")] = True,
    input_files: Annotated[
        list[Path] | None, typer.Option("--input", help="A file to copy into the workdir.")
    ] = None,
    outputs: Annotated[
        list[str] | None, typer.Option("--output", help="Glob of workdir files to bring back.")
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Where returned files are written.")] = Path("."),
) -> None:
    """Run FILE.py isolated: its stdout, stderr and exit status become this command's."""
    try:
        limits = Limits(
            wall_seconds=timeout,
            cpu_seconds=cpu if cpu is not None else max(1, int(timeout + 0.999)),
            memory_bytes=memory * 2**20,
        )
        files = {p.name: p.read_bytes() for p in input_files or []}
        result = asyncio.run(
            _execute(file.read_text(encoding="utf-8"), files, outputs or [], limits, precheck)
        )
    except (BastionError, ValueError) as exc:
        hint = f"\n  hint: {exc.hint}" if isinstance(exc, BastionError) and exc.hint else ""
        sys.stderr.write(
            f"bastion sandbox: {exc if not isinstance(exc, BastionError) else exc.message}{hint}\n"
        )
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    for name, data in result.files.items():
        try:
            target = output_dir / check_input_name(name)
        except UserError:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if result.killed_reason not in (None, "precheck"):
        how = "killed" if result.exit_status is None else "stopped"
        sys.stderr.write(f"bastion sandbox: {how}: {result.killed_reason}\n")
    elif result.killed_reason == "precheck":
        sys.stderr.write("bastion sandbox: refused by the pre-check (--no-precheck to run it)\n")
    sys.stderr.flush()
    raise typer.Exit(_exit_status(result))


def _print_layers(title: str, layers: list[Layer]) -> None:
    typer.echo(title)
    for layer in layers:
        typer.echo(f"  {layer.status:<8} {layer.name:<18} {layer.detail}")
        if layer.hint and layer.status != "ok":
            typer.echo(f"  {'':<8} {'':<18} hint: {layer.hint}")


@app.command()
def check() -> None:
    """Report which isolation layers this host supports, then prove them in a real sandbox."""
    static = static_layers()
    _print_layers("Host:", static)
    live = asyncio.run(live_layers())
    _print_layers("Inside a sandbox:", live)
    missing = [layer.name for layer in static + live if layer.status == "missing"]
    if missing:
        typer.echo(f"Missing: {', '.join(missing)}. Bastion refuses to run code here.", err=True)
        raise typer.Exit(1)
    typer.echo("All required layers are in place.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the bearer key clients must send.")
    ] = "BASTION_SANDBOX_API_KEY",
    pool: Annotated[int, typer.Option(help="Warm sandboxes to keep.")] = 2,
) -> None:
    """Serve the remote sandbox API (POST /v1/executions) on this (isolated) host."""
    from bastion.sandbox.service import SandboxService

    key = os.environ.get(api_key_env)
    if not key:
        typer.echo(f"bastion sandbox: set {api_key_env} to the key clients will send.", err=True)
        raise typer.Exit(2)
    service = SandboxService(
        lambda: NamespaceSandbox(NamespaceOptions(pool_size=pool)),
        host=host,
        port=port,
        api_key=key,
    )
    try:
        url = service.start()
    except BastionError as exc:
        typer.echo(f"bastion sandbox: {exc.message}\n  hint: {exc.hint}", err=True)
        service.close()
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    typer.echo(f"Serving the sandbox API on {url}/v1/executions (Ctrl-C stops).")
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
