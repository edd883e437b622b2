"""Masking: turn findings into replacements (placeholder, redaction or keyed hash) and apply them.

Owns the three mask styles and the rule that every other whole-word occurrence of a detected
value is masked too (a name found once is hidden everywhere in the text). Does not own detection
or the vault's storage (``_vault``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from bastion.governance.guards._config import MaskStyle
from bastion.governance.guards._text import IntervalSet
from bastion.governance.guards._types import GuardFinding
from bastion.governance.guards._vault import Vault

#: Values shorter than this are not propagated to other occurrences (too many false hits).
_MIN_PROPAGATE = 3


@dataclass(frozen=True, kw_only=True)
class Replacement:
    start: int
    end: int
    type: str
    text: str


def _is_word_edge(text: str, i: int) -> bool:
    return i <= 0 or i >= len(text) or not (text[i - 1].isalnum() and text[i].isalnum())


def propagate(text: str, findings: Iterable[GuardFinding]) -> list[GuardFinding]:
    """Add a finding for every other whole-word occurrence of each detected value.

    One Aho-Corasick pass over the text for all values at once keeps this linear.
    """
    import ahocorasick

    base = _non_overlapping(findings)
    taken = IntervalSet()
    for f in base:
        taken.add(f.start, f.end)
    automaton = ahocorasick.Automaton()
    for f in base:
        value = text[f.start : f.end]
        if len(value) >= _MIN_PROPAGATE and value not in automaton:
            automaton.add_word(value, (len(value), f))
    if not len(automaton):
        return base
    automaton.make_automaton()
    extra: list[GuardFinding] = []
    for end_idx, (length, f) in automaton.iter_long(text):
        i, j = end_idx - length + 1, end_idx + 1
        if not (_is_word_edge(text, i) and _is_word_edge(text, j) and taken.free(i, j)):
            continue
        taken.add(i, j)
        extra.append(
            GuardFinding(
                start=i,
                end=j,
                type=f.type,
                score=f.score,
                detector="propagated",
                guard=f.guard,
                evidence=f"another occurrence of a detected {f.type}",
            )
        )
    return sorted(base + extra, key=lambda f: (f.start, f.end))


def _non_overlapping(findings: Iterable[GuardFinding]) -> list[GuardFinding]:
    out: list[GuardFinding] = []
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if f.end <= f.start:
            continue
        if out and f.start < out[-1].end:
            if f.end > out[-1].end:  # widen to cover both, keep the first type
                last = out[-1]
                out[-1] = GuardFinding(
                    start=last.start,
                    end=f.end,
                    type=last.type,
                    score=max(last.score, f.score),
                    detector=last.detector,
                    guard=last.guard,
                    evidence=last.evidence,
                )
            continue
        out.append(f)
    return out


def replacements(
    text: str,
    findings: Iterable[GuardFinding],
    *,
    style: MaskStyle,
    vault: Vault | None,
    hash_key: bytes,
) -> list[Replacement]:
    out = []
    for f in _non_overlapping(findings):
        value = text[f.start : f.end]
        if style == "placeholder" and vault is not None:
            token = vault.placeholder(f.type, value, avoid=text)
        elif style == "hash":
            digest = hmac.new(hash_key, f"{f.type}\x00{value}".encode(), hashlib.sha256)
            token = f"<{f.type}:{digest.hexdigest()[:12]}>"
        else:
            token = f"<{f.type}>"
        out.append(Replacement(start=f.start, end=f.end, type=f.type, text=token))
    return out


def apply(text: str, reps: list[Replacement]) -> str:
    parts: list[str] = []
    pos = 0
    for r in reps:
        parts.append(text[pos : r.start])
        parts.append(r.text)
        pos = r.end
    parts.append(text[pos:])
    return "".join(parts)


def mask_text(
    text: str,
    findings: Iterable[GuardFinding],
    *,
    style: MaskStyle = "placeholder",
    vault: Vault | None = None,
    hash_key: bytes = b"",
) -> tuple[str, list[Replacement]]:
    """Mask ``findings`` (and other occurrences of their values) in ``text``.

    Returns the masked text and the replacements made, in original-text coordinates.
    """
    reps = replacements(
        text, propagate(text, findings), style=style, vault=vault, hash_key=hash_key
    )
    return apply(text, reps), reps
