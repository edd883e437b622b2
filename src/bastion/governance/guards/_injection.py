"""The prompt-injection guard: normalisation, heuristics and the small classifier, per boundary.

Owns running the layers on one text — normalise, apply the rules of ``_injection_rules`` with the
weight of the boundary (direct or indirect), score indirect texts with the classifier, decode
hidden blobs and rescan them — and combining the evidence as a noisy-OR against the threshold.
Does not own the rules themselves, nor what happens to a flagged text (the pipeline quarantines
or blocks it).
"""

from __future__ import annotations

import dataclasses
import re

from bastion.governance.guards import _word_vectors as word_vectors
from bastion.governance.guards._classifier import InjectionModel, load_model
from bastion.governance.guards._config import InjectionConfig
from bastion.governance.guards._injection_rules import (
    ROT13_RULES,
    structural,
    triggered_rules,
)
from bastion.governance.guards._instructions import check as check_instructions
from bastion.governance.guards._language import foreign_segments
from bastion.governance.guards._normalize import (
    REASSEMBLED,
    WORD_CIPHERS,
    Blob,
    decoded_blobs,
    normalise,
    rot13,
)
from bastion.governance.guards._text import same_length_lower
from bastion.governance.guards._types import Boundary, GuardFinding, GuardName, ScanContext

INDIRECT: frozenset[Boundary] = frozenset({"tool_result", "retrieved_doc"})
#: Where a user message hands over a document: "Summarize this webpage: '...'", "given this
#: table: <table>...", "based on this email:" and a new line, or markup. The document is data,
#: not the user's words, and is read as an indirect text (the way a tool result is).
_DOC_INTRO = re.compile(
    r"\b(?:this|these|the following|following|below|attached|based on|given)\b[^:\n]{0,60}?:"
    r"|<(?:code|table|html|!doctype|body|div|pre|article)\b",
    re.IGNORECASE,
)
_CLOSING = {"'": "'", '"': '"', "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "<": ">",
            "{": "}", "[": "]"}  # fmt: skip
_MIN_DOCUMENT = 40


def document_span(text: str) -> tuple[int, int] | None:
    """The document a user message hands over, as ``(start, end)``, or None.

    Only a delimited document counts: quoted, in brackets or markup (up to the last closing
    delimiter), or a block after the introducing colon's line break (to the end). Words after a
    bare colon on the same line stay the user's own ("Answer the following: who ...?"), as do
    words after the closing delimiter ("Summarize this: '...' Also, ...?").
    """
    if text.find(":", 0, 400) < 0 and text.find("<", 0, 400) < 0:
        return None  # every introduction ends with a colon or opens markup
    m = _DOC_INTRO.search(text, 0, 400)
    if m is None:
        return None
    if m.group().startswith("<"):
        start, opener = m.start(), "<"
    else:
        start = m.end()
        while start < len(text) and text[start] in " \t":
            start += 1
        if start < len(text) and text[start] in "\r\n":
            return (start, len(text)) if len(text) - start >= _MIN_DOCUMENT else None
        opener = text[start : start + 1]
    closing = _CLOSING.get(opener)
    if closing is None:
        return None
    end = text.rfind(closing, start + 1) + 1 or len(text)
    return (start, end) if end - start >= _MIN_DOCUMENT else None


def _shifted(findings: list[GuardFinding], by: int) -> list[GuardFinding]:
    if not by:
        return findings
    return [dataclasses.replace(f, start=f.start + by, end=f.end + by) for f in findings]


def _noisy_or(scores: list[float]) -> float:
    remaining = 1.0
    for s in scores:
        remaining *= 1.0 - s
    return 1.0 - remaining


