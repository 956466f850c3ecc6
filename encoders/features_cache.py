"""Frozen-backbone features of items and queries, computed once and cached on disk.

With frozen backbones, SCL trains only the projection heads, so the expensive part (MiniLM over
every title and query, EfficientNet over every image) runs once per dataset. With k trainable text
layers, the text features are MiniLM's token states below them (float16), so only those k layers
run per step. :func:`item_features`
and :func:`query_features` compute a :class:`Features` table; :func:`cached` stores it as ``.npz``
keyed by a hash of the inputs and the backbone settings, so a re-run or ``--resume`` reuses it.

Text input: items use ``"<category>: <title>"`` (the category name is part of the text, and an
empty title still yields the category); queries use the query text.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from encoders.backbones import (
    IMAGE_BACKBONE,
    IMAGE_DIM,
    TEXT_BACKBONE,
    TEXT_DIM,
    image_backbone,
    load_images,
    text_backbone,
)

logger = logging.getLogger(__name__)

CHUNK = 512  # rows per progress step
MEMO_SIZE = 4  # feature tables kept in memory per process (train then evaluate reuse them)
_memo: dict[str, Features] = {}


@dataclass(frozen=True)
class Features:
    """Backbone features of n rows (items or queries).

    Attributes:
        text: ``(n, 384)`` pooled MiniLM features; or, for an encoder with trainable text layers,
            ``(n, L, 384)`` float16 token states below them (see ``text_mask``).
        image: ``(n, 1280)`` EfficientNet features, zeros where ``has_image`` is False; ``(n, 0)``
            when the image tower is not used.
        has_image: ``(n,)`` bool, True where an image was read.
        text_mask: ``(n, L)`` bool, the real tokens of ``text`` when it holds token states; else None.
    """

    text: np.ndarray
    image: np.ndarray
    has_image: np.ndarray
    text_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.text.shape[0])

    def take(self, rows: np.ndarray) -> Features:
        """The features of the given rows, in that order."""
        mask = self.text_mask[rows] if self.text_mask is not None else None
        return Features(self.text[rows], self.image[rows], self.has_image[rows], mask)


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def item_texts(items: pd.DataFrame) -> list[str]:
    """The text-tower input of each item: ``"<category>: <title>"`` (category alone if no title)."""
    out = []
    for title, category in zip(items["title"].tolist(), items["category"].tolist(), strict=True):
        title = "" if _is_missing(title) else str(title).strip()
        category = "" if _is_missing(category) else str(category).strip()
        out.append(f"{category}: {title}" if title else category)
    return out


def resolve_paths(rel_paths: Sequence[object], image_root: Path | None) -> list[Path | None]:
    """Image paths relative to ``image_root`` (or as given when it is None); None where missing."""
    out: list[Path | None] = []
    for rel in rel_paths:
        if _is_missing(rel) or str(rel) == "":
            out.append(None)
        else:
            out.append(image_root / str(rel) if image_root is not None else Path(str(rel)))
    return out


def compute_features(
    texts: Sequence[str],
    paths: Sequence[Path | None],
    names: Sequence[str],
    *,
    max_tokens: int,
    image_size: int | None,
    precision: str = "float32",
    text_layers: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "features",
) -> Features:
    """Run the backbones over rows of text and optional images.

    Args:
        texts: n text-tower inputs.
        paths: n image paths or None; ignored when ``image_size`` is None (no image tower).
        names: n row names for warnings about unreadable images.
        max_tokens: MiniLM truncation length.
        image_size: image input size, or None to skip the image tower entirely.
        precision: backbone precision, ``"float32"`` or ``"bfloat16"`` (:mod:`encoders.backbones`).
        text_layers: the encoder's trainable MiniLM layers k; with k > 0 the text features are the
            token states below them (``text_mask`` set) instead of pooled features.
        batch_size: backbone batch size.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        The :class:`Features` of the n rows.
    """
    n = len(texts)
    tb = text_backbone(max_tokens)
    frozen_layers = tb.model.config.num_hidden_layers - text_layers
    text_mask = np.zeros((n, max_tokens), dtype=bool) if text_layers else None
    text: np.ndarray = np.zeros((n, max_tokens, TEXT_DIM), dtype=np.float16) if text_layers else \
        np.zeros((n, TEXT_DIM), dtype=np.float32)
    image = np.zeros((n, IMAGE_DIM if image_size is not None else 0), dtype=np.float32)
    has_image = np.zeros(n, dtype=bool)
    ib = image_backbone(image_size) if image_size is not None else None
    with tqdm(total=n, desc=desc, unit="row", disable=not progress) as bar:
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            if text_mask is not None:
                states, mask = tb.hidden_states(texts[start:stop], frozen_layers, batch_size, precision)
                text[start:stop, :states.shape[1]], text_mask[start:stop, :mask.shape[1]] = states, mask
            else:
                text[start:stop] = tb.encode(texts[start:stop], batch_size, precision)
            if ib is not None and image_size is not None:
                imgs, ok = load_images(paths[start:stop], names[start:stop], image_size)
                if ok.any():
                    image[start:stop][ok] = ib.encode(imgs, batch_size, precision)
                has_image[start:stop] = ok
            bar.update(stop - start)
    if text_mask is not None:  # keep only the columns some text uses
        used = int(text_mask.sum(1).max()) if n else 0
        text, text_mask = np.ascontiguousarray(text[:, :used]), np.ascontiguousarray(text_mask[:, :used])
    return Features(text, image, has_image, text_mask)


def item_features(
    items: pd.DataFrame, image_root: Path | None, *, max_tokens: int, image_size: int | None,
    precision: str = "float32", text_layers: int = 0, batch_size: int = 64, progress: bool = False,
) -> Features:
    """Backbone features of an items frame (columns item_id, title, category, image_path)."""
    paths = resolve_paths(items["image_path"].tolist() if "image_path" in items else [None] * len(items), image_root)
    names = [f"item {i}" for i in items["item_id"].tolist()]
    return compute_features(item_texts(items), paths, names, max_tokens=max_tokens, image_size=image_size,
                            precision=precision, text_layers=text_layers, batch_size=batch_size,
                            progress=progress, desc="item features")


def query_features(
    queries: pd.DataFrame, image_root: Path | None, *, max_tokens: int, image_size: int | None,
    precision: str = "float32", text_layers: int = 0, batch_size: int = 64, progress: bool = False,
) -> Features:
    """Backbone features of a queries frame (columns query_text, query_image_path)."""
    texts = ["" if _is_missing(t) else str(t) for t in queries["query_text"].tolist()]
    col = queries["query_image_path"].tolist() if "query_image_path" in queries else [None] * len(queries)
    names = [f"query row {i}" for i in range(len(queries))]
    return compute_features(texts, resolve_paths(col, image_root), names, max_tokens=max_tokens,
                            image_size=image_size, precision=precision, text_layers=text_layers,
                            batch_size=batch_size, progress=progress, desc="query features")


def cache_key(kind: str, frame: pd.DataFrame, columns: Sequence[str], *, max_tokens: int,
              image_size: int | None, precision: str = "float32", text_layers: int = 0) -> str:
    """A hash of the rows' inputs and the backbone settings (what the features depend on)."""
    h = hashlib.sha256()
    settings: list[object] = [kind, TEXT_BACKBONE, IMAGE_BACKBONE, max_tokens, image_size]
    if precision != "float32":  # float32 keys stay as they were before precision existed
        settings.append(precision)
    if text_layers:
        settings.append(f"top{text_layers}")
    h.update(json.dumps(settings).encode())
    for col in columns:
        values = frame[col].tolist() if col in frame else []
        h.update(json.dumps([None if _is_missing(v) else str(v) for v in values]).encode())
    return h.hexdigest()[:24]


def cached(path: Path, key: str, compute: Callable[[], Features]) -> Features:
    """Load features from memory or ``path`` when they hold ``key``; else compute and store them.

    Args:
        path: the ``.npz`` file.
        key: the :func:`cache_key` of the inputs.
        compute: builds the features on a cache miss.
    """
    feats = _memo.get(key)
    if feats is not None:
        if not path.is_file():
            _write(path, key, feats)
        return feats
    feats = _from_disk(path, key)
    if feats is None:
        feats = compute()
        _write(path, key, feats)
    _memo[key] = feats
    while len(_memo) > MEMO_SIZE:
        _memo.pop(next(iter(_memo)))
    return feats


def _from_disk(path: Path, key: str) -> Features | None:
    if path.is_file():
        try:
            with np.load(path) as z:
                if str(z["key"]) == key:
                    logger.info("reusing cached features %s", path)
                    mask = z["text_mask"] if "text_mask" in z.files else None
                    return Features(z["text"], z["image"], z["has_image"], mask)
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
    return None


def _write(path: Path, key: str, feats: Features) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = {"key": np.array(key), "text": feats.text, "image": feats.image, "has_image": feats.has_image}
    if feats.text_mask is not None:
        arrays["text_mask"] = feats.text_mask
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
