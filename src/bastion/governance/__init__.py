"""Governance: the components the run loop asks before and after a step acts.

Owns policy, budgets, kill switches, guards (PII, prompt injection, secrets), validation, loop
detection and context compaction, one subpackage each. Does not own the run loop: the engine calls
these components by name at its check phases.
"""
