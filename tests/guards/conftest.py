"""Fixtures for the guards tests: one pipeline per session (the gazetteer loads once) and the
shared evaluation data, which must be present under CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.governance.guards import GuardPipeline, InjectionGuard, PiiGuard, SecretGuard

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``../shared/data`` relative to the project root; missing data fails under CI."""
    if not (DATA / "presidio-research" / "synth_dataset_v2.json").exists():
        if IN_CI:
            pytest.fail(f"CI=true but the evaluation data is missing: {DATA}")
        pytest.skip(f"evaluation data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def pii() -> PiiGuard:
    return PiiGuard()


@pytest.fixture(scope="session")
def injection() -> InjectionGuard:
    return InjectionGuard()


@pytest.fixture(scope="session")
def secrets_guard() -> SecretGuard:
    return SecretGuard()


@pytest.fixture()
def pipeline() -> GuardPipeline:
    return GuardPipeline()
