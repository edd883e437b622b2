"""Conversion between records (``Run``, ``Step``) and table rows. Owns nothing else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from bastion.core.errors import CorruptRecord
from bastion.core.messages import Usage
from bastion.core.records import Decision, Run, RunStatus, Step, StepKind, StepStatus, WaitReason

#: Step columns an upsert may change (the key and started_at stay).
STEP_MUTABLE = (
    "kind",
    "name",
    "status",
    "input",
    "input_hash",
    "output",
    "error",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "decision",
    "finished_at",
)

_JSON_RUN_FIELDS = frozenset({"input", "output", "error", "spec", "overrides", "confirm_steps"})


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


#: One encoder for every row (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_default)


def dumps(value: Any) -> str | None:
    if value is None:
        return None
    return _ENCODER.encode(value)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def dt_required(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def run_to_row(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "tenant": run.tenant,
        "agent": run.agent,
        "status": run.status.value,
        "input": dumps(run.input),
        "output": dumps(run.output),
        "error": dumps(run.error),
        "wait_reason": run.wait_reason.value if run.wait_reason else None,
        "waiting_step": run.waiting_step,
        "version": run.version,
        "attempt": run.attempt,
        "next_step": run.next_step,
        "input_tokens": run.usage.input_tokens,
        "output_tokens": run.usage.output_tokens,
        "cost_usd": run.usage.cost_usd,
        "spec": dumps(run.spec),
        "spec_digest": run.spec_digest,
        "overrides": dumps(run.overrides),
        "confirm_steps": dumps(run.confirm_steps) if run.confirm_steps else None,
        "lease_owner": run.lease_owner,
        "lease_expires_at": ts(run.lease_expires_at),
        "not_before": ts(run.not_before),
        "created_at": ts(run.created_at),
        "updated_at": ts(run.updated_at),
        "ended_at": ts(run.ended_at),
        "principal": run.principal,
        "schema_version": run.schema_version,
    }


def row_to_run(row: Any) -> Run:
    """The ``Run`` in a row; ``CorruptRecord`` (naming the run) if it cannot be decoded."""
    m = getattr(row, "_mapping", row)  # SQLAlchemy row, sqlite3.Row or asyncpg Record
    try:
        return _decode_run(m)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        try:
            run_id = str(m["id"])
        except (KeyError, IndexError, TypeError):
            run_id = None
        raise CorruptRecord(
            f"run {run_id!r} cannot be read back from the store: {type(exc).__name__}: {exc}",
            run_id=run_id,
        ) from exc


def _decode_run(m: Any) -> Run:
    return Run.model_construct(
        id=m["id"],
        tenant=m["tenant"],
        agent=m["agent"],
        status=RunStatus(m["status"]),
        input=loads(m["input"]),
        output=loads(m["output"]),
        error=loads(m["error"]),
        wait_reason=WaitReason(m["wait_reason"]) if m["wait_reason"] else None,
        waiting_step=m["waiting_step"],
        version=m["version"],
        attempt=m["attempt"],
        next_step=m["next_step"],
        usage=Usage(
            input_tokens=m["input_tokens"],
            output_tokens=m["output_tokens"],
            cost_usd=m["cost_usd"],
        ),
        spec=loads(m["spec"]) or {},
        spec_digest=m["spec_digest"] or "",
        overrides=loads(m["overrides"]) or {},
        confirm_steps=loads(m["confirm_steps"]) or {},
        lease_owner=m["lease_owner"],
        lease_expires_at=dt(m["lease_expires_at"]),
        not_before=dt(m["not_before"]),
        created_at=dt_required(m["created_at"]),
        updated_at=dt_required(m["updated_at"]),
        ended_at=dt(m["ended_at"]),
        principal=m["principal"] or "system",
        schema_version=m["schema_version"],
    )


def changes_to_row(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a partial run update (field names of ``Run``) into column values."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "usage":
            out["input_tokens"] = value.input_tokens
            out["output_tokens"] = value.output_tokens
            out["cost_usd"] = value.cost_usd
        elif key in _JSON_RUN_FIELDS:
            out[key] = dumps(value)
        elif key in ("status", "wait_reason"):
            out[key] = value.value if value is not None else None
        elif key in ("lease_expires_at", "not_before", "ended_at"):
            out[key] = ts(value) if isinstance(value, datetime) else value
        else:
            out[key] = value
    return out


def step_to_row(step: Step) -> dict[str, Any]:
    return {
        "run_id": step.run_id,
        "step_no": step.step_no,
        "kind": step.kind.value,
        "name": step.name,
        "status": step.status.value,
        "input": dumps(step.input),
        "input_hash": step.input_hash,
        "output": dumps(step.output),
        "error": dumps(step.error),
        "attempts": step.attempts,
        "input_tokens": step.usage.input_tokens,
        "output_tokens": step.usage.output_tokens,
        "cost_usd": step.usage.cost_usd,
        "decision": dumps(step.decision),
        "started_at": ts(step.started_at),
        "finished_at": ts(step.finished_at),
    }


def row_to_step(row: Any) -> Step:
    m = getattr(row, "_mapping", row)  # SQLAlchemy row, sqlite3.Row or asyncpg Record
    decision = loads(m["decision"])
    return Step.model_construct(
        run_id=m["run_id"],
        step_no=m["step_no"],
        kind=StepKind(m["kind"]),
        name=m["name"],
        status=StepStatus(m["status"]),
        input=loads(m["input"]),
        input_hash=m["input_hash"] or "",
        output=loads(m["output"]),
        error=loads(m["error"]),
        attempts=m["attempts"],
        usage=Usage(
            input_tokens=m["input_tokens"],
            output_tokens=m["output_tokens"],
            cost_usd=m["cost_usd"],
        ),
        decision=Decision.model_validate(decision) if decision else None,
        started_at=dt_required(m["started_at"]),
        finished_at=dt(m["finished_at"]),
    )
