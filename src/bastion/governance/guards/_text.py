"""Text plumbing shared by the guards: safe decoding, chunking with overlap, span merging.

Owns how arbitrary input (bytes of unknown encoding, huge strings) becomes bounded ``str`` chunks
and how findings from overlapping chunks are stitched back together. Does not own detection.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from bastion.governance.guards._types import GuardFinding


def decode_bytes(data: bytes) -> str:
    """Decode input of unknown encoding without ever raising.

    UTF-8 (with or without BOM) first; otherwise UTF-16 when a BOM says so; otherwise Latin-1 after
    replacing undecodable bytes, which keeps every byte as one character so offsets stay sane.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace")


def strip_controls(text: str) -> str:
    """Replace NUL and other C0 controls (except tab/newline/CR) by spaces, keeping offsets."""
    if text.isprintable():
        return text
    return text.translate(_CONTROL_TABLE)


#: English function words: common in any English sentence, rare as a run in other languages or
#: in disguised text. The language check and the cipher decoders measure English by them.
EN_FUNCTION_WORDS = frozenset(
    """
    a an the and or but if of to in on at by for with from as is are was were be been am do does
    did have has had i you he she it we they me my your his her its our their this that these
    those what which who whom when where why how can could will would should may might must not
    no so than then there here all any some each about into over after before up out
    """.split()  # noqa: SIM905
)

_CONTROL_TABLE = {c: " " for c in range(32) if chr(c) not in "\t\n\r"} | {0x7F: " "}


def same_length_lower(text: str) -> str:
    """``text.lower()`` with offsets preserved (a few characters lengthen when lowered)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def iter_chunks(text: str, size: int, overlap: int) -> Iterator[tuple[int, str]]:
    """Yield ``(offset, chunk)`` covering ``text`` with consecutive chunks overlapping.

    Every substring of length <= ``overlap`` lies wholly inside at least one chunk, so an entity
    shorter than the overlap that straddles a boundary is still found. Chunks end at whitespace
    where one is near, so words are rarely cut at all.
    """
    n = len(text)
    if n <= size:
        yield 0, text
        return
    if overlap >= size // 2:
        raise ValueError("chunk overlap must be less than half the chunk size")
    start = 0
    while start < n:
        end = min(n, start + size)
        if end < n:
            # Prefer to cut at whitespace in the last eighth of the chunk.
            cut = text.rfind(" ", end - size // 8, end)
            if cut > start + overlap:
                end = cut
        yield start, text[start:end]
        if end >= n:
            return
        start = end - overlap


def merge_findings(findings: Iterable[GuardFinding]) -> list[GuardFinding]:
    """Deduplicate findings from overlapping chunks; same-type overlapping spans are unioned."""
    ordered = sorted(findings, key=lambda f: (f.type, f.start, -f.end))
    merged: list[GuardFinding] = []
    for f in ordered:
        last = merged[-1] if merged else None
        if last is not None and last.type == f.type and f.start < last.end:
            if f.end > last.end or f.score > last.score:
                merged[-1] = GuardFinding(
                    start=last.start,
                    end=max(last.end, f.end),
                    type=last.type,
                    score=max(last.score, f.score),
                    detector=last.detector,
                    guard=last.guard,
                    evidence=last.evidence,
                )
            continue
        merged.append(f)
    merged.sort(key=lambda f: (f.start, f.end, f.type))
    return merged


class IntervalSet:
    """Disjoint half-open intervals kept sorted; overlap checks are O(log n)."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int]] = []

    def free(self, start: int, end: int) -> bool:
        items = self._items
        k = bisect.bisect_left(items, (start, start))
        if k < len(items) and items[k][0] < end:
            return False
        return not (k > 0 and items[k - 1][1] > start)

    def add(self, start: int, end: int) -> None:
        bisect.insort(self._items, (start, end))


def resolve_overlaps(findings: list[GuardFinding], priority: dict[str, int]) -> list[GuardFinding]:
    """Keep a set of non-overlapping findings: higher priority, then higher score, then longer."""
    ranked = sorted(
        findings,
        key=lambda f: (-priority.get(f.type, 0), -f.score, -(f.end - f.start), f.start),
    )
    taken = IntervalSet()
    kept: list[GuardFinding] = []
    for f in ranked:
        if f.end > f.start and taken.free(f.start, f.end):
            taken.add(f.start, f.end)
            kept.append(f)
    kept.sort(key=lambda f: (f.start, f.end))
    return kept


def preview(value: str, keep: int = 2) -> str:
    """A safe hint of a sensitive value for evidence strings: first chars and length only."""
    if len(value) <= keep * 2:
        return f"{'*' * len(value)} (len {len(value)})"
    return f"{value[:keep]}… (len {len(value)})"
