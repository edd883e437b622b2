"""Names and places without a model: gazetteers, word shape, context words, an address grammar.

Owns PERSON, LOCATION and STREET_ADDRESS for the fast tier. The gazetteer
(``data/gazetteer.json.gz``, built by ``_build_gazetteer``) gives first and last names of ~100
countries and place names; a name that is also a common English word ("Will", "Brown") is *weak*
and counts only beside another name or after a context word. Places are matched with an
Aho-Corasick automaton (linear in the text); names by looking capitalised tokens up in sets.
Does not own the structured entities.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from bastion.governance.guards._text import same_length_lower
from bastion.governance.guards._types import GuardFinding

_UP = "A-ZÀ-ÖØ-ÞĀ-ĶĹ-ŇŊ-žΑ-ΩΆ-ΏА-ЯЁ"
_TOKEN_RE = re.compile(r"[^\W\d_][\w'\u2019\-]{0,40}\.?")
_SENT_END = set('.!?:;\n"“”>|*-•')

TITLES = {"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "madam", "mx", "mister", "lady", "lord"}
PERSON_BEFORE = re.compile(
    r"(?i)(?:\b(?:name is|named|i am|i'm|im|call me|calls me|hi|hello|hey|dear|thanks|thank you|"
    r"by|with|meet|met|contact|ask|tell|cc|attn|signed|sincerely|regards|agent|customer|"
    r"patient|client|employee|mr|mrs|ms|dr|prof|miss|sir|madam|starring|directed by|and|"
    r"says|said|told|son|daughter|wife|husband|friend|brother|sister|mother|father|uncle|aunt)"
    r"\.?[,:]?\s{1,3})$"
)
PERSON_AFTER = re.compile(
    r"(?i)^(?:'s\b|\s{1,2}(?:said|says|is|was|has|had|will|who|told|wrote|asked|replied|"
    r"called|and|arrived|works|lives|went|gave|had)\b)"
)
PLACE_BEFORE = re.compile(
    r"(?i)\b(?:in|at|from|to|near|of|visit|visiting|live|lives|living|based|moved|city|town|"
    r"country|located|born|travel|trip|flight|fly|address)\s{1,3}(?:the\s)?$"
)

_STREET_WORDS = (
    r"Street|St|Road|Rd|Avenue|Ave|Av|Drive|Dr|Lane|Ln|Way|Boulevard|Blvd|Court|Ct|Place|Pl|"
    r"Square|Sq|Terrace|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Crescent|Close|Grove|Gardens|Park|"
    r"Parks|Row|Walk|Hill|Heights|Mews|Alley|Trail|Plaza|Path|Pike|Loop|Route|Gateway|Pass|Union|"
    r"Fort|Green|View|Ridge|Port|Station|Vale|Wharf|Ways|Streets|Squares|Roads|Lanes|Points|Point|"
    r"Junction|Crossing|Centre|Center|Estate|Meadows|Fields|Shoals|Spurs|Falls|Bridge|Creek|"
    r"Dale|Knolls|Lodge|Manor|Mill|Mills|Oval|Rapids|Springs|Summit|Villages|Vista|Harbor|Forks|"
    r"str|u|út|utca|tér|körút|sor|köz|rakpart|ulica|ul|cesta|iela|gatve|tee|maantee|puiestee"
)
_STREET_SUFFIX = (
    r"katu|kuja|tie|polku|gatan|gata|vägen|väg|vej|gade|straße|strasse|str|stræti|laan|weg|"
    r"gasse|plein|kade|gracht|dreef|hove|allee|platz|veien|vegen|veg|gate|gaten|stig|torg|"
    r"stigen|backe|brink|lei|singel|steeg|bulevardi|väylä|rinne"
)
_STREET_PREFIX = (
    r"Rue|Via|Rua|Calle|Avenida|Avenue|Piazza|Viale|Corso|Largo|ul\.|Ul\.|ulica|Boulevard|"
    r"Chemin|Quai|Strada|Carrer|Praça|Rambla|Travessa|Paseo|Camino|Carretera|Plaza|Allée|Impasse"
)
_UNIT = r"(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|PSC|Box|P\.?\s?O\.?\s?Box|Postbox)"
_CAPW = rf"[{_UP}\d][\w'\u2019.\-]{{0,30}}"

ADDRESS_CORES = [
    # 1668 Glyn St · 14 Crown Street Kishiev Squares
    re.compile(rf"(?<![\w\-])\d{{1,6}}[A-Za-z]?,? (?:{_CAPW} ){{0,4}}(?:{_STREET_WORDS})\b\.?"),
    # (5049) Harjukuja 54 · Magasinsgatan 7 · Søndergade 52
    re.compile(
        rf"(?<![\w\-])(?:\d{{1,6}} )?[^\W\d_]{{0,30}}(?:{_STREET_SUFFIX})\.? \d{{1,5}}[A-Za-z]?\b",
        re.IGNORECASE,
    ),
    # Rue de Piétrain 371 · ul. Więckowskiego Stefana 28 · 137 Avenue Teboulbi
    re.compile(rf"(?<![\w\-])(?:{_STREET_PREFIX})(?: [\w'\u2019\-.]{{1,30}}){{1,4}} \d{{1,5}}\b"),
    re.compile(
        rf"(?<![\w\-])\d{{1,6}} (?:{_STREET_PREFIX})(?: [{_UP}][\w'\u2019\-]{{0,30}}){{1,4}}"
    ),
    # Király u. 15. · Erzsébet tér 19. · Diakou Street 12
    re.compile(
        rf"(?<![\w\-])[{_UP}][\w'\u2019\-]{{1,30}} (?:[{_UP}][\w'\u2019\-]{{1,30}} )?"
        rf"(?:{_STREET_WORDS})\.? \d{{1,5}}\b\.?"
    ),
    # Apt. 864 · Suite 727 · PSC 0413, Box 8144
    re.compile(rf"(?<![\w\-]){_UNIT} ?#?\d{{1,6}}\b"),
    # 28030 Edeby 55 · 92597 Jahu 80: house or postal number, street name, number
    re.compile(
        rf"(?<![\w\-.,])\d{{3,6}} [{_UP}][\w'\u2019\-]{{2,30}}"
        rf"(?: [{_UP}][\w'\u2019\-]{{1,30}}){{0,2}} \d{{1,5}}[A-Za-z]?(?![\w.,:/\-]|[.,]\d)"
    ),
]
# After "lives at", "address:", "ship to" a capitalised name followed by a number is a street.
_ADDRESS_CONTEXT = re.compile(
    rf"(?i:\b(?:address(?: is)?|lives? at|living at|located at|ship(?:ped)? to|deliver(?:ed)? to|"
    rf"send (?:it|this|them) to|moved to|reside at))[:,]? "
    rf"((?:\d{{1,6}} )?[{_UP}][\w'\u2019\-]{{1,30}}"
    rf"(?: [{_UP}][\w'\u2019\-]{{1,30}}){{0,3}} \d{{1,5}}[A-Za-z]?)\b"
)
# "flew to X", "grew up in X": a capitalised word after a movement or residence verb is a place
# even when the gazetteer does not know it.
_PLACE_CONTEXT = re.compile(
    rf"(?i:\b(?:flew|fly|flying|moved|moving|travel(?:l)?ed|travel(?:l)?ing|went|returned|"
    rf"relocated|arrived|grew up|born|lives|live|living|located|based|stationed|raised|"
    rf"originally|vacation(?:ed)?|trip) (?:here |back |up )?(?:to|in|at|from|near))"
    rf" ((?:the )?[{_UP}][\w'\u2019\-]{{1,30}}(?: [{_UP}][\w'\u2019\-]{{1,30}}){{0,2}})"
)
# Tail of an address: ", City", "\nCountry 12345", "Apt. 3", "CO" - bounded, one piece at a time.
_ADDRESS_TAIL = re.compile(
    rf"[ \t]{{0,3}}(?:,[ \t]{{0,3}}|\n[ \t>]{{0,3}}(?:,[ \t]{{0,3}})?)?(?:{_UNIT} ?#?\d{{1,6}}"
    rf"|\d{{3,6}}(?![\w\-])|[{_UP}][\w'\u2019\-]{{0,30}}(?: \([{_UP}][\w]{{0,20}}\))?)"
)
_ADDRESS_TAIL_STOP = {"the", "and", "is", "was", "please", "this", "that", "thank"}


@dataclass(frozen=True)
class Gazetteer:
    first_strong: frozenset[str]
    first_weak: frozenset[str]
    last_strong: frozenset[str]
    last_weak: frozenset[str]
    common: frozenset[str]
    places: object  # ahocorasick.Automaton (untyped)


@lru_cache(maxsize=1)
def load_gazetteer() -> Gazetteer:
    """Read the shipped gazetteer once per process (well under a second); it is immutable."""
    import ahocorasick

    ref = resources.files("bastion.governance.guards").joinpath("data/gazetteer.json.gz")
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    automaton = ahocorasick.Automaton()
    for place in data["places"]:
        automaton.add_word(place, (len(place), False))
    for place in data["places_weak"]:
        automaton.add_word(place, (len(place), True))
    automaton.make_automaton()
    return Gazetteer(
        first_strong=frozenset(data["first_strong"]),
        first_weak=frozenset(data["first_weak"]),
        last_strong=frozenset(data["last_strong"]),
        last_weak=frozenset(data["last_weak"]),
        common=frozenset(data["common_words"]) | TITLES,
        places=automaton,
    )


def _finding(start: int, end: int, kind: str, score: float, detector: str) -> GuardFinding:
    return GuardFinding(
        start=start,
        end=end,
        type=kind,
        score=min(1.0, score),
        detector=detector,
        guard="pii",
        evidence=f"{kind} by {detector}",
    )


def _sentence_initial(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t\"'“(":
        i -= 1
    return i < 0 or text[i] in _SENT_END


def find_addresses(text: str) -> list[GuardFinding]:
    spans: list[tuple[int, int]] = []
    for rx in ADDRESS_CORES:
        for m in rx.finditer(text):
            start, end = m.start(), m.end()
            # Grow over the tail pieces (city, region, postcode, country), at most 8 of them.
            for _ in range(8):
                t = _ADDRESS_TAIL.match(text, end)
                if t is None or t.end() == end:
                    break
                word = t.group().strip(" \t\n,>").lower()
                if word in _ADDRESS_TAIL_STOP:
                    break
                end = t.end()
            spans.append((start, end))
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1] + 2:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [_finding(s, e, "STREET_ADDRESS", 0.8, "address_grammar") for s, e in merged]


def find_context_places(text: str) -> list[GuardFinding]:
    out = []
    for m in _PLACE_CONTEXT.finditer(text):
        start = m.start(1) + (4 if m.group(1).startswith("the ") else 0)
        out.append(_finding(start, m.end(1), "LOCATION", 0.55, "place_context"))
    for m in _ADDRESS_CONTEXT.finditer(text):
        out.append(_finding(m.start(1), m.end(1), "STREET_ADDRESS", 0.75, "address_context"))
    return out


def find_places(text: str, gaz: Gazetteer) -> list[GuardFinding]:
    out = []
    low = same_length_lower(text)
    for end_idx, (length, weak) in gaz.places.iter(low):  # type: ignore[attr-defined]
        start, end = end_idx - length + 1, end_idx + 1
        if (start > 0 and (low[start - 1].isalnum() or low[start - 1] in "-'")) or (
            end < len(low) and (low[end].isalnum() or low[end] in "-'")
        ):
            continue
        if not text[start].isupper():
            continue
        context = PLACE_BEFORE.search(text, max(0, start - 20), start) is not None
        if weak and not context and _sentence_initial(text, start):
            continue  # "Reading is fun", "Mobile phones": a place that is also a word
        score = 0.55 if weak else 0.6
        if context:
            score += 0.25
        if text[end : end + 2] == ", " and end + 2 < len(text) and text[end + 2].isupper():
            score += 0.1
        out.append(_finding(start, end, "LOCATION", score, "place_gazetteer"))
    return out


def find_persons(text: str, gaz: Gazetteer) -> list[GuardFinding]:
    """Runs of capitalised tokens scored by name lists, shape and context."""
    out: list[GuardFinding] = []
    tokens = [m for m in _TOKEN_RE.finditer(text) if m.group()[0].isupper()]
    i = 0
    while i < len(tokens):
        # Collect a run: tokens separated by one space (or ". " after an initial).
        run = [tokens[i]]
        j = i + 1
        while j < len(tokens) and len(run) < 5:
            if text[run[-1].end() : tokens[j].start()] != " ":
                break
            last = run[-1].group()
            if last.endswith(".") and len(last) > 2 and _kind(last, gaz) != "T":
                break  # a sentence ended ("Hertzog. Call"); initials and "Mr." do not end one
            run.append(tokens[j])
            j += 1
        i = j
        # A title inside a run starts a new name: "Dear Mr. Takáts" -> "Dear" | "Mr. Takáts".
        start = 0
        for k in range(1, len(run)):
            if _kind(run[k].group(), gaz) == "T":
                _score_run(text, run[start:k], gaz, out)
                start = k
        _score_run(text, run[start:], gaz, out)
    return out


def _kind(word: str, gaz: Gazetteer) -> str:
    w = word.rstrip(".").replace("\u2019", "'").lower()
    if len(w) == 1:
        return "I"  # an initial
    if len(w) <= 3 and word.isupper():
        return "C"  # an acronym (IP, CEO, USA), not a name
    if w in TITLES:
        return "T"
    if w in gaz.first_strong:
        return "F"
    if w in gaz.last_strong:
        return "L"
    if w in gaz.first_weak or w in gaz.last_weak:
        return "w"
    if w in gaz.common:
        return "C"
    return "U"


def _score_run(
    text: str, run: list[re.Match[str]], gaz: Gazetteer, out: list[GuardFinding]
) -> None:
    kinds = [_kind(m.group(), gaz) for m in run]
    # Drop leading titles (they are context) and trailing or leading common words.
    lo, hi = 0, len(run)
    titled = False
    while lo < hi and kinds[lo] in "TC":
        titled = titled or kinds[lo] == "T"
        lo += 1
    while hi > lo and kinds[hi - 1] in "CT":
        hi -= 1
    if lo >= hi:
        return
    core = kinds[lo:hi]
    start, end = run[lo].start(), run[hi - 1].end()
    if text[end - 1] == "." and core[-1] != "I":
        end -= 1
    before = text[max(0, start - 24) : start]
    context = titled or PERSON_BEFORE.search(before) is not None
    context = context or PERSON_AFTER.match(text, end, min(len(text), end + 12)) is not None
    strong = sum(k in "FL" for k in core)
    namey = sum(k in "FLwI" for k in core)
    if len(core) >= 2:
        if strong >= 2 or (strong >= 1 and namey == len(core)):
            score = 0.85
        elif strong == 1 and core[0] == "F":
            score = 0.65 + (0.2 if context else 0.0)
        elif namey >= 1 and context:
            score = 0.6
        else:
            return
    else:
        k = core[0]
        if k == "F":
            score = 0.55 if _sentence_initial(text, start) else 0.6
        elif k == "L":
            score = 0.5
        elif k == "w":
            score = 0.3
        elif k == "U":
            score = 0.25
        else:
            return
        if context:
            score += 0.3
        if text[start:end].isupper() and len(text[start:end]) > 3:
            score -= 0.2  # an all-caps word is more often a heading or a place
    out.append(_finding(start, end, "PERSON", score, "name_gazetteer"))
