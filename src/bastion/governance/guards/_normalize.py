"""Normalisation for the injection guard: undo the tricks that hide instructions from matchers.

Owns removing zero-width and bidi controls, folding compatibility forms and cross-script
look-alikes to ASCII (NFKC plus a confusables table), and finding encoded blobs (base64, hex,
URL-encoding, rot13) whose decoded text must be scanned again. The normalised text is for
detection only; it is never forwarded, and offsets of findings refer to the original text.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass

from bastion.governance.guards._text import EN_FUNCTION_WORDS

#: Zero-width, joiners, soft hyphen, word joiner, BOM and tag characters.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff\U000e0000-\U000e007f]")
#: Bidirectional embedding/override/isolate controls (the "Trojan Source" characters).
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")

# Cyrillic and Greek letters that render like Latin ones. NFKC does not fold these.
_CONFUSABLES = str.maketrans(
    "\u0410\u0412\u0415\u0405\u0406\u0408\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0423\u0430\u0435\u0456\u0458\u043e\u0440\u0441\u0445"
    "\u0443\u0455\u0501\u051b\u051d\u04cf\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7\u03bf\u03b1\u03bd",
    "ABESIJKMHOPCTXYaeijopcxysdqwlABEZHIKMNOPTYXoav",
)

#: A word with at least one non-ASCII character: only these can hide look-alikes.
_NON_ASCII_WORD = re.compile(r"(?<!\w)\w{0,200}[^\x00-\x7f]\w{0,200}")
_B64 = re.compile(r"(?<![A-Za-z0-9+/=_\-])[A-Za-z0-9+/_\-]{24,20000}={0,2}(?![A-Za-z0-9+/=_\-])")
# Character classes with one bounded repeat each; the structure (pairs, %XX) is checked in code.
# A hex run opens with a hex digit not preceded by a letter or digit, tested after that digit
# (the look-behind covers both) so that ``re`` can skip ahead to hex digits.
_HEX = re.compile(
    r"[0-9A-Fa-f](?<![0-9A-Za-z][0-9A-Fa-f])[0-9A-Fa-f :]{22,20000}[0-9A-Fa-f](?![0-9A-Za-z])"
)
_BINARY = re.compile(r"(?<![01])[01]{8}[01 ]{27,40000}(?![01])")
_URLENC = re.compile(r"%[%0-9A-Za-z._~\-]{17,30000}")
#: Unicode tag characters spelling ASCII (invisible "ASCII smuggling").
_TAGS = re.compile("[\U000e0020-\U000e007e]{4,20000}")
#: Morse code: dots and dashes in letters separated by spaces, words by " / ".
_MORSE = re.compile(r"(?<![\w.\-])[.\-]{1,6}(?:[ /]{1,5}[.\-]{1,6}){5,4000}(?![\w.\-])")
#: Runs of plain words (a sentence or so) for the Caesar-shift and Pig Latin checks. The
#: repeats are possessive: letters are always followed by a non-letter and separators by a
#: non-separator, so giving characters back could never let a match succeed; it only cost time.
_WORD_RUN = re.compile(r"[A-Za-z]{1,30}+(?:[ ,'\-]{1,3}+[A-Za-z]{1,30}+){3,80}")
_MORSE_CODES = (
    ".- -... -.-. -.. . ..-. --. .... .. .--- -.- .-.. -- -. --- .--. --.- .-. ... - ..- ...- .-- "
    "-..- -.-- --.. ----- .---- ..--- ...-- ....- ..... -.... --... ---.. ----. .-.-.- --..-- "
    "..--.. -.-.--"
)
_MORSE_TABLE = dict(
    zip(_MORSE_CODES.split(), "abcdefghijklmnopqrstuvwxyz0123456789.,?!", strict=True)
)
#: An encoded run: ``(start, end, encoding, decoded text)``, offsets into the text as given.
Blob = tuple[int, int, str, str]
_VOWELS = frozenset("aeiou")
_TWO_LETTERS = re.compile(r"[a-z]{2,}")
#: Encodings found by reading words rather than decoding bytes: they are evidence only when the
#: decoded words say something (a lucky shift of ordinary words is not).
WORD_CIPHERS = ("caesar", "pig_latin")
#: Requests put back together from parts: only what they say counts, not the splitting.
REASSEMBLED = ("split_parts", "interlaced")
#: A request split into quoted parts to be put back together ("Part 1 is '...', Part 2 is
#: '...'", "A is '...', B is '...'", "interlace ... and ...").
_SPLIT_MARK = re.compile(
    r"\b(?:part \w{1,3}|combine|concatenat\w{0,3}|join|interlace|interleave|[a-d] is)\b",
    re.IGNORECASE,
)
#: Every match of ``_SPLIT_MARK`` holds one of these, lower-cased.
_SPLIT_WORDS = ("part ", "combine", "concatenat", "join", "interlace", "interleave", "a is",
                "b is", "c is", "d is")  # fmt: skip
_QUOTED_PART = re.compile('["\u201c]([^"\u201c\u201d\n]{1,300})["\u201d]')


@dataclass(frozen=True, kw_only=True)
class Hidden:
    """Counts of characters removed by normalisation (evidence of hiding)."""

    invisible: int
    bidi: int
    confusable: int


_NOTHING_HIDDEN = Hidden(invisible=0, bidi=0, confusable=0)


def normalise(text: str) -> tuple[str, Hidden]:
    """Fold the text for matching; return it with what was removed or folded."""
    if text.isascii():
        # Invisible, bidi and look-alike characters are all non-ASCII, and NFKC leaves ASCII as
        # it is: nothing to remove or fold.
        return text, _NOTHING_HIDDEN
    invisible = len(_INVISIBLE.findall(text))
    bidi = len(_BIDI.findall(text))
    cleaned = _BIDI.sub("", _INVISIBLE.sub("", text)) if invisible or bidi else text
    folded = unicodedata.normalize("NFKC", cleaned)
    if folded.isascii():
        return folded, Hidden(invisible=invisible, bidi=bidi, confusable=0)
    confusable = 0

    def fold_mixed(m: re.Match[str]) -> str:
        # Only words that mix look-alikes into Latin letters are disguised English; a plain
        # Greek or Russian word stays as it is (the multilingual rules need it intact).
        nonlocal confusable
        word = m.group()
        latin = word.translate(_CONFUSABLES)
        if latin != word and any("a" <= c.lower() <= "z" for c in word):
            confusable += 1
            return latin
        return word

    out = _NON_ASCII_WORD.sub(fold_mixed, folded)
    return out, Hidden(invisible=invisible, bidi=bidi, confusable=confusable)


def _printable_ratio(s: str) -> float:
    if not s:
        return 0.0
    good = sum(ch.isprintable() or ch in "\n\r\t" for ch in s)
    return good / len(s)


def _as_text(raw: bytes) -> str | None:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in s)
    if _printable_ratio(s) < 0.95 or letters < 0.6 * len(s) or " " not in s:
        return None  # binary or a random token, not a hidden sentence
    return s


def _english_share(words: list[str]) -> float:
    return sum(w.lower() in EN_FUNCTION_WORDS for w in words) / len(words) if words else 0.0


def _shift_table(shift: int) -> dict[int, int]:
    low = "abcdefghijklmnopqrstuvwxyz"
    moved = low[shift:] + low[:shift]
    return str.maketrans(low + low.upper(), moved + moved.upper())


_SHIFTS = [_shift_table(k) for k in range(26)]
#: Every English function word as it reads after a Caesar shift, mapped to the shift that
#: restores it: one dictionary pass over a run's words votes for the shift, instead of 25 tries.
_SHIFTED_FUNCTION_WORDS: dict[str, list[int]] = {}
for _k in range(1, 26):
    for _w in EN_FUNCTION_WORDS:
        if len(_w) >= 2:
            _SHIFTED_FUNCTION_WORDS.setdefault(_w.translate(_SHIFTS[26 - _k]), []).append(_k)


def _caesar(run: str, words: list[str]) -> tuple[int, str] | None:
    """The shift that turns a run with no English function words into English, if any."""
    votes: dict[int, set[str]] = {}
    for w in words:
        for k in _SHIFTED_FUNCTION_WORDS.get(w.lower(), ()):
            votes.setdefault(k, set()).add(w.lower())
    if not votes:
        return None
    shift, distinct = max(votes.items(), key=lambda kv: len(kv[1]))
    if len(distinct) < 3:
        return None
    shifted = run.translate(_SHIFTS[shift])
    if _english_share([w for w in re.findall(r"[A-Za-z]+", shifted) if len(w) >= 2]) < 0.3:
        return None
    return shift, shifted


def _pig_latin(words: list[str]) -> str:
    out = []
    for word in words:
        w = word.lower()
        if w.endswith("yay") and len(w) > 4:
            out.append(w[:-3])  # a word that began with a vowel
            continue
        stem = w[:-2]
        cut = len(stem)
        while cut > 0 and stem[cut - 1] not in _VOWELS and stem[cut - 1] != "y":
            cut -= 1
        out.append(stem[cut:] + stem[:cut] if cut < len(stem) else stem)
    return " ".join(out)


def _word_ciphers(text: str) -> list[tuple[int, int, str, str]]:
    """Runs of words written in a Caesar shift (rot13 included) or in Pig Latin."""
    out: list[tuple[int, int, str, str]] = []
    for m in _WORD_RUN.finditer(text):
        low = m.group().lower()
        if " the " in low or " and " in low or " to " in low or " of " in low:
            continue  # readable English (the common case, decided without splitting words)
        words = _TWO_LETTERS.findall(low)
        if len(words) < 5 or 10 * sum(map(EN_FUNCTION_WORDS.__contains__, words)) >= len(words):
            continue  # already readable English
        if sum(w.lower().endswith("ay") for w in words) * 3 >= 2 * len(words):
            decoded = _pig_latin(words)
            if _english_share(decoded.split()) >= 0.25:
                out.append((m.start(), m.end(), "pig_latin", decoded))
                continue
        found = _caesar(m.group(), words)
        if found is not None:
            out.append((m.start(), m.end(), f"caesar{found[0]}", found[1]))
    return out


def _joined_parts(text: str) -> list[tuple[int, int, str, str]]:
    """Quoted fragments meant to be joined: concatenated, or interlaced letter by letter."""
    if '"' not in text and "\u201c" not in text:
        return []
    head = text[:2000]
    if head.isascii() and not any(map(head.lower().__contains__, _SPLIT_WORDS)):
        return []  # (where Unicode case folding cannot apply) no literal of the mark occurs
    if not _SPLIT_MARK.search(text, 0, 2000):
        return []
    parts = list(_QUOTED_PART.finditer(text, 0, 4000))[:8]
    if len(parts) < 2:
        return []
    texts = [p.group(1) for p in parts]
    start, end = parts[0].start(), parts[-1].end()
    glued = "".join(texts)
    joined = glued if " " in glued else " ".join(texts)
    out = [(start, end, "split_parts", joined)]
    if len(texts) == 2 and abs(len(texts[0]) - len(texts[1])) <= 1:
        a, b = texts
        woven = "".join(x + y for x, y in zip(a, b, strict=False)) + a[len(b) :]
        out.append((start, end, "interlaced", woven))
    return out


def decoded_blobs(text: str, limit: int = 20) -> tuple[Blob, ...]:
    """Encoded runs that decode to readable text: ``(start, end, encoding, decoded)``."""
    out: list[tuple[int, int, str, str]] = []
    # Each encoding is looked for only when a character it needs occurs: one substring test
    # instead of a regex pass over a text that cannot hold it.
    ascii_only = text.isascii()
    for m in () if ascii_only else _TAGS.finditer(text):
        out.append(
            (m.start(), m.end(), "unicode_tags", "".join(chr(ord(c) - 0xE0000) for c in m.group()))
        )
    for m in _MORSE.finditer(text) if (".-" in text or "-." in text) else ():
        letters = [
            " " if tok == "/" else _MORSE_TABLE.get(tok, "?")
            for tok in re.sub(r" ?/ ?", " / ", m.group()).split()
        ]
        decoded = "".join(letters)
        if decoded.count("?") * 5 < len(decoded):
            out.append((m.start(), m.end(), "morse", decoded))
    out.extend(_word_ciphers(text))
    out.extend(_joined_parts(text))
    for m in _B64.finditer(text):
        blob = m.group()
        if blob.isalpha() or blob.isdigit():
            continue  # a long word or number, not base64
        padded = blob + "=" * (-len(blob) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            continue
        s = _as_text(raw)
        if s:
            out.append((m.start(), m.end(), "base64", s))
        if len(out) >= limit:
            return tuple(out)
    for m in _HEX.finditer(text):
        digits = m.group().replace(" ", "").replace(":", "")
        if len(digits) % 2:
            digits = digits[:-1]
        try:
            s = _as_text(bytes.fromhex(digits))
        except ValueError:
            continue
        if s:
            out.append((m.start(), m.end(), "hex", s))
    for m in _BINARY.finditer(text) if "01" in text else ():
        groups = m.group().split()
        if not groups or any(len(g) != 8 for g in groups):
            continue
        s = _as_text(bytes(int(g, 2) for g in groups))
        if s:
            out.append((m.start(), m.end(), "binary", s))
    for m in _URLENC.finditer(text) if "%" in text else ():
        if m.group().count("%") < 6:
            continue
        s = urllib.parse.unquote(m.group())
        if _as_text(s.encode()):
            out.append((m.start(), m.end(), "url", s))
    return tuple(out[:limit])


def rot13(text: str) -> str:
    # The Caesar shift by 13, as the "rot13" codec does it, without the codec lookup.
    return text.translate(_SHIFTS[13])
