"""Structured PII: compiled patterns plus checksum and context validators (the fast tier's core).

Owns EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS, DATE_OF_BIRTH and
the config-driven custom patterns and deny-lists. Does not own names and places (``_pii_names``)
or merging tiers (``_pii``).

Every pattern is linear-time in Python's ``re``: no repeat inside an unbounded repeat, and groups
are separated by characters the repeated part cannot match, so a failed match backtracks a
bounded number of steps (``tests/guards/test_bad_input.py`` runs them through the same check
applied to custom patterns, and feeds them backtracking bait).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from functools import lru_cache

import phonenumbers

from bastion.governance.guards._config import CustomPattern, DenyList
from bastion.governance.guards._text import same_length_lower
from bastion.governance.guards._types import GuardFinding

Detector = Callable[[str], list[GuardFinding]]


def _finding(start: int, end: int, kind: str, score: float, detector: str) -> GuardFinding:
    return GuardFinding(
        start=start,
        end=end,
        type=kind,
        score=min(1.0, max(0.0, score)),
        detector=detector,
        guard="pii",
        evidence=f"{kind} by {detector}",
    )


def _context(text: str, start: int, words: re.Pattern[str], width: int = 40) -> bool:
    return words.search(text, max(0, start - width), start) is not None


def _after(text: str, end: int, words: re.Pattern[str], width: int = 25) -> bool:
    return words.search(text, end, min(len(text), end + width)) is not None


def _words(*items: str) -> re.Pattern[str]:
    return re.compile(r"(?i)(?<![a-z])(?:" + "|".join(items) + r")(?![a-z])")


# ---- email ---------------------------------------------------------------------------------------

EMAIL_RE = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62})(?:\.[A-Za-z0-9\-]{1,63}){1,8}"
)


def find_emails(text: str) -> list[GuardFinding]:
    out = []
    for m in EMAIL_RE.finditer(text):
        tld = m.group().rsplit(".", 1)[-1]
        if tld.isalpha() and len(tld) >= 2:
            out.append(_finding(m.start(), m.end(), "EMAIL_ADDRESS", 0.95, "email_pattern"))
    return out


# ---- credit card (Luhn) -------------------------------------------------------------------------

CARD_RE = re.compile(r"(?<![\d.\-])\d(?:[ \-]?\d){11,18}(?![\d\-]|\.\d)")
CARD_CONTEXT = _words("card", "credit", "debit", "visa", "mastercard", "amex", "cc", "payment")
_CARD_PREFIXES = ("4", "5", "34", "37", "36", "30", "38", "6", "2131", "1800", "35", "22", "27")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def find_cards(text: str) -> list[GuardFinding]:
    out = []
    for m in CARD_RE.finditer(text):
        raw = m.group()
        digits = raw.replace(" ", "").replace("-", "")
        if not (12 <= len(digits) <= 19) or not luhn_valid(digits) or len(set(digits)) < 2:
            continue
        score = 0.6
        if digits.startswith(_CARD_PREFIXES):
            score += 0.2
        if _context(text, m.start(), CARD_CONTEXT, 60):
            score += 0.2
        out.append(_finding(m.start(), m.end(), "CREDIT_CARD", score, "card_luhn"))
    return out


# ---- IBAN (mod-97) ------------------------------------------------------------------------------

IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
# Lengths per country from the IBAN registry (a subset; other countries get the generic bound).
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LT": 20, "LU": 20, "LV": 21, "MT": 31, "NL": 18, "NO": 15, "PL": 28,
    "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "TR": 26, "AE": 23, "SA": 24, "IL": 23,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    if not (15 <= len(iban) <= 34):
        return False
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and expected != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def find_ibans(text: str) -> list[GuardFinding]:
    out = []
    for m in IBAN_RE.finditer(text):
        compact = m.group().replace(" ", "")
        if iban_valid(compact):
            out.append(_finding(m.start(), m.end(), "IBAN_CODE", 0.95, "iban_mod97"))
    return out


# ---- US SSN -------------------------------------------------------------------------------------

SSN_RE = re.compile(r"(?<![\d\-])(\d{3})([\- ]?)(\d{2})([\- ]?)(\d{4})(?![\d\-])")
SSN_CONTEXT = _words("ssn", "social security", "social sec", "ss#", "ss #", "tax id", "taxpayer")


def ssn_valid(area: str, group: str, serial: str) -> bool:
    a = int(area)
    if a == 0 or a == 666 or a >= 900:
        return False
    if group == "00" or serial == "0000":
        return False
    # Well-known advertising/sample numbers are not anyone's SSN.
    return f"{area}{group}{serial}" not in {"078051120", "219099999", "123456789"}


def find_ssns(text: str) -> list[GuardFinding]:
    out = []
    for m in SSN_RE.finditer(text):
        area, sep, group, sep2, serial = m.groups()
        if sep != sep2 or not ssn_valid(area, group, serial):
            continue
        has_context = _context(text, m.start(), SSN_CONTEXT, 50)
        if sep == "-":
            score = 0.85
        elif sep == " ":
            score = 0.55
        else:
            score = 0.4
        if has_context:
            score += 0.3
        out.append(_finding(m.start(), m.end(), "US_SSN", score, "ssn_rules"))
    return out


# ---- IP addresses -------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
IPV6_RE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
VERSION_CONTEXT = _words("version", "ver", "v", "release", "build", "firmware", "sdk", "api")
IP_CONTEXT = _words("ip", "ipv4", "ipv6", "address", "host", "server", "login", "from", "connect")


def find_ips(text: str) -> list[GuardFinding]:
    out = []
    for m in IPV4_RE.finditer(text):
        # "v1.2.3.4" and "version 10.0.0.1" are version numbers, not hosts.
        before = text[max(0, m.start() - 1) : m.start()]
        if before in ("v", "V") or _context(text, m.start(), VERSION_CONTEXT, 14):
            continue
        score = 0.9 if _context(text, m.start(), IP_CONTEXT, 40) else 0.75
        out.append(_finding(m.start(), m.end(), "IP_ADDRESS", score, "ipv4_pattern"))
    for m in IPV6_RE.finditer(text):
        cand = m.group()
        if cand.count(":") < 3 or sum(ch.isalnum() for ch in cand) < 6:
            continue
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        out.append(_finding(m.start(), m.end(), "IP_ADDRESS", 0.85, "ipv6_pattern"))
    return out


# ---- phone numbers ------------------------------------------------------------------------------

PHONE_RE = re.compile(
    r"(?<![\w+\-./])(?:\+\d{1,3}[ .\-]?)?(?:\(0?\d{1,4}\)[ .\-]?|\(0\)[ .\-]?)?"
    r"\d{1,12}(?:[ .\-]\d{1,12}){0,6}(?: ?(?:x|ext\.?|#) ?\d{1,5})?(?![\w\-]|\.\d)"
)
PHONE_CONTEXT = _words(
    "phone", "tel", "telephone", "mobile", "cell", "call", "calling", "number", "reach",
    "contact", "fax", "whatsapp", "sms", "text", "dial", "ring", "landline", "hotline",
    "registered", "answering",
)  # fmt: skip
NOT_PHONE_CONTEXT = _words(
    "order", "invoice", "tracking", "ref", "reference", "account", "acct", "id", "serial",
    "ticket", "case", "isbn", "po", "sku", "version", "zip", "postal", "code", "amount", "total",
    "usd", "eur", "\\$", "€", "£", "card", "iban", "ssn", "pin", "otp",
)  # fmt: skip
_DATE_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}(?!\d)")
_DATE_LIKE = re.compile(r"^\d{4}[\-./]\d{1,2}[\-./]\d{1,2}$|^\d{1,2}[\-./]\d{1,2}[\-./]\d{2,4}$")


_DIGIT_GROUPS = re.compile(r"\d{1,15}")


@lru_cache(maxsize=8192)
def _possible_phone(cand: str, regions: tuple[str, ...]) -> bool:
    """phonenumbers' length rules for any of the regions (cached: parsing is the slow part)."""
    try:
        if cand.startswith("+"):
            return bool(phonenumbers.is_possible_number(phonenumbers.parse(cand, None)))
        for region in regions:
            if phonenumbers.is_possible_number(phonenumbers.parse(cand, region)):
                return True
    except phonenumbers.NumberParseException:
        return False
    return False


