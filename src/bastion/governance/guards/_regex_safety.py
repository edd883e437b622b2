"""Backtracking-hazard check for regexes supplied in configuration (custom PII patterns).

Owns two rules: a pattern may not put a repeat inside an unbounded repeat (``(a+)+``,
``(\\w*x)*``), nor alternatives that can match the same text (``(x|xx)+``), the shapes behind
catastrophic backtracking in Python's ``re``. Our own built-in
patterns follow the same rule and a test runs them through this check. Does not own matching.
"""

from __future__ import annotations

import re
from typing import Any

# ``re._parser`` is the stdlib's own parser (``sre_parse`` before 3.11); reading its tree is the
# only way to inspect a pattern's structure without writing a regex parser.
try:
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11 is not supported anyway
    import sre_parse as _sre_parse

_MAXREPEAT: int = _sre_parse.MAXREPEAT
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
MAX_PATTERN_LENGTH = 500


class UnsafePattern(ValueError):
    """The pattern could backtrack catastrophically or is too long."""


def _walk(items: Any, inside_unbounded: bool) -> None:
    for op, arg in items:
        name = str(op)
        if name in _REPEATS:
            _low, high, sub = arg
            unbounded = high == _MAXREPEAT or high > 64
            if inside_unbounded and (unbounded or _has_repeat(sub)):
                raise UnsafePattern("nested repetition (e.g. (a+)+) can backtrack exponentially")
            _walk(sub, inside_unbounded or unbounded)
        elif name == "SUBPATTERN":
            _walk(arg[-1], inside_unbounded)
        elif name == "BRANCH":
            if inside_unbounded and not _distinct_first_literals(arg[1]):
                # (x|xx)+ : alternatives that can match the same text, repeated, backtrack
                # exponentially; alternatives that start with different literals cannot.
                raise UnsafePattern("overlapping alternatives inside a repetition")
            for branch in arg[1]:
                _walk(branch, inside_unbounded)
        elif name in {"ASSERT", "ASSERT_NOT"}:
            _walk(arg[1], inside_unbounded)
        elif name == "GROUPREF":
            raise UnsafePattern("back-references are not allowed (they are not linear-time)")


def _distinct_first_literals(branches: Any) -> bool:
    firsts = []
    for branch in branches:
        if not branch or str(branch[0][0]) != "LITERAL":
            return False
        firsts.append(branch[0][1])
    return len(firsts) == len(set(firsts))


def _has_repeat(items: Any) -> bool:
    for op, arg in items:
        name = str(op)
        if name in _REPEATS:
            return True
        if name == "SUBPATTERN" and _has_repeat(arg[-1]):
            return True
        if name == "BRANCH" and any(_has_repeat(b) for b in arg[1]):
            return True
    return False


def check_linear_pattern(pattern: str) -> None:
    """Raise ``UnsafePattern`` (a ``ValueError``) if ``pattern`` is unsafe or invalid."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePattern(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    try:
        re.compile(pattern)
        tree = _sre_parse.parse(pattern)
    except re.error as exc:
        raise UnsafePattern(f"invalid regex: {exc}") from exc
    _walk(tree, inside_unbounded=False)
