"""Static word vectors: a text's meaning as one small vector, for topic matching without a model.

Owns loading the shipped table (``data/word_vectors.npz``, built by
``bench/build_word_vectors.py`` from all-MiniLM-L6-v2, one int8 row per WordPiece token with the
SIF weight folded into its scale), the uncased BERT tokenisation it is keyed by (basic
tokenisation then greedy longest-match WordPiece, written here against the shipped vocabulary),
and the sentence vector (the normalised weighted mean of its tokens' rows) with its cosine
similarity. Does not own what counts as a forbidden topic or any threshold (``_instructions``).

The table loads once on first use; after that every function only reads it, so it is safe to
call from several threads.
"""

from __future__ import annotations

import io
import re
import threading
import unicodedata
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

#: Text past this many characters is ignored: the mean of a long text has long since settled,
#: and the cost of tokenising must stay bounded whatever a caller passes in.
MAX_CHARS = 20_000
#: BERT's own limit: a longer "word" is one unknown token rather than a slow WordPiece search.
MAX_WORD_CHARS = 100
_DATA = "data/word_vectors.npz"
_SPACE = re.compile(r"[^ ]+")


@dataclass(frozen=True, kw_only=True)
class WordVectors:
    """The loaded table: token -> row of ``matrix`` (weighted, dequantised, float32)."""

    index: dict[str, int]
    matrix: Vector
    max_token_chars: int

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1])

    def token_ids(self, text: str) -> list[int]:
        """Rows for the known WordPiece tokens of ``text``; unknown words are dropped."""
        ids: list[int] = []
        for word in basic_tokens(text[:MAX_CHARS]):
            ids.extend(self._wordpiece(word))
        return ids

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return []
        whole = self.index.get(word)
        if whole is not None:
            return [whole]
        pieces: list[int] = []
        start, n = 0, len(word)
        while start < n:
            end = min(n, start + self.max_token_chars)
            found = -1
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.index.get(piece, -1)
                if found >= 0:
                    break
                end -= 1
            if found < 0:
                # As in BERT, a word with any unmatched part is a single unknown token.
                return []
            pieces.append(found)
            start = end
        return pieces

    def vector(self, text: str) -> Vector | None:
        """Unit-length weighted mean of the token rows of ``text``; None if none is known."""
        ids = self.token_ids(text)
        if not ids:
            return None
        total: Vector = self.matrix[ids].sum(axis=0, dtype=np.float32)
        norm = float(np.sqrt(total.dot(total)))  # np.linalg.norm's own formula, without its checks
        if norm == 0.0:
            # Only tokens without a vector (punctuation, non-Latin script).
            return None
        unit: Vector = total / np.float32(norm)
        return unit


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT treats every non-alphanumeric ASCII symbol as punctuation ("$", "^", "`" included).
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean(text: str) -> str:
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", text.lower()):
        cat = unicodedata.category(ch)
        if cat == "Mn":
            continue  # accents, stripped as the uncased model was trained
        if ch in " \t\n\r" or cat == "Zs":
            out.append(" ")
        elif cat.startswith("C") or ch == "\ufffd":
            continue  # BERT drops control and format characters (so "a\x00b" is "ab")
        elif _is_punctuation(ch) or _is_cjk(ord(ch)):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


# In ASCII every printable symbol that is not a letter or digit is BERT punctuation, and the
# only whitespace is space, tab, CR and LF; the other control characters are dropped.
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def basic_tokens(text: str) -> list[str]:
    """BERT-uncased basic tokenisation: lower-case, strip accents, split on space and
    punctuation (each punctuation mark and CJK character is a token of its own)."""
    if text.isascii():
        # The common case, a regex instead of a loop in Python; same result as _clean.
        return _ASCII_TOKEN.findall(_ASCII_CONTROL.sub("", text.lower()))
    return _SPACE.findall(_clean(text))


_lock = threading.Lock()
_loaded: list[WordVectors] = []


def load() -> WordVectors:
    """The shipped table, read on first call and shared afterwards."""
    if _loaded:
        return _loaded[0]
    with _lock:
        if not _loaded:
            _loaded.append(_read())
        return _loaded[0]


def _read() -> WordVectors:
    ref = resources.files("bastion.governance.guards").joinpath(_DATA)
    return from_bytes(ref.read_bytes())


def from_bytes(blob: bytes) -> WordVectors:
    """Parse a table in the format ``bench/build_word_vectors.py`` writes."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        tokens = bytes(data["tokens"]).decode("utf-8").split("\n")
        quantised = data["vectors"]
        scales = data["scales"].astype(np.float32)
    matrix = np.ascontiguousarray(quantised.astype(np.float32) * scales[:, None])
    matrix.flags.writeable = False  # shared by every thread: nobody may change it
    if matrix.shape[0] != len(tokens):
        raise ValueError(f"word vectors: {len(tokens)} tokens but {matrix.shape[0]} vectors")
    return WordVectors(
        index={t: i for i, t in enumerate(tokens)},
        matrix=matrix,
        max_token_chars=max(len(t.removeprefix("##")) for t in tokens),
    )


def vector(text: str) -> Vector | None:
    """Unit-length meaning vector of ``text``, or None if it has no known word."""
    return load().vector(text)


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the two texts' vectors; 0.0 if either has no known word."""
    table = load()
    va, vb = table.vector(a), table.vector(b)
    if va is None or vb is None:
        return 0.0
    return float(np.dot(va, vb))


__all__ = [
    "MAX_CHARS",
    "Vector",
    "WordVectors",
    "basic_tokens",
    "from_bytes",
    "load",
    "similarity",
    "vector",
]