def find_phones(text: str, regions: Iterable[str]) -> list[GuardFinding]:
    out = []
    regions = tuple(regions)
    for m in PHONE_RE.finditer(text):
        cand = m.group()
        digits = sum(ch.isdigit() for ch in cand)
        if not (7 <= digits <= 15) or _DATE_LIKE.match(cand) or _DATE_PREFIX.match(cand):
            continue
        if text[m.end() : m.end() + 1] == ":":
            continue  # "2020-06-20 14:11": a timestamp
        has_format = cand.startswith("+") or "(" in cand or any(c in cand for c in " .-")
        if not has_format and not _context(text, m.start(), PHONE_CONTEXT):
            continue  # a bare run of digits is an id unless someone calls it a number
        if _context(text, m.start(), NOT_PHONE_CONTEXT, 20):
            continue
        if max(len(g) for g in _DIGIT_GROUPS.findall(cand)) < 2:
            continue  # "1 2 3 4 5 6 7" is a list of numbers, not a phone number
        if not _possible_phone(cand, regions):
            continue
        score = 0.45 + (0.15 if has_format else 0.0) + (0.15 if cand.startswith("+") else 0.0)
        if _context(text, m.start(), PHONE_CONTEXT, 50):
            score += 0.3
        out.append(_finding(m.start(), m.end(), "PHONE_NUMBER", score, "phone_pattern"))
    return out


