"""The SCL encoders fit only what happened before the dataset's one time cut."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from encoders import ItemEncoder, train_scl
from encoders.pairs import split_by_time
from infra.config import MmadsConfig
from infra.dataset import Dataset, dataset_cut
from tests.unit.encoders.conftest import impressions_at


def _rewired(ds: Dataset, rows: np.ndarray) -> Dataset:
    """The dataset with the given query rows pointed at other items (their text kept)."""
    q = ds.queries.copy()
    ids = ds.items["item_id"].to_numpy()
    q.loc[q.index[rows], "item_id"] = np.roll(ids, 7)[q["item_id"].to_numpy()[rows] % len(ids)]
    return replace(ds, queries=q)


def _weights(ds: Dataset, cfg: MmadsConfig, out: Path) -> dict[str, torch.Tensor]:
    return ItemEncoder.load(train_scl(ds, cfg, out, variant="hard", progress=False)).encoder.state_dict()


def test_scl_cut_is_the_impression_cut_not_the_query_quantile(tiny_dataset: Dataset, cfg: MmadsConfig):
    # impressions end well before the queries: their cut, not the queries' own quantile, decides
    early = tiny_dataset.queries["ts"].iloc[: len(tiny_dataset.queries) // 2]
    ds = replace(tiny_dataset, impressions=impressions_at(early))
    train_rows, test_rows, cut = split_by_time(ds, cfg)
    assert cut == dataset_cut(ds, cfg)
    assert cut < tiny_dataset.queries["ts"].quantile(0.5)
    assert (ds.queries["ts"].iloc[train_rows] < cut).all() and (ds.queries["ts"].iloc[test_rows] >= cut).all()
    assert len(train_rows) + len(test_rows) == len(ds.queries)


def test_queries_after_the_cut_reach_no_encoder_weight(tiny_dataset: Dataset, tmp_path: Path):
    from tests.unit.encoders.conftest import small_config

    cfg = small_config(epochs=2)
    cut = dataset_cut(tiny_dataset, cfg)
    after = np.flatnonzero((tiny_dataset.queries["ts"] >= cut).to_numpy())
    before = np.flatnonzero((tiny_dataset.queries["ts"] < cut).to_numpy())
    assert len(after) > 50 and len(before) > 50
    base = _weights(tiny_dataset, cfg, tmp_path / "base")
    post = _weights(_rewired(tiny_dataset, after), cfg, tmp_path / "post")
    pre = _weights(_rewired(tiny_dataset, before[-50:]), cfg, tmp_path / "pre")
    assert base.keys() == post.keys()
    assert all(torch.equal(base[k], post[k]) for k in base), "a post-cut query pair changed the encoder"
    assert any(not torch.equal(base[k], pre[k]) for k in base), "pre-cut pairs must train the encoder"


def test_scl_result_counts_the_pairs_before_the_cut(tiny_dataset: Dataset, cfg: MmadsConfig):
    rows, _, cut = split_by_time(tiny_dataset, cfg)
    assert len(rows) == int((tiny_dataset.queries["ts"] < cut).sum())
    assert isinstance(cut, pd.Timestamp)
