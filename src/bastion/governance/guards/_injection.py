"""The prompt-injection guard: normalisation, heuristics and the small classifier, per boundary.

Owns the heuristic rules (instruction overrides, role and chat-template markers, tool-call syntax
in data, exfiltration such as markdown images with query strings, text that addresses the AI
from inside a document), how their weights differ between direct boundaries (user input, where
people legitimately give instructions) and indirect ones (tool results and retrieved documents,
where any instruction aimed at the assistant is suspect), and the recursive rescan of decoded
blobs. Scores combine as a noisy-OR. Does not own what happens to a flagged text (the pipeline
quarantines or blocks it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bastion.governance.guards._classifier import InjectionModel, load_model
from bastion.governance.guards._config import InjectionConfig
from bastion.governance.guards._normalize import decoded_blobs, normalise, rot13
from bastion.governance.guards._types import Boundary, Finding, GuardName, ScanContext

INDIRECT: frozenset[Boundary] = frozenset({"tool_result", "retrieved_doc"})


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    direct: float  # weight in user input, model output, tool arguments, logs
    indirect: float  # weight in tool results and retrieved documents


def _r(name: str, pattern: str, direct: float, indirect: float) -> Rule:
    return Rule(name, re.compile(pattern, re.IGNORECASE | re.MULTILINE), direct, indirect)


_TARGET = (
    r"instructions?|rules|prompts?|directions?|guidelines|constraints|context|programming|"
    r"directives?|guardrails|restrictions|commands?|messages?|everything|policies|training|"
    r"safety|filters?|what (?:you were|i) (?:told|said)"
)
RULES: tuple[Rule, ...] = (
    _r(
        "override",
        rf"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|neglect|discard|overlook)"
        rf"\b[^.\n]{{0,40}}?\b(?:{_TARGET})\b",
        0.9,
        0.95,
    ),
    _r(
        "prior_reference",
        r"\b(?:previous|prior|above|earlier|preceding|original|initial|system|developer)\s"
        r"(?:instructions?|prompts?|rules|directives?|guidelines)\b",
        0.45,
        0.7,
    ),
    _r(
        "new_instructions",
        r"\b(?:new|updated|real|actual|additional|important|revised|secret|hidden|override)\s"
        r"(?:instructions?|task|directives?|orders?|rules|objective)\b",
        0.45,
        0.75,
    ),
    _r(
        "identity_change",
        r"\byou\s(?:are|will be|shall be)\s(?:now|no longer)\b|\bfrom now on\b|\bact as\b|"
        r"\bpretend\s(?:to be|that|you)\b|\brole-?play\b|\bimagine (?:you|that you)\b|"
        r"\bstay in character\b|\byour new (?:name|role|persona|identity)\b",
        0.5,
        0.7,
    ),
    _r(
        "jailbreak_mode",
        r"\b(?:DAN|jailbreak\w{0,4}|developer mode|dev mode|god mode|sudo mode|admin(?:istrator)?"
        r" mode|system mode|debug mode|maintenance mode|unrestricted mode|unfiltered mode|"
        r"do anything now|test mode|safe mode (?:off|disabled))\b",
        0.8,
        0.85,
    ),
    _r(
        "no_limits",
        r"\b(?:without|no|free (?:of|from)|remove|disable|turn off)\s(?:any\s|all\s|your\s)?"
        r"(?:restrictions|limitations|limits|filters|censorship|ethical (?:guidelines|constraints)|"
        r"safety (?:guidelines|measures|filters))\b",
        0.5,
        0.6,
    ),
    _r(
        "prompt_leak",
        r"\b(?:reveal|show|print|repeat|display|output|tell|give|share|leak|disclose|spell|"
        r"write out|recite|what(?:'s| is| are| was))\b[^.\n?]{0,30}?\b(?:system prompt|"
        r"(?:your|the|initial|original|hidden|secret)\s(?:prompt|instructions|rules|password|"
        r"passcode|key|secret|code word|configuration|guidelines))\b",
        0.7,
        0.8,
    ),
    _r(
        "secret_request",
        r"\b(?:secret|password|passcode|passphrase|api key|private key|credentials?|access code)"
        r"\b[^.\n]{0,20}?\b(?:is|are|was)?\s?\?",
        0.35,
        0.5,
    ),
    _r(
        "role_marker",
        r"^[ \t>#*]{0,8}(?:system|assistant|developer|admin)\s?(?:message|prompt|note)?\s?:",
        0.4,
        0.7,
    ),
    _r(
        "chat_template",
        r"<\|im_start\|>|<\|im_end\|>|\[/?INST\]|<</?SYS>>|<\|(?:system|user|assistant|"
        r"endoftext|eot_id|start_header_id)\|>|</?(?:system|instructions?|admin)>",
        0.85,
        0.9,
    ),
    _r(
        "tool_call_syntax",
        r"\"(?:tool_calls|function_call)\"\s?:|<(?:tool_call|function_calls?|invoke)\b|"
        r"\"name\"\s?:\s?\"[\w.\-]{1,64}\"\s?,\s?\"(?:arguments|parameters)\"\s?:",
        0.3,
        0.8,
    ),
    _r(
        "markdown_image_exfil",
        r"!\[[^\]\n]{0,200}\]\(\s?https?://[^\s)]{1,300}\?[^\s)]{1,1000}\)",
        0.6,
        0.9,
    ),
    _r("html_image_exfil", r"<img\b[^>]{0,300}\bsrc=[\"']?https?://[^\s\"'>]{1,300}\?", 0.5, 0.8),
    _r(
        "send_to",
        r"\b(?:send|post|upload|forward|transmit|exfiltrate|submit|email|leak)\b[^.\n]{0,60}?"
        r"\b(?:to|at)\s(?:https?://|[\w.+\-]{1,64}@[\w\-]{1,63}\.)",
        0.45,
        0.75,
    ),
    _r(
        "address_ai",
        r"\b(?:AI|assistant|chatbot|language model|LLM|GPT|ChatGPT|Claude|Bard|Gemini|Copilot)"
        r"\b\s?[,:]\s?(?:please\s)?(?:ignore|you|do|don't|stop|instead|now|write|say|respond|"
        r"answer|include|add|tell|print|output|append)\b",
        0.2,
        0.75,
    ),
    _r(
        "your_response",
        r"\b(?:in|to|into|at the (?:end|beginning|start) of|within|throughout) your (?:response|"
        r"answer|reply|summary|output|code|message|completion|implementation|solution)\b",
        0.15,
        0.75,
    ),
    _r(
        "when_you_read",
        r"\bwhen (?:you|the (?:assistant|AI|model|bot)) (?:read|summari[sz]e|process|respond|"
        r"answer|reply|see|parse)\b|\bif you are an? (?:AI|assistant|language model|LLM)\b",
        0.3,
        0.8,
    ),
    _r(
        "instead_do",
        r"\b(?:instead|rather),? (?:you (?:should|must|will)|respond|reply|say|write|output|"
        r"only (?:say|respond|reply|output))\b",
        0.35,
        0.6,
    ),
    _r(
        "conceal",
        r"\b(?:do not|don't|never)\s(?:tell|inform|mention|reveal|let|alert|notify)\b[^.\n]{0,30}?"
        r"\b(?:the user|user|anyone|them|the human)\b",
        0.3,
        0.65,
    ),
    _r(
        "html_comment_instruction",
        r"<!--[^>]{0,500}?\b(?:ignore|instructions?|assistant|AI|you must|system)\b",
        0.5,
        0.8,
    ),
    _r(
        "decode_and_follow",
        r"\b(?:decode|decrypt|base64|rot13|hex|reverse)\b[^.\n]{0,40}?\b(?:and|then)\s"
        r"(?:follow|execute|run|do|obey|perform|answer)\b",
        0.6,
        0.7,
    ),
)


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

    @property
    def name(self) -> GuardName:
        return "injection"

    def scan(self, text: str, context: ScanContext | None = None) -> list[Finding]:
        if not text or not text.strip():
            return []
        ctx = context or ScanContext()
        indirect = ctx.boundary in INDIRECT
        findings = self._scan(text, indirect, depth=self.config.decode_depth, offset=None)
        if not findings:
            return []
        score = _noisy_or([f.score for f in findings])
        if score < self.config.threshold:
            return []
        return findings

    def score(self, text: str, context: ScanContext | None = None) -> float:
        """The combined injection score in [0, 1] (for evaluation and calibration)."""
        ctx = context or ScanContext()
        found = self._scan(text, ctx.boundary in INDIRECT, self.config.decode_depth, None)
        return _noisy_or([f.score for f in found])

    def _scan(
        self, text: str, indirect: bool, depth: int, offset: tuple[int, int] | None
    ) -> list[Finding]:
        """Findings for ``text``; ``offset`` pins every span to an encoded blob's span."""
        norm, hidden = normalise(text)
        same = len(norm) == len(text)
        out: list[Finding] = []

        def span(s: int, e: int) -> tuple[int, int]:
            if offset is not None:
                return offset
            if same:
                return s, e
            return 0, len(text)  # normalisation moved offsets; point at the whole text

        for rule in RULES:
            m = rule.pattern.search(norm)
            if m is None:
                continue
            weight = rule.indirect if indirect else rule.direct
            s, e = span(m.start(), m.end())
            out.append(self._finding(s, e, rule.name, weight, "heuristic"))
        if hidden.bidi or hidden.invisible >= 3 or hidden.confusable >= 2:
            s, e = span(0, len(text))
            out.append(self._finding(s, e, "hidden_characters", 0.45, "normalisation"))
        if indirect and self._model is not None:
            p, (ws, we) = self._model.scan(norm)
            if p >= self._model.threshold:
                s, e = span(ws, we)
                # Map the calibrated threshold to 0.5 so it combines with heuristic weights.
                t = self._model.threshold
                score = 0.5 + 0.5 * (p - t) / (1 - t) if t < 1 else p
                out.append(self._finding(s, e, "classifier", score, "classifier"))
        if depth > 0:
            for bs, be, enc, decoded in decoded_blobs(text):
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
    ) -> list[Finding]:
        flipped = rot13(text)
        out = []
        for rule in RULES[:7]:
            m = rule.pattern.search(flipped)
            if m is not None:
                s, e = offset or (m.start(), m.end())
                w = rule.indirect if indirect else rule.direct
                out.append(self._finding(s, e, rule.name, w, "rot13"))
        return out

    @staticmethod
    def _finding(start: int, end: int, rule: str, score: float, detector: str) -> Finding:
        return Finding(
            start=start,
            end=end,
            type="PROMPT_INJECTION",
            score=min(1.0, score),
            detector=detector,
            guard="injection",
            evidence=rule,
        )
