"""Bad input never crashes or stalls a guard: empty, binary, mis-encoded, huge, and regex
backtracking bait. Time bounds are enforced by pytest-timeout (the harness), not asserted."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.governance.guards import (
    GuardError,
    GuardPipeline,
    GuardsConfig,
    ScanContext,
    _classifier,
    _injection,
    _injection_rules,
    _instructions,
    _language,
    _normalize,
    _pii_names,
    _pii_patterns,
    _secrets,
)
from bastion.governance.guards._regex_safety import UnsafePattern, check_linear_pattern
from bastion.governance.guards._text import decode_bytes


def _builtin_patterns() -> Iterator[tuple[str, re.Pattern[str]]]:
    for module in (
        _pii_patterns,
        _pii_names,
        _secrets,
        _normalize,
        _injection_rules,
        _instructions,
        _injection,
        _language,
        _classifier,
    ):
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                yield f"{module.__name__}.{name}", value
    for i, rx in enumerate(_pii_names.ADDRESS_CORES):
        yield f"ADDRESS_CORES[{i}]", rx
    for kind, rx, _ in _secrets._COMPILED:
        yield f"secrets.{kind}", rx
    for rule in _injection_rules.RULES:
        yield f"injection.{rule.name}", rule.pattern


def test_every_builtin_pattern_passes_the_linear_time_check() -> None:
    checked = 0
    for name, rx in _builtin_patterns():
        try:
            check_linear_pattern(rx.pattern) if len(rx.pattern) <= 500 else _check_long(rx)
        except UnsafePattern as exc:
            pytest.fail(f"{name}: {exc}")
        checked += 1
    assert checked > 60


def _check_long(rx: re.Pattern[str]) -> None:
    # The length cap is for user patterns; our long alternations are checked structurally.
    from bastion.governance.guards import _regex_safety

    tree = _regex_safety._sre_parse.parse(rx.pattern, rx.flags)
    _regex_safety._walk(tree, inside_unbounded=False)


def test_the_check_rejects_catastrophic_shapes() -> None:
    for bad in (r"(a+)+$", r"(\w+\s?)*x", r"(x|xx)+y", r"(.*a){1,100}"):
        with pytest.raises(UnsafePattern):
            check_linear_pattern(bad)


# Each bait is a shape that makes a careless pattern backtrack or a careless loop go quadratic.
# Sizes are a few hundred KB (the fast tier scans ~200 KB/s of such text on one core); the
# digits case is the "millions of digits" one.
BAIT = {
    "letters": "a" * 200_000 + "!",
    "digits": "1" * 2_000_000,
    "spaced_digits": "1 " * 100_000,
    "dotted_digits": "1." * 100_000,
    "capitalised": "Aa " * 70_000,
    "at_signs": "a@" * 100_000,
    "dashes": "-" * 200_000 + "BEGIN PRIVATE KEY",
    "pem_headers": "-----BEGIN RSA PRIVATE KEY-----\n" * 6_000,
    "jwt_like": "eyJ" + "a" * 100_000 + ".eyJ" + "b" * 100_000,
    "hex": "ab" * 100_000,
    "base64": "QUJD" * 50_000,
    "percent": "%41" * 70_000,
    "colons": "a:" * 100_000,
    "brackets": "![" * 100_000,
    "ignore": "ignore " * 30_000,
    "street": "1 Main " * 30_000,
    "zero_width": "\u200b" * 200_000,
    "controls": "".join(chr(i % 32) for i in range(200_000)),
    # Long ASCII words beside non-ASCII letters (the look-alike fold), and the shapes the
    # cipher, Morse, split-payload and language layers look for.
    "ascii_runs_and_accents": ("a" * 1000 + " é ") * 200,
    "morse_like": ".- " * 70_000,
    "pig_latin_like": "ayay bay cay " * 16_000,
    "shifted_function_words": "wkh dqg iru " * 17_000,
    "quoted_parts": 'part 1 "a" ' * 20_000,
    "tag_characters": "\U000e0041" * 100_000,
    "french_sentences": "Ceci est une phrase. " * 10_000,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(BAIT))
def test_backtracking_bait_completes(name: str) -> None:
    pipeline = GuardPipeline(GuardsConfig(max_scan_chars=2_000_000))
    for boundary in ("user_input", "tool_result"):
        decision = pipeline.scan(BAIT[name], ScanContext(boundary=boundary))  # type: ignore[arg-type]
        assert decision.kind in ("allow", "log", "mask", "quarantine", "review", "block")


@pytest.mark.timeout(120)
def test_ten_megabytes_is_capped_and_fails_closed() -> None:
    pipeline = GuardPipeline()
    chunk = "Contact Teresa Kreutzmann at jane@example.com about invoice 4411. " * 20
    text = (chunk * (10_000_000 // len(chunk) + 1))[:10_000_000]
    decision = pipeline.scan(text, ScanContext(boundary="log"))
    assert decision.truncated and decision.kind == "block"
    assert all(f.end <= pipeline.config.max_scan_chars for f in decision.findings)


@pytest.mark.timeout(60)
def test_empty_whitespace_binary_and_misencoded() -> None:
    pipeline = GuardPipeline()
    ctx = ScanContext()
    assert pipeline.scan("", ctx).kind == "allow"
    assert pipeline.scan(" \n\t ", ctx).kind == "allow"
    for raw in (
        os.urandom(50_000),
        b"\xff\xfe" + "hi".encode("utf-16-le"),
        "café".encode("latin-1"),
    ):
        pipeline.scan(decode_bytes(raw), ctx)
    pipeline.scan("lone surrogate \ud800 and \udfff mail a@b.io", ctx)
    pipeline.scan("\x00" * 10_000 + "jane@example.com", ctx)
    with pytest.raises(GuardError):
        pipeline.scan(b"bytes are not text", ctx)  # type: ignore[arg-type]


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2_000), st.sampled_from(["user_input", "tool_result", "log"]))
def test_random_text_never_crashes(text: str, boundary: str) -> None:
    decision = _PIPELINE.scan(text, ScanContext(boundary=boundary))  # type: ignore[arg-type]
    assert not decision.errors
    for f in decision.findings:
        assert 0 <= f.start < f.end <= len(text)


_PIPELINE = GuardPipeline()
