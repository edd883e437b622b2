"""Execution: the run loop (react and plan modes), journal replay, retries, dead letters,
human decisions, workers and leases."""

from bastion.engine._agent import Agent, Limits, OutputRule
from bastion.engine._engine import Engine, EngineOptions
from bastion.engine._identity import default_worker_id
from bastion.engine._journal import StepObserver
from bastion.engine._plan import Plan, PlannedCall
from bastion.engine._worker import Worker, read_health

__all__ = [
    "Agent",
    "Engine",
    "EngineOptions",
    "Limits",
    "OutputRule",
    "Plan",
    "PlannedCall",
    "StepObserver",
    "Worker",
    "default_worker_id",
    "read_health",
]
