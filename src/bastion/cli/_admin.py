"""Admin commands: ``worker``, ``db upgrade``, ``config check`` and ``demo``.

Owns: serving a worker until a signal (runs in flight are released), applying migrations, and
printing the effective configuration with its secrets hidden.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from bastion.app import Bastion
from bastion.cli._edge import config_path, console, print_json, reported, safe_url, settings_for

db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

# ---- worker -------------------------------------------------------------------------------


def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Runs executed at once (default: worker.concurrency)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING...")] = "INFO",
    health_file: Annotated[
        Path | None,
        typer.Option(
            "--health-file",
            help="Write the worker's health report (JSON) here (default: worker.health_file).",
        ),
    ] = None,
    health: Annotated[
        bool,
        typer.Option(
            "--health",
            help="Do not serve: read the health file of a running worker and exit 0 if all "
            "its loops are alive and the report is fresh, else 1 (a liveness probe).",
        ),
    ] = False,
) -> None:
    """Claim and execute runs until SIGINT or SIGTERM; runs in flight are released cleanly."""
    if health:
        with reported():
            settings = settings_for(ctx)
        _check_health(health_file or _configured(settings.worker.health_file))
        return
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with reported():
        bastion = Bastion.from_config(config_path(ctx), env=os.environ)
        asyncio.run(serve_until_signal(bastion, concurrency, health_file))


def _configured(path: str | None) -> Path:
    if path is None:
        console.print("no health file: pass --health-file or set worker.health_file", style="red")
        raise typer.Exit(2)
    return Path(path)


def _check_health(path: Path) -> None:
    from bastion.engine import read_health

    ok, problems, report = read_health(path, max_age=30.0)
    loops = report.get("loops") or {}
    if ok:
        console.print(
            f"worker {report.get('worker_id')} is healthy: {len(loops)} loop(s) alive, "
            f"{report.get('executed', 0)} execution(s), {report.get('dead_lettered', 0)} "
            "run(s) moved to dead letters"
        )
        return
    for problem in problems:
        console.print(f"unhealthy: {problem}", style="red")
    raise typer.Exit(1)


async def serve_until_signal(
    bastion: Bastion, concurrency: int | None, health_file: Path | None = None
) -> None:
    """Serve until SIGINT or SIGTERM; the worker then releases the runs it was executing."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with bastion:
        w = bastion.worker(
            concurrency=concurrency, health_file=str(health_file) if health_file else None
        )
        if not bastion.agents:
            console.print("no agents are configured: runs cannot execute", style="yellow")
        console.print(
            f"worker {w.worker_id}: {w.concurrency} loop(s) on "
            f"{safe_url(bastion.settings.store)}; Ctrl-C or SIGTERM stops it"
        )
        await w.serve(stop)
        console.print(
            f"worker {w.worker_id} stopped after {w.executed} execution(s); "
            "runs in flight were released"
        )


# ---- db and config ------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply missing schema migrations; prints what was applied and the schema version."""
    with reported():
        settings = settings_for(ctx)
        applied, version, latest = asyncio.run(Bastion(settings).upgrade_store())
    console.print(f"store: {safe_url(settings.store)}")
    if applied:
        for v, name in applied:
            console.print(f"applied migration {v}: {name}")
    else:
        console.print("no migrations to apply: the schema is up to date")
    console.print(f"schema version: {version} (latest known: {latest})")


_SECRET_WORDS = ("key", "token", "secret", "password", "authorization", "cookie")


def _hide_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            secret = any(w in str(key).lower() for w in _SECRET_WORDS) and not str(key).endswith(
                "_env"
            )
            out[key] = "***" if secret and value not in (None, "", {}) else _hide_secrets(value)
        return out
    if isinstance(data, list):
        return [_hide_secrets(v) for v in data]
    return data


@config_app.command("check")
def config_check(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Validate the configuration (file + environment) and print the effective settings."""
    path = config_path(ctx)
    with reported():
        settings = settings_for(ctx)
        # Composing checks what loading cannot: tool modules import, agents' tools exist.
        Bastion(settings, env=os.environ)
    effective = _hide_secrets(settings.model_dump(mode="json"))
    effective["store"] = safe_url(settings.store)
    keys = {
        name: ("set" if os.environ.get(p.api_key_env) else "missing") if p.api_key_env else None
        for name, p in settings.models.providers.items()
    }
    if as_json:
        print_json({"source": path or "defaults", "settings": effective, "api_keys": keys})
        return
    source = path or ("./bastion.yaml" if Path("bastion.yaml").exists() else "defaults")
    console.print(f"configuration OK ({source} + environment)")
    typer.echo(yaml.safe_dump(effective, sort_keys=False).rstrip())
    for name, state in keys.items():
        if state is not None:
            env_name = settings.models.providers[name].api_key_env
            console.print(f"provider {name}: api key from ${env_name} is {state}")


def demo(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where to keep the demo's databases (default: a temporary directory)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Run the agent on a real model, e.g. openai:gpt-4o-mini or "
            "local:smollm2 (default: BASTION_MODEL, else the script)."
        ),
    ] = None,
) -> None:
    """A customer-operations agent end to end, with no services and no API key."""
    from bastion.demo.run import DemoOptions, run_demo

    chosen = model or os.environ.get("BASTION_MODEL") or None
    with reported():
        ok = run_demo(
            DemoOptions(directory=directory, model=chosen, config=config_path(ctx)),
            env=dict(os.environ),
            out=console,
        )
    if not ok:
        raise typer.Exit(1)
