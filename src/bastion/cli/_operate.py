"""Operator commands: runs, the dead-letter queue, the review queue, and cancel.

Owns: turning each command into one call on ``Bastion``'s sync face and printing the result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from bastion._render import (
    dead_letter_json,
    render_run,
    run_json,
    runs_table,
    short,
    steps_table,
    when,
)
from bastion.app import Bastion
from bastion.cli._edge import console, fail, parse_json, parse_object, print_json, session
from bastion.core.errors import UserError
from bastion.core.records import DecisionKind, Run, RunStatus, Step

runs_app = typer.Typer(help="List and inspect runs.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue: inspect and replay failed runs.")
review_app = typer.Typer(help="The review queue: runs waiting for a human decision.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
RunId = Annotated[str, typer.Argument(help="The run id (see `bastion runs list`).")]

# ---- runs ---------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's runs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The newest runs first."""
    with session(ctx) as bastion:
        runs = bastion.call_sync(bastion.list_runs(status=status, tenant=tenant, limit=limit))
    if as_json:
        print_json([r.model_dump(mode="json", exclude={"spec"}) for r in runs])
    elif not runs:
        console.print("no runs")
    else:
        console.print(runs_table(runs))


def _load_run(
    bastion: Bastion, run_id: str, *, unmask: bool = False
) -> tuple[Run, list[Step], list[Step]]:
    async def load() -> tuple[Run, list[Step], list[Step]]:
        run = await bastion.get_run(run_id)
        steps = await bastion.steps(run_id)
        archived = await bastion.steps(run_id, archived=True)
        if unmask:
            shown, both = await bastion.reveal(run, steps + archived)
            return shown, both[: len(steps)], both[len(steps) :]
        return run, steps, archived

    return bastion.call_sync(load())


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: RunId,
    archived: Annotated[
        bool, typer.Option("--archived", help="Also list the steps a replay archived.")
    ] = False,
    as_json: JsonFlag = False,
    unmask: Annotated[
        bool,
        typer.Option(
            "--unmask",
            help="Show the personal data and secrets the guards sealed (needs the deployment's "
            "vault key; refused once the run's retention has ended).",
        ),
    ] = False,
) -> None:
    """A run and its step timeline: what happened, in order, with decisions and waits. With
    guards on, sealed values show as [TYPE#n] unless --unmask is given."""
    with session(ctx) as bastion:
        run, steps, old = _load_run(bastion, run_id, unmask=unmask)
    if as_json:
        data = run_json(run, steps)
        if archived:
            data["archived_steps"] = [s.model_dump(mode="json") for s in old]
        print_json(data)
        return
    render_run(console, run, steps, archived=0 if archived else len(old))
    if archived and old:
        console.print(steps_table(run, old, title="archived steps (before a replay)", live=False))


@runs_app.command("migrate")
def runs_migrate(
    ctx: typer.Context,
    run_id: RunId,
    by: Annotated[str, typer.Option(help="Who moves it (kept in the journal).")] = "operator",
    reason: Annotated[str, typer.Option(help="Why; kept in the journal.")] = "",
) -> None:
    """Move a run to its agent's current definition (a journaled note step). A run keeps the
    definition it started with until then; one stopped by `spec_changed` goes back to the
    queue."""
    with session(ctx) as bastion:
        run = bastion.call_sync(bastion.migrate(run_id, by=by, reason=reason))
    console.print(
        f"run {run.id} now uses {run.agent} version {run.spec.get('version', '?')} from step "
        f"{run.next_step} on; it is {run.status.value}"
    )


def cancel(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str, typer.Option(help="Why; kept with the run.")] = "cancelled by operator",
) -> None:
    """Cancel a run that has not finished; a worker executing it stops at its next step (a
    tool that may change the world finishes first and is recorded)."""
    with session(ctx) as bastion:
        run = bastion.call_sync(bastion.cancel(run_id, reason=reason))
    console.print(f"run {run.id} is {run.status.value}")


