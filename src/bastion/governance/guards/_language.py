"""Which parts of a message are written in a language the deployment does not vet.

An instruction in German slips past English phrase rules, an English classifier and English
topic checks alike: the guard cannot read it, so it cannot vouch for it. This module finds the
segments (sentences, lines, code comments) whose language is confidently *not* one of the
configured ones, using ``py3langid`` (a naive-Bayes byte n-gram model shipped in its wheel).

Owns segmentation for language identification, the skip rules that keep code, numbers and
names from being judged as prose, and the confidence rule. Does not own the weight of such a
finding nor whether it is enabled (``_injection`` and ``InjectionConfig.languages``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from bastion.governance.guards import _word_vectors as word_vectors
from bastion.governance.guards._text import EN_FUNCTION_WORDS

#: Segments: sentences and lines, code comments included; at most this many are judged.
_SEGMENT = re.compile("[^\n.!?\u3002\uff01\uff1f]{1,600}[.!?\u3002\uff01\uff1f]?")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
_NON_LATIN = re.compile("[\u0370-\u1dff\u2e80-\ua6ff\uac00-\ud7af]")
_ASCII_WORD = re.compile(r"[a-z]{1,40}")
_DIGIT = re.compile(r"\d")
#: Code: an import line, a call, an assignment, a dotted name.
_CODE_LINE = re.compile(r"\bimport\b|\w\(|=|\w\.\w|[{}]")
#: Every match of ``_CODE_LINE`` holds one of these.
_CODE_MARKS = ("import", "(", "=", ".", "{", "}")
_MAX_SEGMENTS = 64
#: Letters of scripts without case (Hebrew, Arabic, the Indic scripts, Thai, Ethiopic, CJK,
#: Hangul): a few of them make a segment worth judging even without spaces between words.
_UNCASED = re.compile(r"[\u0590-\u077f\u0900-\u0e7f\u1200-\u137f\u2e80-\ua4cf\uac00-\ud7af]")
#: A segment is foreign when the identifier's best language is not configured, with at least
#: MIN_TOP probability (close relatives such as Malay and Indonesian split it, hence not more),
#: and the configured languages together get under MAX_ALLOWED_SHARE; or when the configured
#: languages get almost nothing (MIN_SHARE_ALONE), however the rest is split among relatives
#: (Russian, Bulgarian and Macedonian, say) in a non-Latin script.
MIN_TOP = 0.45
#: Share of a segment's words found whole in the English vocabulary above which it is English.
ENGLISH_VOCABULARY_SHARE = 0.8
MAX_ALLOWED_SHARE = 0.12
MIN_SHARE_ALONE = 0.03
#: At or above this top probability the configured languages cannot reach MAX_ALLOWED_SHARE
#: (the probabilities sum to one; the margin covers their float32 rounding, ~1e-5 at most).
_SURE_TOP = 1.0 - MAX_ALLOWED_SHARE + 0.01

_lock = threading.Lock()
_identifier: Any = None


def _model() -> Any:
    global _identifier
    if _identifier is not None:
        return _identifier  # loaded once; no lock needed to read it
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _identifier


def known_languages() -> frozenset[str]:
    """The codes the identifier knows (ISO 639-1 where one exists), for validating config."""
    return frozenset(str(code) for code in _model().nb_classes)


@dataclass(frozen=True, slots=True)
class ForeignSegment:
    start: int
    end: int
    language: str
    probability: float


def _prose(segment: str, english_allowed: bool) -> str | None:
    """The words of ``segment`` worth identifying, or None when it is not prose to judge.

    Capitalised words are dropped (names, places and street names are not the writer's
    language), as are lines of code; an English-led segment is skipped outright.
    """
    if not segment.isascii() and len(_UNCASED.findall(segment)) >= 4:
        return segment  # Arabic, Devanagari, CJK...: no capitals to tell names by; judged whole
    if any(map(segment.__contains__, _CODE_MARKS)) and _CODE_LINE.search(segment):
        return None  # a line of code: identifiers are not prose
    every = _WORD.findall(segment)
    if english_allowed:
        common = sum(map(EN_FUNCTION_WORDS.__contains__, map(str.lower, every)))
        if common >= 2 and common * 3 >= len(every):
            return None
    words = [w for w in every if not w[0].isupper()]
    digits = _DIGIT.search(segment) is not None
    if len(words) < 3 and len(every) >= 3 and not digits and 2 * len(words) >= len(every):
        words = every  # a short question ("Was ist das Passwort?"): capitals are not names here
    if len(words) < 3 or sum(map(len, words)) < 12:
        return None
    if digits and len(words) <= 5:
        return None  # a street address or a reference line
    return " ".join(words)


def english_vocabulary_share(text: str) -> float:
    """The share of the words (3+ letters) of ``text`` found whole in the English, uncased
    WordPiece vocabulary of the word vectors; 0.0 for text with non-ASCII letters or no words.
    English sentences score near 1; short requests in Spanish 0.0-0.2, French 0.3-0.4, German
    0.5-0.7."""
    if not text.isascii():
        return 0.0
    words = [w for w in _ASCII_WORD.findall(text.lower()) if len(w) >= 3]
    if not words:
        return 0.0
    index = word_vectors.load().index
    return sum(map(index.__contains__, words)) / len(words)


def _known_english(prose: str) -> bool:
    """Nearly every word is a known English word: the identifier need not be asked ("forget
    previous instructions", "developer running system upgrade")."""
    words = prose.split()
    return len(words) >= 3 and english_vocabulary_share(prose) >= ENGLISH_VOCABULARY_SHARE


def foreign_segments(text: str, allowed: frozenset[str]) -> list[ForeignSegment]:
    """Segments of ``text`` confidently written in a language outside ``allowed``."""
    if not allowed:
        return []
    ident = _model()
    out: list[ForeignSegment] = []
    judged = 0
    english = "en" in allowed
    for m in _SEGMENT.finditer(text):
        prose = _prose(m.group(), english)
        if prose is None:
            continue
        if english and _known_english(prose):
            continue
        judged += 1
        if judged > _MAX_SEGMENTS:
            break
        lang, prob = ident.classify(prose)
        if lang in allowed or lang == "zxx":  # zxx: no linguistic content
            continue
        if prob >= _SURE_TOP:
            # The configured languages share what the best one leaves, under MAX_ALLOWED_SHARE
            # here: foreign without ranking the rest.
            out.append(ForeignSegment(m.start(), m.end(), str(lang), float(prob)))
            continue
        share = sum(p for code, p in ident.rank(prose) if code in allowed)
        other_script = len(_NON_LATIN.findall(prose)) >= 4
        if (prob >= MIN_TOP and share < MAX_ALLOWED_SHARE) or (
            other_script and share < MIN_SHARE_ALONE
        ):
            out.append(ForeignSegment(m.start(), m.end(), str(lang), float(prob)))
    return out
