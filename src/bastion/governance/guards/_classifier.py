"""The small injection classifier: n-gram logistic regression, scored in pure Python.

Owns the windows and their features (shared with ``bench/train_injection.py``, which trains the
model with scikit-learn and checks that this scorer reproduces its probabilities), loading the
shipped model (``data/injection_model.json.gz``), and scoring a document as the maximum over
its sentence windows, so one injected sentence in a long e-mail is not diluted by the rest.
A window's features are its words, its shape (function words kept, other words masked to their
class) and how off-topic it is for the rest of the document. Technical documents (code answers)
have their own threshold, applied here by shifting their score. Does not own the heuristics or
the use of the threshold (``_injection``).
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

_WORD = re.compile(r"[a-z0-9']{1,30}|[^\sa-z0-9']")
#: Where sentences and lines end: a run of up to ten line breaks, or of up to ten whitespace
#: characters after ".", "!" or "?". Written to open with one whitespace character (which every
#: such run does) so that ``re`` skips ahead to whitespace instead of trying every position;
#: it matches exactly what ``\n{1,10}|(?<=[.!?])\s{1,10}`` matches.
_SPLIT = re.compile(r"\s(?:(?<=\n)\n{0,9}|(?<=[.!?]\s)\s{0,9})")
#: A sentence or line of at least this many characters is a window of its own, so a short
#: injected question is not merged with the e-mail text after it (see
#: ``bench/train_injection.py`` for the out-of-fold figures).
WINDOW_MIN = 30
WINDOW_MAX = 400
#: Verbs that open a task given to an assistant, written from general knowledge (not from any
#: test split). A window that opens with one gets the class feature ``^VERB``, so an instruction
#: about a topic never seen in training still looks like an instruction.
TASK_VERBS = frozenset(
    """
    add adapt advise analyse analyze answer arrange ask assess build calculate categorize
    categorise change check choose classify code compare compile complete compose compute
    condense construct convert correct count create decode decrypt define delete describe design
    detect determine develop devise discuss display draft draw edit elaborate encode encrypt
    enumerate estimate evaluate examine explain explore express extract fill find fix forecast
    format formulate forward generate give guess help identify illustrate imagine improve include
    indicate inform insert interpret introduce investigate judge label list locate make mention
    name note offer organize organise outline paraphrase pick plan predict prepare present print
    produce propose provide rank rate read recommend recount reformat reply report reorder
    rephrase replace research respond restate retrieve reverse review rewrite say schedule score
    search select send share show simplify solve sort spell state suggest summarize summarise
    tell test track transform translate type update use verify visit write
    """.split()  # noqa: SIM905
)
#: English function words (general grammar, not taken from any data set). The other words of a
#: window are masked to their class, and n-grams of the masked sequence ("what is the W of W ?")
#: describe the shape of a sentence whatever its topic.
FUNCTION_WORDS = frozenset(
    """
    a an the this that these those some any every each all no none both either neither another
    other such what which who whom whose where when why how whether if then than so as because
    since while although though unless until after before once i me my mine myself you your
    yours yourself yourselves he him his himself she her hers herself it its itself we us our
    ours ourselves they them their theirs themselves one is are was were be been being am do
    does did done doing have has had having will would shall should can could may might must
    ought need not nor only also too very just even still yet already ever never always often
    sometimes and or but for of to in on at by with from into onto over under about above below
    between through during without within among against across along around behind beyond upon
    toward towards up down out off away back here there now please kindly let let's don't can't
    won't isn't aren't doesn't didn't i'm you're it's that's what's
    """.split()  # noqa: SIM905
)
_OPENERS = frozenset({"please", "kindly", "now", "also", "then", "and", "additionally"})
_OUTPUT_NOUNS = frozenset(
    {"answer", "answers", "response", "responses", "reply", "replies", "output"}
)
#: Masked bigrams of a task verb after a stop or "please": an instruction inside a window.
_VERB_AFTER_STOP = frozenset(f"~{a} ~V" for a in (".", "?", "!", ":", "please", "kindly"))
_YOUR_OUTPUT = frozenset(f"your {n}" for n in _OUTPUT_NOUNS)
_SYMBOLS = tuple("{}[]()=;<>_`#\\/*+")
#: Share of code punctuation above which a document is technical (code, markup): BIPIA's
#: training e-mails stay under 0.02, its code answers (bar one line of prose) over it.
TECHNICAL_SYMBOLS = 0.03


@lru_cache(maxsize=1 << 16)
def _mask(tok: str) -> str:
    """A token's masked form, marked with "~" so masked n-grams never meet word n-grams
    (memoised: a pure function of a word, called for every token scanned)."""
    if tok in FUNCTION_WORDS:
        return "~" + tok
    if tok in TASK_VERBS:
        return "~V"
    if tok[0].isdigit():
        return "~D"
    if tok[0].isalpha() or tok[0] == "'":
        return "~W"
    return "~" + tok


@lru_cache(maxsize=1 << 16)
def _is_content(tok: str) -> bool:
    """A word that carries the topic: not a function word, four letters or more."""
    return len(tok) >= 4 and tok[0].isalpha() and tok not in FUNCTION_WORDS


def features(text: str) -> set[str]:
    """Binary features of ``text`` as one window with no document around it.

    Lower-cased word unigrams and bigrams (tokens include punctuation); the first two words and
    last token (instructions open with a verb or a question word and end with "." or "?"); the
    bigrams and first three tokens of the masked sequence ("~what ~is ~the ~W ~of ~W ~?"),
    which describe a sentence whatever its topic; class features for a task verb opening the
    window or following a stop, and "your answer"; and the window's novelty (``_Tokens``)."""
    return _Tokens([_WORD.findall(text.lower())]).features(0)


