"""The item indexer (``mmads stream items``): items topic -> encoder -> Milvus + Feast, then commit.

Per micro-batch: validate (bad ones are dead-lettered), keep the last event per item id, encode
with the current model, write the Feast ``item_embeddings`` online rows, then upsert Milvus (with
``model_version``; second, so anything the ANN search returns has its features), and buffer the
offline rows. Side features sent as extra event fields (``price``, ``brand``, ... as configured in
``data.side_features``) are written to the ``item_side`` view the same way, online before Milvus.
At a commit point (``offline_flush_rows`` rows or ``offline_flush_s`` seconds) Milvus is flushed
and the offline rows appended as one part file per view, and only then are the offsets committed.
A crash re-delivers at most the uncommitted tail, and re-delivery is harmless: Milvus and Feast
online are upserts by id, and an offline duplicate has the same item, vector and ``created_at``
(readers keep the latest ``event_timestamp``).

Freshness: for every written item the Kafka message timestamp and the time both online writes
finished are logged (:mod:`streaming.stats`), i.e. produced -> searchable in Milvus and readable
from Feast online.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from feature_repo.schema import ITEM_SIDE_VIEW, ITEM_VIEW
from feature_repo.side_rows import side_view_rows
from feature_repo.store import append_offline, open_store, view_schemas, write_online_items, write_online_rows
from infra.config import MmadsConfig
from infra.errors import InvalidEventError
from infra.side_features import configured
from streaming.buffers import FlushPolicy, FrameBuffer, feast_call
from streaming.dlq import DeadLetter
from streaming.events import ItemEvent, parse_event
from streaming.loop import StatelessProcessor, run_job
from streaming.metrics import timed
from streaming.milvus_sink import MilvusSink
from streaming.stats import FreshnessLog, JobStats

logger = logging.getLogger(__name__)
JOB = "items"


def load_encoder(cfg: MmadsConfig, model_dir: Path | str | None) -> Any:
    """The encoder to index with: the artifact in ``model_dir``, else the pretrained baseline.

    Raises:
        ModelArtifactError: ``model_dir`` is not a valid encoder artifact.
    """
    from encoders import ItemEncoder, pretrained_encoder

    if model_dir is not None:
        return ItemEncoder.load(Path(model_dir))
    logger.warning("no --model given: indexing with the pretrained (no SCL) encoder")
    return pretrained_encoder(cfg, seed=cfg.model.seed)


def warm_up(encoder: Any) -> None:
    """Encode one dummy item so the backbones load before the first real batch (freshness)."""
    started = time.perf_counter()
    encoder.encode_items(pd.DataFrame({"item_id": [0], "title": ["warm up"], "category": ["-"],
                                       "image_path": [None]}))
    size = encoder.spec.image_size if getattr(encoder, "uses_images", False) else None
    if size:  # the image backbone freezes its graph on its first batch (~2 s): not on a real item
        from encoders.backbones import image_backbone

        image_backbone(size).encode(torch.zeros((1, 3, size, size)), precision=encoder.spec.backbone_precision)
    logger.info("encoder %s ready in %.1fs", encoder.version, time.perf_counter() - started)


def items_frame(events: list[ItemEvent], side_names: Sequence[str] = ()) -> pd.DataFrame:
    """Events as the encoder's input frame (``image_path`` absolute, or None).

    ``side_names``: the configured item side features, taken from the events' extra fields (None
    where an event does not carry one).
    """
    frame = pd.DataFrame({
        "item_id": np.array([e.item_id for e in events], dtype=np.int64),
        "title": [e.title for e in events],
        "category": [e.category for e in events],
        "image_path": [e.image_path() for e in events],
        "created_at": pd.to_datetime([e.created_at for e in events], utc=True),
        "item_key": [e.item_key if isinstance(e.item_key, str) else "" for e in events],
    })
    for name in side_names:
        frame[name] = pd.Series([e.side_features.get(name) for e in events], dtype="object")
    return frame


@dataclass
class WrittenItems:
    """What :func:`write_items` wrote online, to be appended offline at the next commit point.

    Attributes:
        rows: the ``item_embeddings`` rows (item_id, emb, category, created_at, event_timestamp).
        side: the ``item_side`` rows (None when no item side feature is configured).
    """

    rows: pd.DataFrame
    side: pd.DataFrame | None


class OfflineItemRows:
    """The offline rows of written items, buffered per view until a commit point appends them."""

    def __init__(self) -> None:
        self.rows = FrameBuffer()
        self.side = FrameBuffer()

    def add(self, written: WrittenItems) -> None:
        """Buffer one write's rows."""
        self.rows.add(written.rows)
        if written.side is not None:
            self.side.add(written.side)

    def append(self, cfg: MmadsConfig) -> None:
        """Append the buffered rows as one part file per view, then forget them."""
        for view, buffer in ((ITEM_VIEW, self.rows), (ITEM_SIDE_VIEW, self.side)):
            frame = buffer.take()
            if frame is not None:
                append_offline(cfg, view, frame, view_schemas(cfg)[view] if view == ITEM_SIDE_VIEW else None)
                buffer.clear()