# ---- date of birth ------------------------------------------------------------------------------

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]{0,6}\.?"
DATE_RE = re.compile(
    rf"(?<!\d)(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}"
    rf"|{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)? {_MONTH},? \d{{4}})(?!\d)"
)
DOB_CONTEXT = _words("born", "birth", "birthday", "dob", "d\\.o\\.b\\.?", "b\\.", "birthdate")


def find_dobs(text: str) -> list[GuardFinding]:
    out = []
    for m in DATE_RE.finditer(text):
        if _context(text, m.start(), DOB_CONTEXT, 40):
            out.append(_finding(m.start(), m.end(), "DATE_OF_BIRTH", 0.85, "dob_context"))
    return out


# ---- config-driven ------------------------------------------------------------------------------


def compile_custom(patterns: Iterable[CustomPattern]) -> Detector:
    compiled = [(p, re.compile(p.pattern), _words(*map(re.escape, p.context))) for p in patterns]

    def detect(text: str) -> list[GuardFinding]:
        out = []
        for spec, rx, ctx in compiled:
            for m in rx.finditer(text):
                if m.end() == m.start():
                    continue
                if spec.context and not _context(text, m.start(), ctx):
                    continue
                out.append(_finding(m.start(), m.end(), spec.type, spec.score, "custom_pattern"))
        return out

    return detect


def compile_deny_lists(lists: Iterable[DenyList]) -> Detector:
    import ahocorasick

    sensitive = ahocorasick.Automaton()
    insensitive = ahocorasick.Automaton()
    for spec in lists:
        for value in spec.values:
            if not value:
                continue
            if spec.case_sensitive:
                sensitive.add_word(value, (len(value), spec.type, spec.score))
            else:
                insensitive.add_word(value.lower(), (len(value), spec.type, spec.score))
    autos = [(a, cs) for a, cs in ((sensitive, True), (insensitive, False)) if len(a)]
    for a, _ in autos:
        a.make_automaton()

    def detect(text: str) -> list[GuardFinding]:
        out = []
        for automaton, case_sensitive in autos:
            hay = text if case_sensitive else same_length_lower(text)
            for end_idx, (length, kind, score) in automaton.iter(hay):
                start, end = end_idx - length + 1, end_idx + 1
                if (start > 0 and hay[start - 1].isalnum()) or (
                    end < len(hay) and hay[end].isalnum()
                ):
                    continue  # whole words only
                out.append(_finding(start, end, kind, score, "deny_list"))
        return out

    return detect