class InjectionGuard:
    """Detects direct and indirect prompt injection. Thread-safe after construction."""

    def __init__(self, config: InjectionConfig | None = None) -> None:
        self.config = config or InjectionConfig()
        self._model: InjectionModel | None = load_model() if self.config.use_classifier else None
        self._languages = frozenset(self.config.languages)
        # Load the language identifier and the word vectors now, not in the middle of a run.
        if self._languages:
            foreign_segments("warm up", self._languages)
        word_vectors.load()

    @property
    def name(self) -> GuardName:
        return "injection"

    def scan(self, text: str, context: ScanContext | None = None) -> list[GuardFinding]:
        if not text or not text.strip():
            return []
        ctx = context or ScanContext()
        findings = self._findings(text, ctx)
        if not findings:
            return []
        score = _noisy_or([f.score for f in findings])
        if score < self.config.threshold:
            return []
        return findings

    def score(self, text: str, context: ScanContext | None = None) -> float:
        """The combined injection score in [0, 1] (for evaluation and calibration)."""
        return _noisy_or([f.score for f in self._findings(text, context or ScanContext())])

    def _findings(self, text: str, ctx: ScanContext) -> list[GuardFinding]:
        depth = self.config.decode_depth
        if ctx.boundary != "user_input":
            indirect = ctx.boundary in INDIRECT and not ctx.person_text
            return self._scan(text, indirect, depth, None)
        # A user message may hand over a document: the user's own words (before and after it)
        # are read as a request, against the instructions and for their language; the
        # document as the indirect text it is.
        doc = document_span(text)
        parts = [(0, text)] if doc is None else [(0, text[: doc[0]]), (doc[1], text[doc[1] :])]
        found: list[GuardFinding] = []
        for offset, own in parts:
            if not own.strip():
                continue
            blobs = decoded_blobs(own)
            here = self._scan(own, False, depth, None, blobs)
            here += self._against_instructions(own, ctx, blobs)
            here += self._unvetted_language(own)
            found += _shifted(here, offset)
        if doc is not None:
            found += _shifted(self._scan(text[doc[0] : doc[1]], True, depth, None), doc[0])
        return found

    def _against_instructions(
        self, text: str, ctx: ScanContext, blobs: tuple[Blob, ...]
    ) -> list[GuardFinding]:
        """User input read against the agent's instructions, when the caller passed them."""
        if not ctx.instructions:
            return []
        out = [
            self._finding(s, e, rule, 0.6, "instructions")
            for rule, s, e in check_instructions(text, ctx.instructions)
        ]
        # A request hidden in an encoding or a cipher is read against the instructions too.
        for bs, be, enc, decoded in blobs:
            for rule, _, _ in check_instructions(decoded, ctx.instructions):
                out.append(self._finding(bs, be, f"{enc}:{rule}", 0.7, enc))
        return out

    def _unvetted_language(self, text: str) -> list[GuardFinding]:
        """Sentences of a user message in a language the deployment does not vet."""
        if not self._languages:
            return []
        return [
            self._finding(seg.start, seg.end, f"unvetted_language:{seg.language}", 0.6, "language")
            for seg in foreign_segments(text, self._languages)
        ]

    def _scan(
        self,
        text: str,
        indirect: bool,
        depth: int,
        offset: tuple[int, int] | None,
        blobs: tuple[Blob, ...] | None = None,
    ) -> list[GuardFinding]:
        """Findings for ``text``; ``offset`` pins every span to an encoded blob's span."""
        norm, hidden = normalise(text)
        same = len(norm) == len(text)
        out: list[GuardFinding] = []

        def span(s: int, e: int) -> tuple[int, int]:
            if offset is not None:
                return offset
            if same:
                return s, e
            return 0, len(text)  # normalisation moved offsets; point at the whole text

        low = same_length_lower(norm)
        for rule in triggered_rules(low):
            m = rule.pattern.search(low)
            if m is None:
                continue
            weight = rule.indirect if indirect else rule.direct
            s, e = span(m.start(), m.end())
            out.append(self._finding(s, e, rule.name, weight, "heuristic"))
        for name, direct, indirect_w in structural(norm):
            s, e = span(0, len(text))
            weight = indirect_w if indirect else direct
            out.append(self._finding(s, e, name, weight, "structure"))
        if hidden.bidi or hidden.invisible >= 3 or hidden.confusable >= 2:
            s, e = span(0, len(text))
            out.append(self._finding(s, e, "hidden_characters", 0.45, "normalisation"))
        if indirect and self._model is not None:
            p, (ws, we) = self._model.scan(norm)
            t = self.config.classifier_threshold or self._model.threshold
            if p >= t:
                s, e = span(ws, we)
                # Map the threshold to 0.5 so the classifier combines with heuristic weights.
                score = 0.5 + 0.5 * (p - t) / (1 - t)
                out.append(self._finding(s, e, "classifier", score, "classifier"))
        if depth > 0:
            if blobs is None:
                blobs = decoded_blobs(text)
            encoded = [b for b in blobs if not b[2].startswith(REASSEMBLED)]
            if encoded:
                # Readable text hidden in an encoding or a cipher is a signal on its own: a
                # person or a document has little reason to write a sentence in base64, Morse
                # or Pig Latin. Blob offsets index the text as given, not the normalised one.
                bs, be = offset or (encoded[0][0], encoded[0][1])
                weight = 0.5 if indirect or encoded[0][2].startswith(WORD_CIPHERS) else 0.3
                out.append(self._finding(bs, be, "encoded_payload", weight, "normalisation"))
            for bs, be, enc, decoded in blobs:
                pin = offset or (bs, be)
                inner = self._scan(decoded, indirect, depth - 1, pin)
                for f in inner:
                    boosted = min(1.0, f.score + 0.1)  # hiding an instruction is itself a signal
                    out.append(self._finding(f.start, f.end, f"{enc}:{f.evidence}", boosted, enc))
            if not out:
                # rot13 is cheap to test wholesale; only the strong rules count there.
                for f in self._scan_rot13(text, indirect, offset):
                    out.append(f)
        return out

    def _scan_rot13(
        self, text: str, indirect: bool, offset: tuple[int, int] | None
    ) -> list[GuardFinding]:
        flipped = rot13(text).lower()
        out = []
        for rule in triggered_rules(flipped):
            if rule.name not in ROT13_RULES:
                continue
            m = rule.pattern.search(flipped)
            if m is not None:
                s, e = offset or (m.start(), m.end())
                w = rule.indirect if indirect else rule.direct
                out.append(self._finding(s, e, rule.name, w, "rot13"))
        return out

    @staticmethod
    def _finding(start: int, end: int, rule: str, score: float, detector: str) -> GuardFinding:
        return GuardFinding(
            start=start,
            end=end,
            type="PROMPT_INJECTION",
            score=min(1.0, score),
            detector=detector,
            guard="injection",
            evidence=rule,
        )