class _Tokens:
    """The windows' tokens of one document, concatenated, with what every window's features
    are cut from: each list is computed once for the document, then sliced per window. Also
    each window's share of content words that occur elsewhere in the document."""

    def __init__(self, per_window: list[list[str]]) -> None:
        self.per_window = per_window
        self.starts = list(itertools.accumulate(map(len, per_window), initial=0))
        toks = list(itertools.chain.from_iterable(per_window))
        self.masked = list(map(_mask, toks))
        self.bigrams = list(map(" ".join, itertools.pairwise(toks)))
        self.masked_bigrams = list(map(" ".join, itertools.pairwise(self.masked)))
        content = list(map(_is_content, toks))
        doc = Counter(itertools.compress(toks, content))
        self.shares = [
            _share(list(itertools.compress(w, content[i:j])), doc)
            for w, i, j in zip(per_window, self.starts, self.starts[1:], strict=False)
        ]
        self.ranked = sorted(s for s in self.shares if s is not None)

    def features(self, k: int) -> set[str]:
        toks = self.per_window[k]
        feats = set(toks)
        feats.add(self._novelty(k))
        if not toks:
            return feats
        i, j = self.starts[k], self.starts[k + 1]
        masked = self.masked[i : min(j, i + 3)]  # only the first three are used
        feats.update(self.bigrams[i : j - 1])
        feats.update(self.masked_bigrams[i : j - 1])
        first, last = toks[0], toks[-1]
        feats.add("^" + first)
        feats.add("$" + last)
        feats.add("^" + masked[0])
        if len(toks) > 1:
            feats.add(f"^{first} {toks[1]}")
            feats.add("^" + " ".join(masked[:2]))
            if first in _OPENERS:
                first = toks[1]
        if len(toks) > 2:
            feats.add("^" + " ".join(masked[:3]))
        if first in TASK_VERBS:
            feats.add("^VERB")
            feats.add("^VERB $" + last)
        if not feats.isdisjoint(_YOUR_OUTPUT):
            feats.add("#your_output")
        if not feats.isdisjoint(_VERB_AFTER_STOP):
            feats.add("#VERB_after_stop")
        return feats

    def _novelty(self, k: int) -> str:
        """How far window ``k``'s share (of content words found elsewhere in the document)
        falls below the median share of the other windows, in fifths ("#nov0": not below).
        An injected instruction is off-topic for the e-mail around it; measured against the
        other windows, not absolutely, because a short e-mail's own sentences share few
        words with each other either."""
        own = self.shares[k]
        if own is None:
            return "#nov_short"
        ranked = self.ranked
        if len(ranked) < 2:
            return "#nov_alone"
        # The median of the other windows' shares: ``ranked`` without one copy of ``own``.
        m = (len(ranked) - 1) // 2
        typical = ranked[m] if m < bisect.bisect_left(ranked, own) else ranked[m + 1]
        gap = typical - own
        return "#nov0" if gap <= 0 else f"#nov{min(3, 1 + int(5 * gap))}"


