"""PII quality on the synthetic presidio-research set (typed span overlap), as a regression
floor below the figures in docs/guards.md; and the metric code itself."""

from __future__ import annotations

from pathlib import Path

from bastion.governance.guards import PiiGuard
from bastion.governance.guards._eval import Prf, eval_pii, is_dev, load_pii_samples


def test_overlap_metric() -> None:
    prf = Prf()
    gold = [("PERSON", 0, 5), ("LOCATION", 10, 20)]
    prf.add(gold, [("PERSON", 2, 4), ("STREET_ADDRESS", 30, 35)])
    assert prf.row("PERSON")[:3] == (1.0, 1.0, 1.0)
    assert prf.row("LOCATION")[:3] == (0.0, 0.0, 0.0)  # the address is elsewhere
    p, r, f1, n = prf.row(None)
    assert (p, r, f1, n) == (0.5, 0.5, 0.5, 2)


def test_fast_tier_quality_floor(pii: PiiGuard, data_dir: Path) -> None:
    samples = load_pii_samples(data_dir)
    assert len(samples) == 1500
    detect = lambda t: [(f.type, f.start, f.end) for f in pii.scan(t)]  # noqa: E731
    full = eval_pii(detect, samples)
    held_out = eval_pii(detect, samples, which=lambda i: not is_dev(i))
    assert full.row(None)[2] >= 0.72
    assert held_out.row(None)[2] >= 0.72
    for kind in ("CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "US_SSN"):
        assert full.row(kind)[2] >= 0.9, kind
