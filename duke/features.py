"""Hashed n-gram features for Duke's fastText-style view. Pure Python/numpy: no Django import.

Every id must be identical in every process and on every machine, because a trained artifact is
loaded by other processes: hashes come from blake2b (never the salted built-in `hash()`) and from
fixed-constant integer mixing done in numpy uint64 arithmetic (wraps modulo 2**64 by definition).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import unicodedata
from collections.abc import Sequence

import numpy as np

DEFAULT_BUCKETS = 1 << 18
CHAR_NGRAM_SIZES = (4,)
MAX_TOKENS = 400
# 0 leaves the length token out: how every artifact of format 1 was trained.
LENGTH_WEIGHT = 0.0

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_DIGITS_RE = re.compile(r"\d+")

# Odd 64-bit constants (golden ratio, splitmix64 finaliser) so mixing is a bijection on uint64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_BIGRAM_SALT = np.uint64(0x2545F4914F6CDD1D)


def normalize_text(text: str) -> str:
    """NFKC, case-folded, every digit run replaced by "0" (whitespace is left to the tokenizer)."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    # Exact numbers are rarely what decides a label and would only spread counts over buckets.
    return _DIGITS_RE.sub("0", text)


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


# Per-process memo tables (word -> hash, word -> char n-gram hashes). Plain dicts looked up through
# map() keep the per-token cost in C; they are cleared when they grow past _TABLE_LIMIT words.
_TABLE_LIMIT = 1 << 18
_EMPTY = np.zeros(0, dtype=np.uint64)


class _WordHashes(dict):
    def __missing__(self, word: str) -> int:
        if len(self) >= _TABLE_LIMIT:
            self.clear()
        value = self[word] = stable_hash("w\x00" + word)
        return value


class _CharHashes(dict):
    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.sizes = sizes

    def __missing__(self, word: str) -> np.ndarray:
        if len(self) >= _TABLE_LIMIT:
            self.clear()
        # Only word-like tokens get sub-word n-grams; the boundary marks let "<un" differ from "un".
        if len(word) < 2 or not word[0].isalnum():
            arr = _EMPTY
        else:
            marked = f"<{word}>"
            hashes = [
                stable_hash("c\x00" + marked[i : i + n])
                for n in self.sizes
                for i in range(len(marked) - n + 1)
            ]
            arr = np.asarray(hashes, dtype=np.uint64)
            arr.flags.writeable = False
        self[word] = arr
        return arr


_word_hashes = _WordHashes()
_char_tables: dict[tuple[int, ...], _CharHashes] = {}


def _char_table(sizes: tuple[int, ...]) -> _CharHashes:
    table = _char_tables.get(sizes)
    if table is None:
        table = _char_tables[sizes] = _CharHashes(sizes)
    return table


