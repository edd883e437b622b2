"""``bastion guard``: try the guards on your own text, run their evaluation, make a vault key.

Owns the command-line face of the guards (mounted by the main CLI as ``bastion guard``). Reads
files and stdin here, at the edge; builds the pipeline from ``--config`` (a YAML file whose
``guards:`` section is used, or the section itself). Does not own any detection.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.governance.guards._config import GuardsConfig
from bastion.governance.guards._errors import GuardError
from bastion.governance.guards._pipeline import GuardPipeline
from bastion.governance.guards._text import decode_bytes
from bastion.governance.guards._types import BOUNDARIES, ScanContext

app = typer.Typer(
    help="Scan text for personal data, prompt injection and secrets; evaluate the guards.",
    no_args_is_help=True,
)

#: Input larger than this is refused by the CLI (the pipeline itself caps what it scans).
MAX_CLI_INPUT = 64 * 1024 * 1024


def _load_config(path: Path | None, tier: str | None) -> GuardsConfig:
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise typer.BadParameter("config must be a mapping", param_hint="--config")
        data = dict(loaded.get("guards", loaded))
    if tier is not None:
        data["pii"] = {**data.get("pii", {}), "tier": tier}
    return GuardsConfig.from_mapping(data)


def _read(source: str) -> str:
    if source == "-":
        raw = sys.stdin.buffer.read(MAX_CLI_INPUT + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {source}", param_hint="FILE")
        with path.open("rb") as fh:
            raw = fh.read(MAX_CLI_INPUT + 1)
    if len(raw) > MAX_CLI_INPUT:
        raise typer.BadParameter(f"input larger than {MAX_CLI_INPUT} bytes", param_hint="FILE")
    return decode_bytes(raw)


@app.command()
def scan(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="File to scan, or - for stdin.")],
    mask: Annotated[bool, typer.Option("--mask", help="Print the masked text instead.")] = False,
    boundary: Annotated[
        str, typer.Option(help=f"Trust boundary: {', '.join(BOUNDARIES)}.")
    ] = "user_input",
    config: Annotated[
        Path | None, typer.Option(help="bastion.yaml (its guards: section) or a guards file.")
    ] = None,
    tier: Annotated[str | None, typer.Option(help="PII tier: fast or accurate.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    instructions: Annotated[
        Path | None,
        typer.Option(
            help="A file with the agent's instructions (system prompt): user input is also "
            "read against them (requests to reveal them, forbidden topics, private details)."
        ),
    ] = None,
) -> None:
    """Print what the guards find in FILE (or stdin), or the masked text with --mask."""
    if boundary not in BOUNDARIES:
        raise typer.BadParameter(f"unknown boundary {boundary!r}", param_hint="--boundary")
    pipeline = GuardPipeline(_load_config(config, tier))
    text = _read(source)
    system = None
    if instructions is not None:
        if not instructions.is_file():
            raise typer.BadParameter(f"no such file: {instructions}", param_hint="--instructions")
        system = _read(str(instructions))
    ctx = ScanContext(boundary=boundary, run_id="cli", instructions=system)  # type: ignore[arg-type]
    if mask:
        try:
            typer.echo(pipeline.mask(text, ctx), nl=False)
        except GuardError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        return
    decision = pipeline.scan(text, ctx)
    if as_json:
        body = {
            "decision": decision.kind,
            "actions": decision.actions,
            "truncated": decision.truncated,
            "errors": list(decision.errors),
            "findings": [f.to_dict() for f in decision.findings],
        }
        typer.echo(json.dumps(body, indent=2))
    else:
        typer.echo(f"decision: {decision.kind}  ({len(decision.findings)} findings)")
        for f in decision.findings:
            typer.echo(
                f"  {f.start:>7}-{f.end:<7} {f.guard:<9} {f.type:<22} {f.score:.2f}  "
                f"{f.detector}: {f.evidence}"
            )
        for err in decision.errors:
            typer.echo(f"  guard failed (failing closed): {err}")
        if decision.truncated:
            limit = pipeline.config.max_scan_chars
            typer.echo(f"  text longer than {limit} chars: the rest was not scanned")
    raise typer.Exit(1 if decision.kind in ("block", "review") else 0)


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option(help="The shared evaluation data folder.")] = Path(
        "../shared/data"
    ),
    tier: Annotated[str, typer.Option(help="PII tier: fast or accurate.")] = "fast",
    per_attack: Annotated[int, typer.Option(help="BIPIA contexts per attack.")] = 10,
) -> None:
    """Measure the guards on the public data sets (PII F1, injection recall and FPR)."""
    from bastion.governance.guards._eval import (
        SCORED_TYPES,
        DataMissing,
        eval_pii,
        injection_suite,
        load_pii_samples,
    )
    from bastion.governance.guards._injection import InjectionGuard
    from bastion.governance.guards._pii import PiiGuard

    try:
        samples = load_pii_samples(data)
    except DataMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    cfg = _load_config(None, tier)
    pii = PiiGuard(cfg.pii)
    prf = eval_pii(lambda t: [(f.type, f.start, f.end) for f in pii.scan(t)], samples)
    typer.echo(f"PII ({tier} tier) on synth_dataset_v2.json, {prf.texts} texts:")
    typer.echo(f"  {'type':<15} {'P':>6} {'R':>6} {'F1':>6} {'support':>8}")
    for kind in (*SCORED_TYPES, None):
        p, r, f1, n = prf.row(kind)
        typer.echo(f"  {kind or 'micro':<15} {p:6.3f} {r:6.3f} {f1:6.3f} {n:8d}")
    typer.echo(f"  {prf.texts_per_second:.0f} texts/s")
    guard = InjectionGuard(cfg.injection)
    typer.echo("Prompt injection:")
    for rate in injection_suite(lambda t, c: bool(guard.scan(t, c)), data, per_attack=per_attack):
        fpr = f"{rate.fpr:.3f} ({rate.false_positives}/{rate.benign})" if rate.benign else "n/a"
        typer.echo(
            f"  {rate.name:<38} recall {rate.recall:.3f} ({rate.detected}/{rate.attacks})"
            f"  FPR {fpr}  {rate.ms_per_kb:.3f} ms/KB"
        )


@app.command()
def key() -> None:
    """Print a new random vault key for guards.vault.key (keep it secret)."""
    typer.echo(base64.urlsafe_b64encode(os.urandom(32)).decode())
