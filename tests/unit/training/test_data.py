import pandas as pd
import pytest

from infra.errors import DatasetError
from tests.unit.training.fake_market import Market
from training.data import batch_loader, load_training_set, time_split
from training.models.inputs import IdVocab, ItemVectorLookup, build_inputs


def test_no_test_row_at_or_before_the_cut(market: Market, small_cfg) -> None:
    frame = load_training_set(market.frame, 10)
    cut_row = frame["ts"].iloc[len(frame) // 2]
    cfg = small_cfg.with_overrides(data={"cut_time": cut_row.to_pydatetime()})
    split = time_split(frame, cfg, market.item_vectors)
    assert split.cut == cut_row
    assert (split.test["ts"] > split.cut).all()
    assert (split.train["ts"] < split.cut).all()
    assert len(split.train) + len(split.test) == len(frame) - int((frame["ts"] == cut_row).sum())


def test_quantile_cut_new_flag_and_validation_slice(market: Market, small_cfg) -> None:
    split = time_split(load_training_set(market.frame, 10), small_cfg, market.item_vectors)
    assert split.test["ts"].min() > split.cut
    expected_new = pd.to_datetime(split.test["item_created_at"], utc=True) > split.cut
    assert split.test["is_new"].tolist() == expected_new.tolist()
    assert split.test["is_new"].any()
    assert split.valid["ts"].min() >= split.fit["ts"].max()
    assert len(split.valid) == pytest.approx(0.1 * len(split.train), rel=0.05)


def test_load_training_set_names_missing_columns(market: Market) -> None:
    with pytest.raises(DatasetError, match="sim_max"):
        load_training_set(market.frame.drop(columns=["sim_max"]), 10)


def test_batch_loader_covers_every_row_once(market: Market) -> None:
    vocab = IdVocab.fit(market.frame)
    data = build_inputs(market.frame.head(1000), ItemVectorLookup.from_frame(market.item_vectors), vocab,
                        n_tiers=10, history_len=20)
    seen = []
    for batch in batch_loader(data, 256, shuffle=True, seed=3):
        seen.extend(batch.user.tolist())
    assert sorted(seen) == sorted(data.user.tolist())
    assert len(seen) == 1000