def _raw_hashes(
    text: str, extra_tokens: Sequence[str], char_sizes: tuple[int, ...], max_tokens: int
) -> tuple[list[np.ndarray], int]:
    """A text's n-gram and extra-token hashes (with repeats), and its token count before truncation."""
    all_tokens = tokenize(normalize_text(text))
    tokens = all_tokens[:max_tokens]
    words = np.fromiter(map(_word_hashes.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    parts = [words]
    if len(words) > 1:
        parts.append(_mix(words[:-1] * _GOLDEN + (words[1:] ^ _BIGRAM_SALT)))
    if char_sizes:
        parts.extend(map(_char_table(tuple(char_sizes)).__getitem__, tokens))
    if extra_tokens:
        parts.append(np.asarray([_extra_hash(t) for t in extra_tokens], dtype=np.uint64))
    return parts, len(all_tokens)


def _extra_hash(token: str) -> int:
    # Own namespace: an extra token never hashes like the word it spells.
    return stable_hash("x\x00" + token)


def length_token(n_tokens: int) -> str:
    """Coarse length class, log2 of the token count: tells one-line reviews from plot synopses."""
    return f"len:{int(math.log2(n_tokens + 1))}"


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
    parts, _ = _raw_hashes(text, extra_tokens, char_sizes, max_tokens)
    return (np.concatenate(parts) % np.uint64(n_buckets)).astype(np.int64)


# Per-process cache of each text's bag (distinct ids, their counts, id and token totals), for
# training: a worker that retrains every 100 new samples would otherwise re-extract thousands of
# unchanged texts each time (~0.5 s of a 5k-sample R8 retrain). Keyed by a 128-bit digest of the text,
# its extra tokens and the feature settings, so it never holds the texts themselves; cleared when it
# passes _BAG_CACHE_LIMIT stored ids (~32 MB, a bit over twice R8's 5.5k long texts).
_BAG_CACHE_LIMIT = 1 << 22
_Bag = tuple[np.ndarray, np.ndarray, int, int]


class _BagCache:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: dict[bytes, _Bag] = {}
        self.size = 0
        self.lock = threading.Lock()

    def get(self, key: bytes) -> _Bag | None:
        return self.entries.get(key)

    def put(self, key: bytes, bag: _Bag) -> None:
        with self.lock:
            if self.size + len(bag[0]) > self.limit:
                self.entries.clear()
                self.size = 0
            if key not in self.entries:
                self.entries[key] = bag
                self.size += len(bag[0])

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.size = 0


_bag_cache = _BagCache(_BAG_CACHE_LIMIT)


def _bag_keys(
    texts: Sequence[str],
    extra_tokens: Sequence[Sequence[str]] | None,
    n_buckets: int,
    char_sizes: tuple[int, ...],
    max_tokens: int,
) -> list[bytes]:
    base = hashlib.blake2b(f"{n_buckets}\x00{tuple(char_sizes)}\x00{max_tokens}\x00".encode(), digest_size=16)
    keys = []
    for i, text in enumerate(texts):
        h = base.copy()
        extra = extra_tokens[i] if extra_tokens is not None else ()
        # \x1f and \x00 as separators: neither survives into a token, so no two inputs collide.
        h.update("\x1f".join(extra).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        h.update(str(text).encode("utf-8", "surrogatepass"))
        keys.append(h.digest())
    return keys


def _bags(
    texts: Sequence[str],
    n_buckets: int,
    extra_tokens: Sequence[Sequence[str]] | None,
    char_sizes: tuple[int, ...],
    max_tokens: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (text, id) keys packed as text * n_buckets + id, their counts, each text's id total
    (repeats included) and its token count before truncation."""
    n = len(texts)
    parts: list[np.ndarray] = []
    lengths = np.zeros(n, dtype=np.int64)
    n_tokens = np.zeros(n, dtype=np.int64)
    for i, text in enumerate(texts):
        extra = extra_tokens[i] if extra_tokens is not None else ()
        text_parts, n_tokens[i] = _raw_hashes(text, extra, char_sizes, max_tokens)
        ids = np.concatenate(text_parts)
        lengths[i] = len(ids)
        parts.append(ids)
    if n == 0 or lengths.sum() == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, lengths, n_tokens
    flat = (np.concatenate(parts) % np.uint64(n_buckets)).astype(np.int64)
    # One global sort instead of one np.unique per text: (text, id) pairs packed into one int64 key.
    keys = np.repeat(np.arange(n, dtype=np.int64), lengths) * n_buckets + flat
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq, counts, lengths, n_tokens


def _cached_bags(
    texts: Sequence[str],
    n_buckets: int,
    extra_tokens: Sequence[Sequence[str]] | None,
    char_sizes: tuple[int, ...],
    max_tokens: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_bags`, extracting only the texts not in `_bag_cache` (and storing those)."""
    n = len(texts)
    keys = _bag_keys(texts, extra_tokens, n_buckets, char_sizes, max_tokens)
    bags: list[_Bag | None] = [_bag_cache.get(k) for k in keys]
    missing = [i for i, bag in enumerate(bags) if bag is None]
    if missing:
        extras = [extra_tokens[i] for i in missing] if extra_tokens is not None else None
        uniq, counts, lengths, n_tokens = _bags(
            [texts[i] for i in missing], n_buckets, extras, char_sizes, max_tokens
        )
        bounds = np.searchsorted(uniq // n_buckets, np.arange(len(missing) + 1), side="left")
        id_type = np.int32 if n_buckets <= np.iinfo(np.int32).max else np.int64
        for j, i in enumerate(missing):
            lo, hi = bounds[j], bounds[j + 1]
            bag = (
                (uniq[lo:hi] % n_buckets).astype(id_type),
                counts[lo:hi].astype(np.int32),
                int(lengths[j]),
                int(n_tokens[j]),
            )
            bags[i] = bag
            _bag_cache.put(keys[i], bag)
    done = [bag for bag in bags if bag is not None]
    sizes = np.fromiter((len(bag[0]) for bag in done), dtype=np.int64, count=n)
    lengths = np.fromiter((bag[2] for bag in done), dtype=np.int64, count=n)
    n_tokens = np.fromiter((bag[3] for bag in done), dtype=np.int64, count=n)
    if not sizes.sum():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, lengths, n_tokens
    ids = np.concatenate([bag[0] for bag in done]).astype(np.int64)
    # Ids are sorted within each text and texts come in order, so the packed keys are sorted too.
    uniq = np.repeat(np.arange(n, dtype=np.int64), sizes) * n_buckets + ids
    counts = np.concatenate([bag[1] for bag in done]).astype(np.int64)
    return uniq, counts, lengths, n_tokens


def clear_bag_cache() -> None:
    """Forget every cached bag (tests; or to hand the memory back)."""
    _bag_cache.clear()


def extract_batch(
    texts: Sequence[str],
    n_buckets: int = DEFAULT_BUCKETS,
    extra_tokens: Sequence[Sequence[str]] | None = None,
    *,
    char_sizes: tuple[int, ...] = CHAR_NGRAM_SIZES,
    max_tokens: int = MAX_TOKENS,
    length_weight: float = LENGTH_WEIGHT,
    cache: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ids per text, offsets, and weights count/total, for `nn.EmbeddingBag(mode="sum")`.

    The weighted sum equals the mean over all of a text's n-grams (fastText's bag), while
    deduplicating roughly halves the rows a training step touches on long texts. Ids are sorted
    within each text. A text with no features gets an empty bag (EmbeddingBag returns zeros for it).

    `length_weight` > 0 adds one `length_token` per text with that fixed weight on top of the mean:
    inside the mean a single token would fade to nothing on long texts, and length is exactly what
    tells them apart.

    `cache=True` reuses (and fills) the per-process cache of texts' bags, for training's texts that
    come back at every retraining; predictions leave it off, their texts are mostly seen once.
    The result is the same either way.
    """
    n = len(texts)
    bags = _cached_bags if cache else _bags
    uniq, counts, lengths, n_tokens = bags(texts, n_buckets, extra_tokens, tuple(char_sizes), max_tokens)
    if n == 0 or (lengths.sum() == 0 and not length_weight):
        return np.zeros(0, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(0, dtype=np.float32)
    text_ids = np.arange(n, dtype=np.int64)
    weights = counts / lengths[uniq // n_buckets]
    if length_weight:
        hashes = np.asarray([_extra_hash(length_token(int(k))) for k in n_tokens], dtype=np.uint64)
        len_keys = text_ids * n_buckets + (hashes % np.uint64(n_buckets)).astype(np.int64)
        # Inserted at their sorted places rather than re-sorting everything (a second np.unique cost
        # ~0.3 s on 5k long texts); a bucket shared with an n-gram still appears once per text.
        pos = np.searchsorted(uniq, len_keys)
        hit = np.zeros(n, dtype=bool)
        if len(uniq):
            hit = uniq[np.minimum(pos, len(uniq) - 1)] == len_keys
        np.add.at(weights, pos[hit], float(length_weight))
        uniq = np.insert(uniq, pos[~hit], len_keys[~hit])
        weights = np.insert(weights, pos[~hit], float(length_weight))
    owner = uniq // n_buckets
    offsets = np.searchsorted(owner, text_ids, side="left").astype(np.int64)
    return uniq % n_buckets, offsets, weights.astype(np.float32)