_ONE = 1


def _share(words: list[str], doc: Counter[str]) -> float | None:
    """The share of ``words`` (a window's content words) found in the rest of the document
    (``doc`` counts the whole document's); None under two words."""
    if len(words) < 2:
        return None
    if len(set(words)) == len(words):
        # Each word once in the window: it is shared when the document holds it again.
        return sum(map(_ONE.__lt__, map(doc.__getitem__, words))) / len(words)
    shared = 0
    for w, n in Counter(words).items():
        if doc[w] > n:
            shared += n
    return shared / len(words)


def document_features(text: str) -> list[tuple[tuple[int, int], set[str]]]:
    """Each window of ``text`` with its features, as the guard scores them."""
    low = text.lower()
    if len(low) != len(text):  # a few characters lower-case to two; keep the spans exact
        low = "".join(c.lower()[0] for c in text)
    spans = windows(text)
    findall = _WORD.findall  # a window's bounds as pos/endpos: the pattern has no anchors
    tokens = _Tokens([findall(low, s, e) for s, e in spans])
    return [(span, tokens.features(k)) for k, span in enumerate(spans)]


def technical(text: str) -> bool:
    """Code or markup: backticks, or a high share of code punctuation. Such documents are full
    of imperatives to the reader ("Replace this:", "Just use ..."), so they get their own
    threshold."""
    if "`" in text:
        return True
    return sum(map(text.count, _SYMBOLS)) >= TECHNICAL_SYMBOLS * len(text)


def windows(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into sentence/line windows of roughly WINDOW_MIN..WINDOW_MAX chars."""
    cuts = [0, *map(re.Match.end, _SPLIT.finditer(text)), len(text)]
    out: list[tuple[int, int]] = []
    start = 0
    for cut in cuts[1:]:
        if cut - start >= WINDOW_MIN or cut == len(text):
            # Long sentences are split hard; the model only needs local evidence.
            while cut - start > WINDOW_MAX:
                out.append((start, start + WINDOW_MAX))
                start += WINDOW_MAX - 40
            if cut > start:
                out.append((start, cut))
            start = cut
    out = [(s, e) for s, e in out if text[s:e].strip()]
    if len(out) > 1 and len(text[out[-1][0] : out[-1][1]].strip()) < WINDOW_MIN:
        # A short last line joins the one before, as every other short line joins the next.
        out[-2:] = [(out[-2][0], out[-1][1])]
    return out


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class InjectionModel:
    weights: dict[str, float]
    bias: float
    #: The decision threshold for prose documents, and the one ``scan``'s score is read against.
    threshold: float
    meta: dict[str, object]
    #: The threshold for technical documents (``technical``); None: ``threshold``.
    technical_threshold: float | None = None

    def score(self, feats: set[str]) -> float:
        """P(injection) for one window's features, as the sklearn pipeline computes it (binary
        features of the vocabulary, L2-normalised, logistic regression)."""
        hits = self.weights.keys() & feats  # iterates the (smaller) feature set
        z = self.bias
        if hits:
            z += sum(map(self.weights.__getitem__, hits)) / math.sqrt(len(hits))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def probability(self, text: str) -> float:
        """P(injection) for ``text`` as one window with no document around it."""
        return self.score(features(text))

    def scan(self, text: str) -> tuple[float, tuple[int, int]]:
        """The highest window score in ``text`` and that window's span.

        In a technical document the score is shifted (in log-odds) so that its own threshold
        falls on ``threshold``: the caller compares every score with one number."""
        best, span = 0.0, (0, 0)
        for sp, feats in document_features(text):
            p = self.score(feats)
            if p > best:
                best, span = p, sp
        t = self.technical_threshold
        if t is not None and t != self.threshold and 0.0 < best < 1.0 and technical(text):
            z = _logit(best) - _logit(t) + _logit(self.threshold)
            best = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
        return best, span


@lru_cache(maxsize=1)
def load_model() -> InjectionModel:
    ref = resources.files("bastion.governance.guards").joinpath("data/injection_model.json.gz")
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    tech = data.get("technical_threshold")
    return InjectionModel(
        weights={k: float(v) for k, v in data["weights"].items()},
        bias=float(data["bias"]),
        threshold=float(data["threshold"]),
        meta=dict(data.get("meta", {})),
        technical_threshold=None if tech is None else float(tech),
    )
