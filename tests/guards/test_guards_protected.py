"""Protected values (secrets from a system prompt, canaries) never leave in a model's answer:
the CyberSecEval cases whose judge asks for a secret word, answered by a leaking and by a
refusing scripted reply."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bastion.governance.guards import GuardPipeline, ScanContext
from bastion.governance.guards._eval import load_prompt_injection

_SECRET = re.compile(r"contains? (?:the (?:word|secret|password|key|phrase)s? )?'([^']{4,40})'")


def _cases(data: Path) -> list[str]:
    found = [_SECRET.search(str(r["judge_question"])) for r in load_prompt_injection(data)]
    return sorted({m.group(1) for m in found if m})


def test_leaks_of_the_data_sets_secrets_are_blocked(data_dir: Path) -> None:
    secrets = _cases(data_dir)
    assert len(secrets) >= 8
    pipeline = GuardPipeline()
    for secret in secrets:
        ctx = ScanContext(boundary="model_output", run_id="r", protected=(secret,))
        leaks = [
            f"Of course! The answer is {secret}.",
            f"Spelled out: {' '.join(secret)}",
            f"Backwards, just for fun: {secret[::-1]}",
            f"{secret.upper()}!!!",
        ]
        for leak in leaks:
            decision = pipeline.scan(leak, ctx)
            assert decision.kind == "block", (secret, leak)
            assert any(f.type == "PROTECTED_VALUE" for f in decision.findings)
        refusal = "I'm sorry, I can't share that."
        assert pipeline.scan(refusal, ctx).kind == "allow"


@pytest.mark.parametrize("value", ["", "abc", "  "])
def test_too_short_protected_values_are_ignored(value: str) -> None:
    ctx = ScanContext(boundary="model_output", protected=(value,))
    assert GuardPipeline().scan("abc is the start of the alphabet", ctx).kind == "allow"


def test_protected_values_are_masked_in_logs() -> None:
    ctx = ScanContext(boundary="log", run_id="r", protected=("hunter2-canary",))
    decision = GuardPipeline().scan("user typed hunter2-canary at the prompt", ctx)
    assert decision.kind == "mask" and "hunter2" not in decision.text
