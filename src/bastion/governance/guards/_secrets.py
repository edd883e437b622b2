"""The secret guard: credentials that must not leave through tool arguments, answers or logs.

Owns the provider token formats (AWS, GCP, Azure, OpenAI, Anthropic, GitHub, GitLab, Slack,
Stripe, SendGrid, npm, PyPI, Hugging Face), PEM private keys, JWTs, passwords in URLs and
connection strings, and high-entropy values assigned to secret-sounding names. Every pattern is
linear-time (bounded repeats, distinct delimiters). Evidence never contains the secret itself.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import Counter

from bastion.governance.guards._config import SecretsConfig
from bastion.governance.guards._text import resolve_overlaps, same_length_lower
from bastion.governance.guards._types import GuardFinding, GuardName, ScanContext

# (type, pattern, score). A pattern's group 1, when present, is the secret part of the match.
_TOKEN_PATTERNS: list[tuple[str, str, float]] = [
    ("AWS_ACCESS_KEY", r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Za-z0-9])", 0.95),
    (
        "AWS_SECRET_KEY",
        r"(?i)aws[\w\-.]{0,20}?(?:secret|sk)[\w\-.]{0,20}?['\"]?\s{0,3}[:=]{1,2}\s{0,3}['\"]?"
        r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        0.95,
    ),
    ("GCP_API_KEY", r"(?<![\w\-])AIza[0-9A-Za-z\-_]{35}(?![\w\-])", 0.95),
    ("GCP_OAUTH_TOKEN", r"(?<![\w\-])ya29\.[0-9A-Za-z\-_]{20,400}", 0.9),
    (
        "AZURE_STORAGE_KEY",
        r"(?i)AccountKey=([A-Za-z0-9+/]{60,100}={0,2})",
        0.95,
    ),
    ("AZURE_CLIENT_SECRET", r"(?<![\w~.\-])[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}", 0.9),
    ("AZURE_SAS_TOKEN", r"(?<![\w])sig=([A-Za-z0-9%+/]{40,120}={0,2})", 0.85),
    ("ANTHROPIC_API_KEY", r"(?<![\w\-])sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_\-]{60,140}", 0.98),
    (
        "OPENAI_API_KEY",
        r"(?<![\w\-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,200}(?![\w\-])",
        0.9,
    ),
    ("GITHUB_TOKEN", r"(?<![\w])gh[pousr]_[A-Za-z0-9]{36,255}(?![\w])", 0.98),
    ("GITHUB_TOKEN", r"(?<![\w])github_pat_[A-Za-z0-9_]{60,120}(?![\w])", 0.98),
    ("GITLAB_TOKEN", r"(?<![\w\-])glpat-[A-Za-z0-9\-_]{20,40}(?![\w\-])", 0.95),
    ("SLACK_TOKEN", r"(?<![\w\-])xox[abposre]-[A-Za-z0-9\-]{10,250}", 0.95),
    (
        "SLACK_WEBHOOK",
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{20,30}",
        0.95,
    ),
    ("STRIPE_KEY", r"(?<![\w])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,120}(?![\w])", 0.95),
    ("SENDGRID_KEY", r"(?<![\w])SG\.[\w\-]{22}\.[\w\-]{43}(?![\w\-])", 0.95),
    ("NPM_TOKEN", r"(?<![\w])npm_[A-Za-z0-9]{36}(?![\w])", 0.95),
    ("PYPI_TOKEN", r"(?<![\w])pypi-AgEIcHlwaS5vcmc[A-Za-z0-9\-_]{50,300}", 0.98),
    ("HUGGINGFACE_TOKEN", r"(?<![\w])hf_[A-Za-z0-9]{34,40}(?![\w])", 0.9),
    (
        "URL_PASSWORD",
        r"(?i)\b[a-z][a-z0-9+.\-]{1,20}://[^\s:/@'\"<>]{1,64}:([^\s:/@'\"<>]{1,128})@[\w\-.]{1,253}",
        0.9,
    ),
    (
        "CONNECTION_STRING_PASSWORD",
        r"(?i)(?<![\w])(?:password|pwd)\s{0,3}=\s{0,3}([^;'\"\s]{1,128})(?=;|'|\"|\s|$)",
        0.85,
    ),
]
_COMPILED = [(t, re.compile(p), s) for t, p, s in _TOKEN_PATTERNS]

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_JWT = re.compile(
    r"(?<![\w\-])eyJ[A-Za-z0-9_\-]{5,2000}\.eyJ[A-Za-z0-9_\-]{5,8000}\.[A-Za-z0-9_\-]{10,2000}"
)
# Starts at the secret-sounding word (a literal alternation fails fast); the rest of the name
# before it is recovered in code, so no repeat precedes the alternation.
_ASSIGN = re.compile(
    r"(?i)(?:secret|token|passwd|password|pwd|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key"
    r"|auth[_\-]?key|credential|client[_\-]?secret|signing[_\-]?key)"
    r"[a-z0-9_]{0,20}['\"]?\s{0,3}(?::=|=>|==|[:=])\s{0,3}(?:[bru]?['\"`])?([^\s'\"`,;)}\]]{8,256})"
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_PLACEHOLDER_VALUES = re.compile(
    r"(?i)^(?:\$\{?|%\(|\{\{|<|os\.|process\.env|env\(|getenv|none|null|true|false|"
    r"x{6,}|\*{4,}|changeme|password|secret|example|your[_\-]|redacted|dummy|test)"
)


_PASSWORD_KINDS = frozenset({"URL_PASSWORD", "CONNECTION_STRING_PASSWORD"})


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _jwt_valid(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _finding(start: int, end: int, kind: str, score: float, detector: str) -> GuardFinding:
    return GuardFinding(
        start=start,
        end=end,
        type=kind,
        score=score,
        detector=detector,
        guard="secrets",
        evidence=f"{kind} ({end - start} chars)",
    )


class SecretGuard:
    """Finds credentials. Stateless apart from its config; thread-safe."""

    def __init__(self, config: SecretsConfig | None = None) -> None:
        self.config = config or SecretsConfig()

    @property
    def name(self) -> GuardName:
        return "secrets"

    def scan(self, text: str, context: ScanContext | None = None) -> list[GuardFinding]:
        if not text:
            return []
        out: list[GuardFinding] = []
        for kind, rx, score in _COMPILED:
            for m in rx.finditer(text):
                g = 1 if rx.groups else 0
                if kind in _PASSWORD_KINDS and _PLACEHOLDER_VALUES.match(m.group(g)):
                    continue  # "password=changeme", "Password=${DB_PASSWORD}"
                out.append(_finding(m.start(g), m.end(g), kind, score, "token_pattern"))
        for m in _PEM_BEGIN.finditer(text):
            end_marker = text.find("-----END", m.end(), m.end() + 20_000)
            if end_marker == -1:
                end = min(len(text), m.end() + 4000)
            else:
                close = text.find("-----", end_marker + 8, end_marker + 60)
                end = close + 5 if close != -1 else end_marker + 8
            out.append(_finding(m.start(), end, "PRIVATE_KEY", 0.99, "pem_block"))
        for m in _JWT.finditer(text):
            if _jwt_valid(m.group()):
                out.append(_finding(m.start(), m.end(), "JWT", 0.9, "jwt_structure"))
        for m in _ASSIGN.finditer(text):
            begin = m.start()
            while begin > 0 and m.start() - begin < 30 and text[begin - 1] in _NAME_CHARS:
                begin -= 1
            name, value = text[begin : m.start(1)].lower(), m.group(1)
            if _PLACEHOLDER_VALUES.match(value):
                continue
            entropy = shannon_entropy(value)
            is_password = "pass" in name or "pwd" in name
            if entropy >= self.config.entropy_threshold or (is_password and entropy >= 2.5):
                score = 0.8 if entropy >= self.config.entropy_threshold + 0.5 else 0.7
                out.append(_finding(m.start(1), m.end(1), "SECRET_ASSIGNMENT", score, "entropy"))
        if context is not None and context.protected:
            out.extend(find_protected(text, context.protected))
        return resolve_overlaps(
            out, {"PROTECTED_VALUE": 4, "PRIVATE_KEY": 3, "SECRET_ASSIGNMENT": 0}
        )


#: Protected values shorter than this are ignored (they would match everywhere).
MIN_PROTECTED = 4
MAX_PROTECTED = 256


def find_protected(text: str, values: tuple[str, ...]) -> list[GuardFinding]:
    """Occurrences of protected values, verbatim (case-insensitive, whole words) or squashed:
    compared on letters and digits only, forwards and reversed, so "P i a n o", "p-i-a-n-o"
    and "onaip" are caught. Linear per value (``str.find`` over the text)."""
    out: list[GuardFinding] = []
    values = tuple(v for v in values[:MAX_PROTECTED] if len(v.strip()) >= MIN_PROTECTED)
    if not values:
        return out
    low = same_length_lower(text)
    kept = [i for i, ch in enumerate(low) if ch.isalnum()]
    squashed = "".join(low[i] for i in kept)
    for value in values:
        needle = value.lower()
        i = low.find(needle)
        while i != -1:
            j = i + len(needle)
            if (i == 0 or not low[i - 1].isalnum()) and (j == len(low) or not low[j].isalnum()):
                out.append(_finding(i, j, "PROTECTED_VALUE", 1.0, "protected_value"))
            i = low.find(needle, i + 1)
        core = "".join(ch for ch in needle if ch.isalnum())
        if len(core) < MIN_PROTECTED:
            continue
        for form, detector in ((core, "protected_squashed"), (core[::-1], "protected_reversed")):
            k = squashed.find(form)
            while k != -1:
                start, end = kept[k], kept[k + len(form) - 1] + 1
                out.append(_finding(start, end, "PROTECTED_VALUE", 0.95, detector))
                k = squashed.find(form, k + 1)
    return out
