"""The small injection classifier: word n-gram logistic regression, scored in pure Python.

Owns the feature function (shared with ``bench/train_injection.py``, which trains the model with
scikit-learn and checks that this scorer reproduces its probabilities), loading the shipped
model (``data/injection_model.json.gz``), and scoring a document as the maximum over short
windows, so one injected sentence in a long e-mail is not diluted by the rest. Does not own the
heuristics or the decision threshold's use (``_injection``).
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

_WORD = re.compile(r"[a-z0-9']{1,30}|[^\sa-z0-9']")
_SPLIT = re.compile(r"\n{1,10}|(?<=[.!?])\s{1,10}")
WINDOW_MIN = 60
WINDOW_MAX = 400
MAX_NGRAM = 2
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
_OPENERS = frozenset({"please", "kindly", "now", "also", "then", "and", "additionally"})
_OUTPUT_NOUNS = frozenset(
    {"answer", "answers", "response", "responses", "reply", "replies", "output"}
)


def features(text: str) -> set[str]:
    """Binary features: lower-cased word unigrams and bigrams (tokens include punctuation), and
    the first two words and last token of the window (instructions open with a verb or a
    question word and end with "." or "?", which generalises across attack topics)."""
    toks = _WORD.findall(text.lower())
    feats = set(toks)
    feats.update(f"{a} {b}" for a, b in itertools.pairwise(toks))
    if toks:
        feats.add(f"^{toks[0]}")
        feats.add(f"${toks[-1]}")
        if len(toks) > 1:
            feats.add(f"^{toks[0]} {toks[1]}")
        first = toks[1] if toks[0] in _OPENERS and len(toks) > 1 else toks[0]
        if first in TASK_VERBS:
            feats.add("^VERB")
            feats.add(f"^VERB ${toks[-1]}")
    for a, b in itertools.pairwise(toks):
        if a == "your" and b in _OUTPUT_NOUNS:
            feats.add("#your_output")
        elif b in TASK_VERBS and a in {".", "?", "!", ":", "please", "kindly"}:
            feats.add("#VERB_after_stop")
    return feats


def windows(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into sentence/line windows of roughly WINDOW_MIN..WINDOW_MAX chars."""
    cuts = [0]
    for m in _SPLIT.finditer(text):
        cuts.append(m.end())
    cuts.append(len(text))
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
    return [(s, e) for s, e in out if text[s:e].strip()]


@dataclass(frozen=True)
class InjectionModel:
    weights: dict[str, float]
    bias: float
    threshold: float
    meta: dict[str, object]

    def probability(self, text: str) -> float:
        """P(injection) for one window, identical to the sklearn pipeline it was trained with."""
        hits = [self.weights[f] for f in features(text) if f in self.weights]
        z = self.bias + (sum(hits) / math.sqrt(len(hits)) if hits else 0.0)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def scan(self, text: str) -> tuple[float, tuple[int, int]]:
        """The highest window probability in ``text`` and that window's span."""
        best, span = 0.0, (0, 0)
        for s, e in windows(text):
            p = self.probability(text[s:e])
            if p > best:
                best, span = p, (s, e)
        return best, span


@lru_cache(maxsize=1)
def load_model() -> InjectionModel:
    ref = resources.files("bastion.governance.guards").joinpath("data/injection_model.json.gz")
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    return InjectionModel(
        weights={k: float(v) for k, v in data["weights"].items()},
        bias=float(data["bias"]),
        threshold=float(data["threshold"]),
        meta=dict(data.get("meta", {})),
    )