def write_items(cfg: MmadsConfig, encoder: Any, milvus: MilvusSink, store: Any, items: pd.DataFrame,
                image_root: Path | None = None) -> WrittenItems:
    """Encode items and write Milvus and Feast online; return the offline rows (not yet appended).

    Args:
        cfg: the configuration.
        encoder: the ``ItemEncoder``.
        milvus: the vector sink.
        store: the Feast ``FeatureStore``.
        items: columns item_id, title, category, image_path, created_at (UTC), optionally item_key
            (the string id as written, "" for an integer id) and the configured item side features.
        image_root: directory image paths are relative to (None: absolute paths).

    Returns:
        The ``item_embeddings`` rows and ``item_side`` rows written online.
    """
    with timed("encode"):
        vectors = encoder.encode_items(items, image_root)
    ids = items["item_id"].to_numpy(np.int64)
    created = pd.to_datetime(items["created_at"], utc=True)
    # Event time, not processing time: the vector describes the item as announced at created_at, so
    # point-in-time retrieval for an impression after created_at sees it (as when built from files).
    rows = pd.DataFrame({
        "item_id": ids, "emb": list(vectors), "category": items["category"].astype(str).to_numpy(),
        "created_at": created.to_numpy(), "event_timestamp": created.to_numpy(),
    })
    # Feast online first, Milvus second: an item the ANN search can return always has its features
    # (the other order let /recommend briefly return a new item with a missing embedding).
    with timed("feast"):
        feast_call("write item_embeddings online", lambda: write_online_items(store, rows))
        side = side_view_rows(cfg, "items", items)
        if side is not None:
            schema = view_schemas(cfg)[ITEM_SIDE_VIEW]
            feast_call("write item_side online", lambda: write_online_rows(store, ITEM_SIDE_VIEW, side, schema))
    keys = items["item_key"].tolist() if "item_key" in items.columns else None
    with timed("milvus"):
        milvus.upsert(ids, vectors, items["category"].tolist(), (created.astype("int64") // 1_000_000).to_numpy(),
                      encoder.version, keys)
    return WrittenItems(rows, side)


class ItemIndexer(StatelessProcessor):
    """The processor of the item indexer (see the module docstring).

    Args:
        cfg: the configuration.
        encoder: an ``ItemEncoder`` (``encode_items``, ``version``, ``dim``).
        milvus: the vector sink.
        store: the Feast ``FeatureStore``.
        stats: counters to update.
        freshness: where freshness samples go (None: not recorded).
    """

    def __init__(self, cfg: MmadsConfig, encoder: Any, milvus: MilvusSink, store: Any, stats: JobStats,
                 freshness: FreshnessLog | None = None) -> None:
        self.cfg = cfg
        self.encoder = encoder
        self.milvus = milvus
        self.store = store
        self.stats = stats
        self.freshness = freshness
        self.offline = OfflineItemRows()
        self.side_names = [spec.name for spec in configured(cfg, "items")]
        self.policy = FlushPolicy(cfg.streaming.offline_flush_rows, cfg.streaming.offline_flush_s)

    def process(self, records: list[Any]) -> list[DeadLetter]:
        """Validate, encode and write one batch; returns the dead letters."""
        letters: list[DeadLetter] = []
        latest: dict[int, tuple[ItemEvent, Any]] = {}
        with timed("decode", len(records)):
            for r in records:
                try:
                    ev = parse_event("items", r.value, self.cfg.data.plausible_time_window)
                except InvalidEventError as exc:
                    letters.append(DeadLetter.of(r, exc.reason))
                    continue
                item = cast(ItemEvent, ev)
                latest[item.item_id] = (item, r)  # the last event of an id in the batch wins
        if latest:
            events = [ev for ev, _ in latest.values()]
            written = write_items(self.cfg, self.encoder, self.milvus, self.store,
                                  items_frame(events, self.side_names))
            written_ms = int(time.time() * 1000)
            self.offline.add(written)
            rows = written.rows
            self.stats.written += len(rows)
            if self.freshness is not None:
                self.freshness.record(rows["item_id"].to_numpy(),
                                      np.array([r.timestamp for _, r in latest.values()]), written_ms)
        if records:
            self.policy.touch(len(latest))
        with timed("milvus"):
            self.milvus.maybe_flush()
        return letters

    def needs_flush(self) -> bool:
        """True when the offline rows (or offsets) are due."""
        return self.policy.due()

    def flush(self) -> None:
        """Flush Milvus (so the rows survive a server restart) and append the offline rows."""
        self.milvus.maybe_flush(force=True)
        self.offline.append(self.cfg)
        self.policy.reset()

    def close(self) -> None:
        """Close the Milvus connection."""
        self.milvus.close()


def run_items(cfg: MmadsConfig, *, stop_event: threading.Event | None = None, max_idle_s: float | None = None,
              model_dir: Path | str | None = None) -> JobStats:
    """Run the item indexer until stopped (``mmads stream items --model MODEL_DIR``).

    Args:
        cfg: the configuration.
        stop_event: set it to stop gracefully (SIGINT/SIGTERM do the same in the main thread).
        max_idle_s: stop after this long without items (None: run forever).
        model_dir: the encoder artifact (None: the pretrained baseline encoder).

    Returns:
        The job's counters.
    """
    import torch

    # One thread: the indexer shares 2 cores with the other jobs; two torch threads under that
    # contention ran ~5x slower than one (measured on this machine).
    torch.set_num_threads(cfg.streaming.encoder_threads)
    encoder = load_encoder(cfg, model_dir)
    warm_up(encoder)
    milvus = MilvusSink(cfg, encoder.dim)
    milvus.ensure_collection()
    stats = JobStats(job=JOB)
    proc = ItemIndexer(cfg, encoder, milvus, open_store(cfg), stats, FreshnessLog(cfg, JOB))
    return run_job(cfg, JOB, cfg.kafka.topics.items, proc, batch_size=cfg.streaming.batch_size,
                   max_wait_ms=cfg.streaming.max_wait_ms, stop_event=stop_event, max_idle_s=max_idle_s,
                   stats=stats)


def main(argv: list[str] | None = None) -> int:
    """``python -m streaming.item_indexer --config FILE [--model DIR] [--max-idle-s S]``."""
    from streaming.entry import job_main

    return job_main(lambda cfg, args: run_items(cfg, max_idle_s=args.max_idle_s, model_dir=args.model),
                    "the item indexer", argv, job=JOB)


if __name__ == "__main__":
    raise SystemExit(main())
