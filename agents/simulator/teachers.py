"""Where an answer's content comes from when nothing is scripted or forced.

The dataset teacher knows the label of every text in a JSONL file (optionally flipped, to act a noisy
teacher); the zero-shot teacher picks the label nearest in embedding space when ``duke.encoder`` is
importable; a stable hash of the text picks a label otherwise; free-form requests get a short text that
says it comes from the simulator.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.simulator.protocol import SIMULATOR_NAME

# The simulator's one logger name, as before it became a package.
logger = logging.getLogger(__package__)


def normalise_text(text: str) -> str:
    """Whitespace-insensitive key for matching task texts."""
    return " ".join(text.split())


def load_dataset(path: str | Path) -> dict[str, str]:
    """Read a JSONL file of ``{"text", "label"}`` rows into a normalised-text → label map."""
    answers: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row["text"], row["label"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: expected a JSON object with 'text' and 'label'") from exc
            if not isinstance(text, str) or not isinstance(label, str):
                raise ValueError(f"{path}:{line_no}: 'text' and 'label' must be strings")
            answers[normalise_text(text)] = label
    return answers


def dataset_label(
    dataset: dict[str, str], key: str, enum: list[str], *, noise: float, seed: int
) -> str | None:
    """The dataset's label for a known text (flipped with probability ``noise``), or None."""
    known = dataset.get(key)
    if known is None or known not in enum:
        return None
    if noise > 0 and len(enum) > 1 and _stable_unit(seed, "noise", key) < noise:
        others = [label for label in enum if label != known]
        return others[_stable_index(len(others), seed, "noise-pick", key)]
    return known


def hashed_label(key: str, enum: list[str], *, seed: int) -> str:
    """A label picked by a stable hash of the text: the same text gets the same label in every run."""
    return enum[_stable_index(len(enum), seed, "pick", key)]


def free_form_answer(text: str) -> str:
    words = text.split()
    gist = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
    return f"[{SIMULATOR_NAME}] Simulated answer, not from a real model. Task: {gist}"


class ZeroShotTeacher:
    """The label whose sentence embeds closest to the text, with the sentence encoder of ``duke.encoder``.

    The encoder is optional and slow to load; it is resolved once, on the first unknown labeling text,
    and a failing encoder is given up for good (the caller falls back to the hashed label).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encoder: Callable[[Sequence[str]], Any] | None = None
        self._encoder_state = "unresolved"  # → "ready" | "unavailable"
        self._label_vectors: dict[str, Any] = {}

    def label(self, text: str, enum: list[str]) -> str | None:
        with self._lock:
            encode = self._resolve_encoder()
            if encode is None:
                return None
            try:
                missing = [label for label in enum if label not in self._label_vectors]
                if missing:
                    vectors = encode([_label_sentence(label) for label in missing])
                    self._label_vectors.update(zip(missing, vectors, strict=True))
                text_vector = encode([text])[0]
                scores = [float(self._label_vectors[label] @ text_vector) for label in enum]
            except Exception:
                logger.warning("Zero-shot encoder failed; falling back to hashed labels", exc_info=True)
                self._encoder, self._encoder_state = None, "unavailable"
                return None
        return enum[max(range(len(enum)), key=scores.__getitem__)]

    def warm_up(self) -> None:
        """Load the encoder now rather than on the first unknown text (loading takes seconds)."""
        self.label("warm up", ["warm up"])

    def _resolve_encoder(self) -> Callable[[Sequence[str]], Any] | None:
        if self._encoder_state == "unresolved":
            self._encoder_state = "unavailable"
            try:
                # Imported here, not at the top: the encoder is optional; the simulator is stdlib otherwise.
                from duke.encoder import encode_texts, encoder_available

                available = encoder_available() if callable(encoder_available) else bool(encoder_available)
            except Exception:
                logger.info("duke.encoder not importable; the simulator labels unknown texts by hash")
                available = False
            if available:
                self._encoder, self._encoder_state = encode_texts, "ready"
        return self._encoder


def _label_sentence(label: str) -> str:
    # A sentence embeds closer to on-topic texts than a bare word ("sports" alone loses to "cooking" for
    # "the striker scored in the cup final"); "billing_issue" reads better as words.
    words = label.replace("_", " ").replace("-", " ")
    return f"This text is about {words}."


def _stable_unit(*parts: object) -> float:
    """A uniform number in [0, 1) derived from ``parts`` — stable across processes, unlike hash()."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _stable_index(n: int, *parts: object) -> int:
    return min(int(_stable_unit(*parts) * n), n - 1)
