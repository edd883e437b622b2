"""Secrets and personal data sealed at rest. With guards on, the values the detectors find are
stored only in the run's vault, encrypted with the run's own data key (wrapped by the
deployment's key); the journal, the run row and dead letters hold tokens. The raw bytes of the
database are searched for the values. A resumed run and an authorised operator get them back;
the end of retention destroys them. Both backends."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bastion import Agent, Bastion, Settings, ToolContext, tool
from bastion.cli import app
from bastion.core.errors import SealedDataDestroyed
from bastion.core.records import RunStatus, StepKind
from bastion.governance.guards import GuardPipeline
from bastion.governance.sealing import LocalKeys, RunSeal, Sealing, display
from bastion.testing import FunctionModel, ScriptedModel, call, reply

EMAIL = "jane.roe@example.com"
CARD = "4111 1111 1111 1111"
API_KEY = "sk_live_51HxQpL2eZvKYlo2C8yT9aBcD"
SECRETS = (EMAIL, CARD, API_KEY)
TASK = f"Refund the last charge of {EMAIL} on card {CARD}; the shop's key is {API_KEY}."
VAULT_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()

seen_by_tools: list[dict[str, Any]] = []


@tool(effect="read")
def find_customer(email: str) -> dict[str, str]:
    """Look a customer up by e-mail."""
    seen_by_tools.append({"email": email})
    return {"email": email, "card": CARD, "name": "Jane Roe"}


@tool(effect="write", requires_approval=True)
def refund(ctx: ToolContext, email: str, amount: float) -> str:
    """Refund a customer."""
    seen_by_tools.append({"refund": email})
    return f"refunded {amount} to {email}"


@tool(effect="read")
def audit_log(email: str) -> str:
    """Always fails, with the customer's data in its error."""
    raise RuntimeError(f"audit service rejected {email} with card {CARD}")


def _model() -> ScriptedModel:
    return ScriptedModel(
        [
            # The model sees placeholders and calls with them; tools get the real values.
            reply(None, call("find_customer", {"email": "<EMAIL_ADDRESS_1>"})),
            reply(None, call("refund", {"email": "<EMAIL_ADDRESS_1>", "amount": 12.5})),
            reply("Refunded 12.5 to <EMAIL_ADDRESS_1>."),
        ]
    )


def _bastion(
    url: str, model: Any, *, retention_days: float = 7, agent_tools: Any = None
) -> Bastion:
    settings = Settings.from_mapping(
        {
            "store": url,
            "default_model": "scripted:x",
            "guards": {"vault": {"key": VAULT_KEY, "retention_days": retention_days}},
        }
    )
    agent = Agent(name="ops", tools=agent_tools or [find_customer, refund, audit_log])
    return Bastion(settings, agents=[agent], providers={"scripted": model})


async def _raw_contents(url: str, tmp_path: Path) -> bytes:
    """Every byte the store holds: the SQLite files, or every row of every table."""
    if url.startswith("sqlite"):
        db = Path(url.split(":///", 1)[1])
        return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.suffix != ".key")
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
    try:
        out = []
        for table in ("runs", "steps", "step_archive", "dead_letters"):
            for row in await conn.fetch(f"SELECT * FROM {table}"):
                out.append(repr(tuple(row)).encode())
        return b"\n".join(out)
    finally:
        await conn.close()


async def test_values_the_guards_find_never_reach_the_store_in_clear(
    store_url: str, tmp_path: Path
) -> None:
    seen_by_tools.clear()
    async with _bastion(store_url, _model()) as b:
        waiting = await b.run("ops", TASK)
        assert waiting.status is RunStatus.WAITING_FOR_HUMAN
        await b.decide(waiting.id, "approve", by="alice")
        done = await b.resume(waiting.id)
        assert done.status is RunStatus.COMPLETED, done.error
        # The caller gets the answer with the values restored.
        assert done.output == f"Refunded 12.5 to {EMAIL}."
        assert done.input == TASK
        # Tools got the real values, across the wait for the approval.
        assert seen_by_tools == [{"email": EMAIL}, {"refund": EMAIL}]

        stored = await b.store.get_run(done.id)
        assert EMAIL not in str(stored.input) and EMAIL not in str(stored.output)
        steps = await b.store.get_steps(done.id)
        tool_step = next(s for s in steps if s.kind is StepKind.TOOL)
        assert display(tool_step.output["email"]) == "[EMAIL_ADDRESS#1]"
        # An authorised operator can see them again.
        shown, shown_steps = await b.engine.reveal(stored, steps)
        assert shown.input == TASK
        assert any(EMAIL in str(s.output) for s in shown_steps)
    raw = await _raw_contents(store_url, tmp_path)
    for value in SECRETS:
        assert value.encode() not in raw, value
    assert b"Jane Roe" not in raw


async def test_errors_and_dead_letters_are_sealed_too(store_url: str, tmp_path: Path) -> None:
    model = ScriptedModel([reply(None, call("audit_log", {"email": "<EMAIL_ADDRESS_1>"}))])
    async with _bastion(store_url, model) as b:
        dead = await b.run("ops", f"Audit {EMAIL}")
        assert dead.status is RunStatus.DEAD_LETTER
        assert dead.error is not None and EMAIL in dead.error["message"]  # for the caller
        letters = await b.store.list_dead_letters()
        assert EMAIL not in str(letters[0].error)
    raw = await _raw_contents(store_url, tmp_path)
    assert EMAIL.encode() not in raw and CARD.encode() not in raw


