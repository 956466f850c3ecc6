"""Arrow schemas of the dataset directory (docs/data.md) and of the truth side files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")
TRUTH_DIR = "_truth"
IMAGE_DIR = "images"

ITEMS = pa.schema([("item_id", pa.int64()), ("title", pa.string()), ("category", pa.string()),
                   ("image_path", pa.string()), ("created_at", TS)])
BEHAVIORS = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("action", pa.string()),
                       ("ts", TS)])
IMPRESSIONS = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("clicked", pa.int8()),
                         ("ts", TS)])
QUERIES = pa.schema([("query_text", pa.string()), ("query_image_path", pa.string()),
                     ("item_id", pa.int64()), ("ts", TS), ("clicked_item_ids", pa.list_(pa.int64()))])
ITEMS_TRUTH = pa.schema([("item_id", pa.int64()), ("latent", pa.list_(pa.float32())),
                         ("category", pa.string()), ("substyle", pa.int64()), ("quality", pa.float32())])
USERS_TRUTH = pa.schema([("user_id", pa.int64()), ("activity", pa.float32()),
                         ("interests", pa.list_(pa.list_(pa.float32()))),
                         ("interest_weights", pa.list_(pa.float32())),
                         ("interest_categories", pa.list_(pa.string()))])

DATASET_FILES = {"items.parquet": ITEMS, "behaviors.parquet": BEHAVIORS,
                 "impressions.parquet": IMPRESSIONS, "queries.parquet": QUERIES}


def write(out: Path, name: str, columns: dict[str, object], schema: pa.Schema) -> None:
    """Write one parquet file with an exact schema (columns in schema order)."""
    table = pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def clear_outputs(out: Path) -> None:
    """Remove what an earlier generation wrote into ``out`` (and nothing else)."""
    for name in DATASET_FILES:
        (out / name).unlink(missing_ok=True)
    for sub in (out / IMAGE_DIR / "items", out / IMAGE_DIR / "queries", out / TRUTH_DIR):
        if sub.is_dir():
            shutil.rmtree(sub)
    image_dir = out / IMAGE_DIR
    if image_dir.is_dir() and not any(image_dir.iterdir()):
        image_dir.rmdir()