# ---- the dead-letter queue ----------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Open dead letters, newest first."""
    with session(ctx) as bastion:
        letters = bastion.call_sync(bastion.dead_letters(tenant=tenant))
    if as_json:
        print_json([dead_letter_json(d) for d in letters])
        return
    if not letters:
        console.print("the dead-letter queue is empty")
        return
    table = Table(title="dead letters", title_justify="left")
    for column in ("run", "agent", "tenant", "step", "error", "since"):
        table.add_column(
            column, overflow="fold", no_wrap=column in ("id", "run", "reason", "status")
        )
    for d in letters:
        table.add_row(
            d.run_id,
            d.agent,
            d.tenant,
            "" if d.step_no is None else str(d.step_no),
            f"{d.error.get('code')}: {short(d.error.get('message'), 60)}",
            when(datetime.fromtimestamp(d.created_at, tz=UTC)),
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(ctx: typer.Context, run_id: RunId, as_json: JsonFlag = False) -> None:
    """A dead-lettered run: its errors (with hints) and its step timeline."""
    with session(ctx) as bastion:
        run, steps, old = _load_run(bastion, run_id)
        letters = bastion.call_sync(bastion.dead_letters(include_resolved=True))
    mine = [d for d in letters if d.run_id == run_id]
    if as_json:
        print_json({**run_json(run, steps), "dead_letters": [dead_letter_json(d) for d in mine]})
        return
    render_run(console, run, steps, archived=len(old))
    for d in sorted(mine, key=lambda d: d.seq):
        state = f"resolved: {d.resolution}" if d.resolved_at else "open"
        console.print(
            f"dead letter #{d.seq} ({state}) at step {d.step_no}: "
            f"{d.error.get('code')}: {d.error.get('message')}"
        )
        if d.error.get("hint"):
            console.print(f"  hint: {d.error['hint']}")


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    run_id: RunId,
    from_step: Annotated[
        int | None,
        typer.Option(
            "--from-step",
            help="Re-execute from this step (default: the "
            "step that failed); later steps are archived.",
        ),
    ] = None,
    args: Annotated[
        str | None,
        typer.Option("--args", help="JSON arguments replacing the tool call's at --from-step."),
    ] = None,
    repeat_effects: Annotated[
        bool,
        typer.Option(
            "--repeat-effects",
            help="Replay over calls that may already have acted (non-idempotent tools); each "
            "waits for a person before it is made again.",
        ),
    ] = False,
) -> None:
    """Send a dead-lettered or failed run back to the queue."""
    arguments = parse_object(args, "--args") if args is not None else None
    with session(ctx) as bastion:
        run = bastion.call_sync(
            bastion.replay(
                run_id, from_step=from_step, arguments=arguments, repeat_effects=repeat_effects
            )
        )
    console.print(
        f"run {run.id} is {run.status.value} again from step {run.next_step}; "
        "a worker (`bastion worker`) will execute it"
    )


# ---- the review queue ---------------------------------------------------------------------


@review_app.command("list")
def review_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Runs waiting for a human, with what each one is waiting on."""
    with session(ctx) as bastion:
        waiting = bastion.call_sync(bastion.review_queue(tenant=tenant))
        pending = {r.id: bastion.call_sync(bastion.steps(r.id)) for r in waiting}
    rows = []
    for run in waiting:
        step = next((s for s in pending[run.id] if s.step_no == run.waiting_step), None)
        rows.append((run, step))
    if as_json:
        print_json(
            [
                {
                    "run": r.model_dump(mode="json", exclude={"spec"}),
                    "step": s.model_dump(mode="json") if s else None,
                }
                for r, s in rows
            ]
        )
        return
    if not rows:
        console.print("the review queue is empty")
        return
    table = Table(title="review queue", title_justify="left")
    for column in ("run", "agent", "tenant", "reason", "step", "proposed", "since"):
        table.add_column(
            column, overflow="fold", no_wrap=column in ("id", "run", "reason", "status")
        )
    for run, step in rows:
        table.add_row(
            run.id,
            run.agent,
            run.tenant,
            run.wait_reason.value if run.wait_reason else "",
            f"{run.waiting_step} {step.name if step else ''}",
            short(step.input if step else None, 70),
            when(run.updated_at),
        )
    console.print(table)


def _decide(ctx: typer.Context, run_id: str, kind: DecisionKind, **kwargs: Any) -> None:
    with session(ctx) as bastion:
        run = bastion.call_sync(bastion.decide(run_id, kind, **kwargs))
    console.print(f"{kind}: run {run.id} is {run.status.value}; a worker will continue it")


By = Annotated[str, typer.Option("--by", help="Who decides; recorded with the decision.")]


@review_app.command("approve")
def review_approve(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str, typer.Option(help="Why (optional).")] = "",
    by: By = "operator",
) -> None:
    """Let the waiting step go ahead as proposed."""
    _decide(ctx, run_id, "approve", reason=reason, by=by)


@review_app.command("reject")
def review_reject(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str, typer.Option(help="Why; the model is told.")],
    by: By = "operator",
) -> None:
    """Refuse the waiting step; the model hears the reason."""
    _decide(ctx, run_id, "reject", reason=reason, by=by)


@review_app.command("edit")
def review_edit(
    ctx: typer.Context,
    run_id: RunId,
    args: Annotated[
        str | None, typer.Option("--args", help="JSON arguments to use instead.")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", help="JSON final answer to use (output review).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (optional).")] = "",
    by: By = "operator",
) -> None:
    """Go ahead with corrected arguments (or, for an output review, a corrected answer)."""
    if args is None and output is None:
        fail(UserError("edit needs --args (tool arguments) or --output (a final answer)"))
    arguments = parse_object(args, "--args") if args is not None else None
    value = parse_json(output, "--output") if output is not None else None
    _decide(ctx, run_id, "edit", reason=reason, by=by, arguments=arguments, output=value)


@review_app.command("resolve")
def review_resolve(
    ctx: typer.Context,
    run_id: RunId,
    output: Annotated[str, typer.Option("--output", help="JSON result the step really had.")],
    reason: Annotated[str, typer.Option(help="Why (optional).")] = "",
    by: By = "operator",
) -> None:
    """For an outcome-unknown step: it did happen, and this was its result."""
    _decide(ctx, run_id, "resolve", reason=reason, by=by, output=parse_json(output, "--output"))