def test_runs_show_unmasks_only_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    config = tmp_path / "bastion.yaml"
    config.write_text(f"store: {url}\nguards:\n  vault:\n    key: {VAULT_KEY}\n")
    b = _bastion(url, _model())
    try:
        run = b.run_sync("ops", TASK)
    finally:
        b.close_sync()
    runner = CliRunner()
    masked = runner.invoke(app, ["--config", str(config), "runs", "show", run.id])
    assert masked.exit_code == 0, masked.output
    assert EMAIL not in masked.output and "[EMAIL_ADDRESS#1]" in masked.output
    shown = runner.invoke(app, ["--config", str(config), "runs", "show", run.id, "--unmask"])
    assert shown.exit_code == 0, shown.output
    assert EMAIL in shown.output


async def test_the_end_of_retention_destroys_the_sealed_values(store_url: str) -> None:
    model = FunctionModel(lambda request: reply("noted"))
    async with _bastion(store_url, model, retention_days=0) as b:
        done = await b.run("ops", f"Note {EMAIL}")
        assert done.status is RunStatus.COMPLETED
        stored = await b.store.get_run(done.id)
        assert await b.store.sealed_vault(done.id) == (None, None)
        with pytest.raises(SealedDataDestroyed):
            await b.engine.reveal(stored)
        assert EMAIL not in str(stored.input)

    async with _bastion(store_url, FunctionModel(lambda r: reply("ok"))) as b:
        kept = await b.run("ops", f"Note {EMAIL}")
        assert await b.engine.destroy_expired_seals() == 0  # 7 days to go
        b.engine.options = type(b.engine.options)(seal_retention_seconds=0.0)
        assert await b.engine.destroy_expired_seals() == 1
        with pytest.raises(SealedDataDestroyed):
            await b.engine.reveal(await b.store.get_run(kept.id))


def test_a_postgresql_deployment_must_name_its_vault_key(tmp_path: Path) -> None:
    settings = Settings.from_mapping(
        {"store": "postgresql://u@127.0.0.1:1/none", "guards": {}, "default_model": "scripted:x"}
    )
    from bastion.core.errors import ConfigError

    with pytest.raises(ConfigError, match="vault key"):
        Bastion(settings).start_sync()


def test_a_sqlite_deployment_keeps_its_key_beside_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    settings = Settings.from_mapping({"store": url, "guards": {}, "default_model": "scripted:x"})
    b = Bastion(
        settings, agents=[Agent(name="ops")], providers={"scripted": ScriptedModel([reply("ok")])}
    )
    try:
        assert b.run_sync("ops", f"hello {EMAIL}").output == "ok"
    finally:
        b.close_sync()
    key = tmp_path / "b.db.key"
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"


# ---- the seal itself ----------------------------------------------------------------------------

_PIPELINE = GuardPipeline()


def _seal() -> RunSeal:
    sealing = Sealing(_PIPELINE.sensitive_spans, LocalKeys(os.urandom(32)))
    return sealing.new_run("t", "r")[0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(
                [EMAIL, CARD, API_KEY, "\ue000", "\ue001", "\ue000X:1\ue001", "<PERSON_1>"]
            ),
        ),
        max_size=8,
    ).map(" ".join)
)
def test_sealing_round_trips_exactly_and_hides_what_it_finds(text: str) -> None:
    seal = _seal()
    sealed = seal.seal({"k": [text, 3, None]})
    assert seal.unseal(sealed) == {"k": [text, 3, None]}
    for start, end, _ in _PIPELINE.sensitive_spans(text):
        assert text[start:end] not in sealed["k"][0]


def test_a_value_sealed_once_stays_sealed_where_detectors_would_miss_it() -> None:
    seal = _seal()
    seal.seal(f"card {CARD} on file")
    # After another number the detectors may not see a card; the run already knows it.
    later = seal.seal(f"batch 1 {CARD}")
    assert CARD not in later
    assert seal.unseal(later) == f"batch 1 {CARD}"


def test_a_vault_opens_only_with_its_run_and_key() -> None:
    keys = LocalKeys(os.urandom(32))
    sealing = Sealing(_PIPELINE.sensitive_spans, keys)
    seal, wrapped = sealing.new_run("acme", "r1")
    token = seal.seal(f"mail {EMAIL}")
    vault = seal.export()
    assert EMAIL not in vault and EMAIL not in wrapped
    assert sealing.open_run("acme", "r1", wrapped, vault).unseal(token) == f"mail {EMAIL}"
    from bastion.core.errors import ConfigError

    with pytest.raises(ConfigError):  # the key is bound to tenant and run
        sealing.open_run("acme", "r2", wrapped, vault)
    other = Sealing(_PIPELINE.sensitive_spans, LocalKeys(os.urandom(32)))
    with pytest.raises(ConfigError):
        other.open_run("acme", "r1", wrapped, vault)
    _, wrapped2 = sealing.new_run("acme", "r1")
    with pytest.raises(ConfigError):  # another data key does not open this vault
        sealing.open_run("acme", "r1", wrapped2, vault)
    with pytest.raises(SealedDataDestroyed):
        sealing.open_run("acme", "r1", None, vault)
