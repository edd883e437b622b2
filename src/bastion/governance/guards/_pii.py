"""The PII guard: runs the fast tier (and the NER model in the accurate tier) and merges results.

Owns which detectors run for a config, the entity priorities used to settle overlapping spans,
the score threshold, the allow-list and the entity filter. Does not own masking (``_mask``) or
the per-boundary mode (``_pipeline``).
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.governance.guards._config import PiiConfig
from bastion.governance.guards._pii_names import (
    find_addresses,
    find_context_places,
    find_persons,
    find_places,
    load_gazetteer,
)
from bastion.governance.guards._pii_patterns import (
    compile_custom,
    compile_deny_lists,
    find_cards,
    find_dobs,
    find_emails,
    find_ibans,
    find_ips,
    find_phones,
    find_ssns,
)
from bastion.governance.guards._text import resolve_overlaps
from bastion.governance.guards._types import GuardFinding, GuardName, ScanContext

#: Entity types the built-in detectors produce.
PII_ENTITIES: tuple[str, ...] = (
    "CREDIT_CARD",
    "DATE_OF_BIRTH",
    "EMAIL_ADDRESS",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
    "PERSON",
    "PHONE_NUMBER",
    "STREET_ADDRESS",
    "US_SSN",
)

# When spans overlap, the higher priority wins: a validated checksum beats a guess from shape.
# PERSON and LOCATION share one priority so their scores decide between them.
PRIORITY: dict[str, int] = {
    "EMAIL_ADDRESS": 90,
    "IBAN_CODE": 85,
    "CREDIT_CARD": 80,
    "US_SSN": 75,
    "IP_ADDRESS": 70,
    "DATE_OF_BIRTH": 65,
    "PHONE_NUMBER": 60,
    "STREET_ADDRESS": 50,
    "PERSON": 30,
    "LOCATION": 30,
}
_CUSTOM_PRIORITY = 100

Detector = Callable[[str], list[GuardFinding]]


class PiiGuard:
    """Finds personal data. ``scan`` is thread-safe; build one per config and reuse it."""

    def __init__(self, config: PiiConfig | None = None) -> None:
        self.config = config or PiiConfig()
        cfg = self.config
        gaz = load_gazetteer()
        regions = cfg.phone_regions
        self._detectors: list[Detector] = [
            find_emails,
            find_cards,
            find_ibans,
            find_ssns,
            find_ips,
            find_dobs,
            lambda t: find_phones(t, regions),
            find_addresses,
            lambda t: find_persons(t, gaz),
            lambda t: find_places(t, gaz),
            find_context_places,
        ]
        self._priority = dict(PRIORITY)
        if cfg.custom_patterns:
            self._detectors.append(compile_custom(cfg.custom_patterns))
            self._priority.update({p.type: _CUSTOM_PRIORITY for p in cfg.custom_patterns})
        if cfg.deny_lists:
            self._detectors.append(compile_deny_lists(cfg.deny_lists))
            self._priority.update({d.type: _CUSTOM_PRIORITY for d in cfg.deny_lists})
        self._ner: Detector | None = None
        if cfg.tier == "accurate":
            from bastion.governance.guards._pii_ner import NerDetector

            self._ner = NerDetector(cfg.ner_model).detect
        self._entities = frozenset(cfg.entities)
        self._allow = frozenset(v.casefold() for v in cfg.allow_list)

    @property
    def name(self) -> GuardName:
        return "pii"

    @property
    def entities(self) -> tuple[str, ...]:
        custom = [p.type for p in self.config.custom_patterns]
        custom += [d.type for d in self.config.deny_lists]
        return tuple(sorted(set(PII_ENTITIES) | set(custom)))

    def scan(self, text: str, context: ScanContext | None = None) -> list[GuardFinding]:
        if not text:
            return []
        found: list[GuardFinding] = []
        for detect in self._detectors:
            found.extend(detect(text))
        if self._ner is not None:
            found.extend(_merge_ner(text, found, self._ner(text)))
        found = _drop_phones_inside_addresses(found)
        keep = [
            f
            for f in found
            if f.score >= self.config.min_score
            and (not self._entities or f.type in self._entities)
            and text[f.start : f.end].casefold() not in self._allow
        ]
        return resolve_overlaps(keep, self._priority)


def _drop_phones_inside_addresses(found: list[GuardFinding]) -> list[GuardFinding]:
    """ "3378 217 Lovers Lane" holds a phone-shaped "3378 217": without phone context words
    (score below 0.75) it is the house number, not a phone."""
    addresses = [f for f in found if f.type == "STREET_ADDRESS"]
    if not addresses:
        return found
    return [
        f
        for f in found
        if not (
            f.type == "PHONE_NUMBER"
            and f.score < 0.75
            and any(a.start <= f.start and f.end <= a.end for a in addresses)
        )
    ]


def _merge_ner(text: str, fast: list[GuardFinding], ner: list[GuardFinding]) -> list[GuardFinding]:
    """Keep the model's names and places where they add to the fast tier, not where they
    contradict it: a span that is not capitalised ("owens", "the White Stripes'") is dropped,
    and one the fast tier typed differently (a known first name the model calls a place) loses
    to the fast tier's evidence."""
    out = []
    for f in ner:
        if not text[f.start].isupper():
            continue
        clash = any(g.type != f.type and g.start < f.end and f.start < g.end for g in fast)
        if clash:
            f = GuardFinding(
                start=f.start,
                end=f.end,
                type=f.type,
                score=0.45,  # below the default min_score: the fast tier's reading stands
                detector=f.detector,
                guard=f.guard,
                evidence=f.evidence,
            )
        out.append(f)
    return out
