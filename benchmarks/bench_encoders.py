"""Encoder throughput (``mmads bench encoders``): encode_items, SCL training and the bare backbones.

Setup as in issue 4: batch 64, 2 torch threads, EfficientNet in channels_last. Items are synthetic
(word-list titles, textured PNGs written at the input size, so decoding is included but resizing
is not). Each rate is the median of several repeats after one warm-up pass. The encoders run at
the configured backbone precision (``model.scl.backbone_precision``, bf16 by default); the bare
backbones are measured at that precision and, as the baseline, in float32 in the same run.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from encoders import ItemEncoder, pretrained_encoder
from encoders.backbones import image_backbone, text_backbone
from encoders.features_cache import Features
from encoders.pairs import PairData
from encoders.train import fit_scl
from infra.config import load_config

BATCH = 64
WORDS = ["red", "blue", "leather", "cotton", "vintage", "modern", "sporty", "slim", "warm", "light",
         "dress", "sneaker", "lamp", "backpack", "mug", "watch", "classic", "soft", "large", "mini"]


def _items(rng: np.random.Generator, n: int, root: Path, size: int | None) -> pd.DataFrame:
    rows = []
    for i in range(n):
        path = None
        if size is not None:
            path = f"{size}/{i}.png"
            (root / str(size)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / path)
        title = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 9))))
        rows.append({"item_id": i, "title": title, "category": str(rng.choice(WORDS[10:16])), "image_path": path})
    return pd.DataFrame(rows)


def _rate(n: int, fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def _encode_call(enc: ItemEncoder, items: pd.DataFrame, root: Path) -> Callable[[], object]:
    return lambda: enc.encode_items(items, image_root=root, batch_size=BATCH)


def _train_rate(n_pairs: int, n_items: int, root: Path) -> float:
    rng = np.random.default_rng(0)
    cfg = load_config().with_overrides(model={"scl": {"epochs": 1}})

    def feats(n: int) -> Features:
        return Features(rng.normal(size=(n, 384)).astype(np.float32),
                        rng.normal(size=(n, 1280)).astype(np.float32), rng.random(n) < 0.9)

    clicked = np.sort(rng.integers(-1, n_items, (n_pairs, 3)))[:, ::-1].copy()  # -1 padding last
    pairs = PairData(feats(n_items), np.arange(n_items), rng.integers(0, 20, n_items), feats(n_pairs),
                     rng.integers(0, n_items, n_pairs), clicked)
    enc = fit_scl(pairs, cfg, root / "scl", variant="hard", use_images=True, progress=False)
    return n_pairs / enc.metadata["history"][0]["seconds"]


def run(quick: bool) -> dict[str, Any]:
    """Measure encoder throughput; ``quick`` uses fewer items and repeats.

    Returns:
        ``encode_items_per_s_text``, ``encode_items_per_s_text_image_64``,
        ``encode_items_per_s_text_image_128``, ``train_pairs_per_s``, ``backbone_images_per_s_64``,
        ``backbone_texts_per_s`` (at the configured precision), the same backbone rates in
        float32 (``..._float32``, when the precision is not float32) and at 128 px, and the setup
        (items, repeats, threads, backbone_precision).
    """
    torch.set_num_threads(2)
    n, repeats = (128, 2) if quick else (512, 3)
    rng = np.random.default_rng(0)
    cfg = load_config()
    out: dict[str, Any] = {"items": n, "repeats": repeats, "batch_size": BATCH, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench_encoders_") as tmp:
        root = Path(tmp)
        text_items = _items(rng, n, root, None)
        enc = pretrained_encoder(cfg, use_images=False)
        out["encode_items_per_s_text"] = _rate(n, lambda: enc.encode_items(text_items, batch_size=BATCH), repeats)
        for size in (64, 128):
            items = _items(rng, n, root, size)
            sized = pretrained_encoder(cfg.with_overrides(model={"scl": {"image_size": size}}), use_images=True)
            out[f"encode_items_per_s_text_image_{size}"] = _rate(n, _encode_call(sized, items, root), repeats)
        precision = cfg.model.scl.backbone_precision
        out["backbone_precision"] = precision
        tb = text_backbone(cfg.model.scl.text_max_tokens)
        titles = text_items["title"].tolist()
        baseline = [("float32", "_float32")] if precision != "float32" else []
        for prec, suffix in [(precision, ""), *baseline]:
            for size in (64, 128):
                images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
                out[f"backbone_images_per_s_{size}{suffix}"] = _rate(
                    n, functools.partial(image_backbone(size).encode, images, BATCH, prec), repeats)
            out[f"backbone_texts_per_s{suffix}"] = _rate(n, functools.partial(tb.encode, titles, BATCH, prec), repeats)
        out["train_pairs_per_s"] = _train_rate(2_048 if quick else 10_240, 4_000, root)
    _print_table(out)
    return out


def _print_table(out: dict[str, Any]) -> None:
    print(f"encoders benchmark ({out['items']} items, batch {out['batch_size']}, {out['threads']} threads, "
          f"median of {out['repeats']}, backbones in {out['backbone_precision']})")
    for key, value in out.items():
        if "_per_s" in key:
            print(f"  {key:<36} {value:>10.1f}")


if __name__ == "__main__":
    run(quick=True)
