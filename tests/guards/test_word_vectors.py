"""The static word vectors: shipped table, BERT-style tokenisation, and topic similarity."""

from __future__ import annotations

import threading
from importlib import resources

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.governance.guards import _word_vectors as wv

# (text, related topic, unrelated topic): the related one must score higher.
RELATED = [
    ("medication", "medical advice", "football scores"),
    ("artificial intelligence", "AI", "gardening tips"),
    ("artificial intelligence", "neural networks", "tax returns"),
    ("machines mimicking human intelligence", "don't discuss AI", "don't discuss cooking"),
    ("global temperature trends", "climate change", "stock prices"),
    ("recipes", "how to cook", "car insurance"),
    ("who should I vote for", "politics and elections", "baking bread"),
    ("my password", "secret key", "weather forecast"),
    ("what pills should I take for a headache", "do not give medical advice", "politics"),
]


@pytest.mark.parametrize(("text", "related", "unrelated"), RELATED)
def test_related_topics_score_higher_than_unrelated(
    text: str, related: str, unrelated: str
) -> None:
    near, far = wv.similarity(text, related), wv.similarity(text, unrelated)
    # A clear margin, not a tie broken by quantisation noise.
    assert near > far + 0.05, (near, far)


def test_similarity_of_a_text_with_itself_is_one() -> None:
    assert wv.similarity("climate change", "climate change") == pytest.approx(1.0, abs=1e-5)


def test_vector_is_unit_length_float32_of_the_table_width() -> None:
    v = wv.vector("The quick brown fox.")
    assert v is not None
    assert v.dtype == np.float32
    assert v.shape == (wv.load().dims,)
    assert float(np.linalg.norm(v)) == pytest.approx(1.0, abs=1e-5)


def test_vectors_are_deterministic() -> None:
    a = wv.vector("Tell me about global warming.")
    b = wv.vector("Tell me about global warming.")
    assert a is not None and b is not None
    assert np.array_equal(a, b)


@pytest.mark.parametrize("text", ["", "   \n\t", "!!!", "東京", "\x00\x01", "😀😀"])
def test_text_without_a_known_word_has_no_vector(text: str) -> None:
    assert wv.vector(text) is None
    assert wv.similarity(text, "climate change") == 0.0
    assert wv.similarity("climate change", text) == 0.0


def test_a_word_over_the_wordpiece_limit_is_unknown_not_slow() -> None:
    assert wv.vector("a" * (wv.MAX_WORD_CHARS + 1)) is None
    assert wv.vector("a" * wv.MAX_WORD_CHARS) is not None


def test_huge_input_is_capped() -> None:
    huge = "climate change " * 70_000  # over 1 MB
    assert len(huge) > 1_000_000
    ids = wv.load().token_ids(huge)
    assert 0 < len(ids) <= wv.MAX_CHARS
    assert wv.similarity(huge, "global warming") > wv.similarity(huge, "football")
    # Only the first MAX_CHARS characters count: what follows them changes nothing.
    tail = huge[: wv.MAX_CHARS] + "football " * 1000
    assert np.array_equal(wv.vector(tail), wv.vector(huge))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World!", ["hello", ",", "world", "!"]),
        ("Café naïve", ["cafe", "naive"]),
        ("don't", ["don", "'", "t"]),
        ("x^2 $5", ["x", "^", "2", "$", "5"]),
        ("東京 tower", ["東", "京", "tower"]),
        ("tab\there\x00", ["tab", "here"]),
        ("a\x00b c", ["ab", "c"]),
        ("\u00e9\x00b \u201cq\u201d", ["eb", "\u201c", "q", "\u201d"]),
    ],
)
def test_basic_tokens_follow_bert_uncased(text: str, tokens: list[str]) -> None:
    assert wv.basic_tokens(text) == tokens


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_the_ascii_fast_path_agrees_with_the_general_one(text: str) -> None:
    assert wv.basic_tokens(text) == wv._clean(text).split()


def test_wordpiece_splits_an_unlisted_word_into_known_pieces() -> None:
    table = wv.load()
    inverse = {i: t for t, i in table.index.items()}
    pieces = [inverse[i] for i in table.token_ids("unaffordableness")]
    assert len(pieces) > 1
    assert "".join(p.removeprefix("##") for p in pieces) == "unaffordableness"
    assert all(p.startswith("##") for p in pieces[1:])


def test_table_loads_from_the_package_within_the_size_budget() -> None:
    ref = resources.files("bastion.governance.guards").joinpath("data/word_vectors.npz")
    blob = ref.read_bytes()
    assert len(blob) <= 4_000_000
    table = wv.from_bytes(blob)
    assert len(table.index) > 25_000
    assert table.dims == 128
    assert table.matrix.dtype == np.float32
    assert "medication" in table.index and "##ing" in table.index


def test_load_is_shared_across_threads() -> None:
    seen: list[wv.WordVectors] = []
    threads = [threading.Thread(target=lambda: seen.append(wv.load())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8
    assert all(s is seen[0] for s in seen)


def test_a_table_whose_parts_disagree_is_rejected() -> None:
    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        tokens=np.frombuffer(b"a\nb", dtype=np.uint8),
        vectors=np.zeros((3, 4), dtype=np.int8),
        scales=np.ones(3, dtype=np.float32),
    )
    with pytest.raises(ValueError, match="2 tokens but 3 vectors"):
        wv.from_bytes(buf.getvalue())
