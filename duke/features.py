"""Hashed n-gram features for Duke's fastText-style view. Pure Python/numpy: no Django import.

Every id must be identical in every process and on every machine, because a trained artifact is
loaded by other processes: hashes come from blake2b (never the salted built-in `hash()`) and from
fixed-constant integer mixing done in numpy uint64 arithmetic (wraps modulo 2**64 by definition).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

DEFAULT_BUCKETS = 1 << 18
CHAR_NGRAM_SIZES = (3, 4, 5)
MAX_TOKENS = 400

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_DIGITS_RE = re.compile(r"\d+")
_SPACE_RE = re.compile(r"\s+")

# Odd 64-bit constants (golden ratio, splitmix64 finaliser) so mixing is a bijection on uint64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_BIGRAM_SALT = np.uint64(0x2545F4914F6CDD1D)


def normalize_text(text: str) -> str:
    """NFKC, case-folded, digit runs collapsed to one token, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    # Exact numbers are rarely what decides a label and would only spread counts over buckets.
    text = _DIGITS_RE.sub("0", text)
    return _SPACE_RE.sub(" ", text).strip()


def tokenize(text: str) -> list[str]:
    """Words plus single punctuation marks ("!" and "?" carry sentiment); expects normalised text."""
    return _TOKEN_RE.findall(text)


def stable_hash(token: str) -> int:
    """64-bit hash of a string, identical across processes, platforms and Python versions."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def _mix(x: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser: spreads bigram combinations over all bits before the modulo.
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


@lru_cache(maxsize=1 << 18)
def _word_hash(word: str) -> int:
    return stable_hash("w\x00" + word)


@lru_cache(maxsize=1 << 17)
def _char_hashes(word: str, sizes: tuple[int, ...]) -> tuple[int, ...]:
    # Only word-like tokens get sub-word n-grams; the boundary marks let "<un" differ from "un".
    if len(word) < 2 or not word[0].isalnum():
        return ()
    marked = f"<{word}>"
    out = []
    for n in sizes:
        for i in range(len(marked) - n + 1):
            out.append(stable_hash("c\x00" + marked[i : i + n]))
    return tuple(out)


def extract_ids(
    text: str,
    n_buckets: int = DEFAULT_BUCKETS,
    extra_tokens: Sequence[str] = (),
    *,
    char_sizes: tuple[int, ...] = CHAR_NGRAM_SIZES,
    max_tokens: int = MAX_TOKENS,
) -> np.ndarray:
    """Bucket ids (int64, with repeats) for word unigrams, word bigrams and character n-grams.

    `extra_tokens` are added as unigram-like features (e.g. the task type) so the model can condition
    on them; they live in their own hash namespace, so they never equal a real word's hash.
    Only the first `max_tokens` tokens count: beyond that a text adds cost, rarely information.
    """
    tokens = tokenize(normalize_text(text))[:max_tokens]
    words = np.fromiter((_word_hash(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    parts = [words]
    if len(words) > 1:
        parts.append(_mix(words[:-1] * _GOLDEN + (words[1:] ^ _BIGRAM_SALT)))
    if char_sizes:
        chars = [h for t in tokens for h in _char_hashes(t, char_sizes)]
        if chars:
            parts.append(np.asarray(chars, dtype=np.uint64))
    if extra_tokens:
        parts.append(np.asarray([stable_hash("x\x00" + t) for t in extra_tokens], dtype=np.uint64))
    ids = np.concatenate(parts) % np.uint64(n_buckets)
    return ids.astype(np.int64)


def bag_of_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids with weights count/total, so a weighted sum equals the mean over all n-grams.

    Deduplicating first roughly halves the rows the sparse update touches on long texts.
    """
    if ids.size == 0:
        return ids, np.zeros(0, dtype=np.float32)
    uniq, counts = np.unique(ids, return_counts=True)
    return uniq, (counts / ids.size).astype(np.float32)


def extract_batch(
    texts: Sequence[str],
    n_buckets: int = DEFAULT_BUCKETS,
    extra_tokens: Sequence[Sequence[str]] | None = None,
    *,
    char_sizes: tuple[int, ...] = CHAR_NGRAM_SIZES,
    max_tokens: int = MAX_TOKENS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat ids, offsets and per-id weights in the layout `nn.EmbeddingBag(mode="sum")` expects.

    A text with no features gets an empty bag (EmbeddingBag returns zeros for it).
    """
    all_ids, all_w = [], []
    offsets = np.zeros(len(texts), dtype=np.int64)
    pos = 0
    for i, text in enumerate(texts):
        extra = extra_tokens[i] if extra_tokens is not None else ()
        ids, weights = bag_of_ids(
            extract_ids(text, n_buckets, extra, char_sizes=char_sizes, max_tokens=max_tokens)
        )
        offsets[i] = pos
        pos += len(ids)
        all_ids.append(ids)
        all_w.append(weights)
    if not all_ids:
        return np.zeros(0, dtype=np.int64), offsets, np.zeros(0, dtype=np.float32)
    return np.concatenate(all_ids), offsets, np.concatenate(all_w)
