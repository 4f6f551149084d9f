"""placeholder while writing"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".cache" / "duke-bench"


def load_jsonl(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        sys.exit(f"error: dataset file not found: {path}")
    texts, labels = [], []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(row["label"])
    return texts, labels


def cached_embeddings(path: Path, texts: list[str]) -> np.ndarray:
    from duke.encoder import encode_texts

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    gi = CACHE_DIR.parent / ".gitignore"
    if not gi.exists():
        gi.write_text("*\n")
    target = CACHE_DIR / f"{path.name}.{digest}.minilm.npy"
    if target.exists():
        arr = np.load(target)
        if arr.shape[0] == len(texts):
            return arr
    arr = encode_texts(texts)
    np.save(target, arr)
    return arr
