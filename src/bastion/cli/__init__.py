"""The ``bastion`` command line: the operator's edge onto one ``Bastion``.

Owns: the command tree. Commands live in ``_operate`` (runs, dead letters, review, cancel) and
``_admin`` (worker, db, config, demo); ``_edge`` reads the environment and reports errors;
``_render`` prints runs. The ``sandbox`` and ``guard`` commands belong to their components and
are mounted here when those are installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from bastion._render import render_run
from bastion.cli._admin import config_app, db_app, demo, worker
from bastion.cli._edge import Options, fail
from bastion.cli._operate import cancel, dlq_app, review_app, runs_app
from bastion.core.errors import BastionError

__all__ = ["app", "main", "render_run"]

app = typer.Typer(
    name="bastion",
    help="Bastion: a governed runtime for AI agents. The model plans; Bastion executes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="BASTION_CONFIG",
            help="The bastion.yaml to use (default: ./bastion.yaml if present). "
            "BASTION_* environment variables override it.",
        ),
    ] = None,
) -> None:
    ctx.obj = Options(config=config)


app.add_typer(runs_app, name="runs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(review_app, name="review")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.command("cancel")(cancel)
app.command("worker")(worker)
app.command("demo")(demo)


class ComponentMissing(BastionError):
    code = "component_not_installed"
    default_hint = "Install Bastion with that component, e.g. `pip install 'bastion[all]'`."


def mount(app: typer.Typer, name: str, module: str, what: str) -> None:
    """Mount ``module:app`` as ``bastion <name>`` when that component is installed, else a
    command that says it is not."""
    try:
        sub = importlib.import_module(module).app
    except ModuleNotFoundError as exc:
        problem = f"the {what} component is not installed ({exc.name} is missing)"
    except Exception as exc:  # noqa: BLE001 - a broken optional component must not break the CLI
        problem = f"the {what} component failed to load: {type(exc).__name__}: {exc}"
    else:
        app.add_typer(sub, name=name)
        return

    @app.command(
        name,
        help=f"The {what} (not installed).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def missing() -> None:
        fail(ComponentMissing(problem))


mount(app, "sandbox", "bastion.sandbox.cli", "sandbox")
mount(app, "guard", "bastion.governance.guards.cli", "guards")


def main() -> None:
    """The ``bastion`` console script."""
    app()
