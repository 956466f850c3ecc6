import numpy as np
import pandas as pd
import pytest

from training.slices import slice_masks, sliced_metrics

T = pd.Timestamp("2024-04-01", tz="UTC")


def _frames(n_users: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user sees items of every age bucket; item i has ``counts[i]`` training impressions."""
    ages_h = [3, 30, 100, 400]  # hours: <1d, 1-3d, 3-7d, >7d
    items = [1, 2, 3, 4]
    counts = {1: 0, 2: 5, 3: 50, 4: 500}
    rows = [{"user_id": u, "item_id": it, "ts": T + pd.Timedelta(minutes=k),
             "item_created_at": T + pd.Timedelta(minutes=k) - pd.Timedelta(hours=h), "clicked": int(k >= 4)}
            for u in range(1, n_users + 1) for k in range(8) for it, h in [(items[k % 4], ages_h[k % 4])]]
    test = pd.DataFrame(rows)
    train = pd.DataFrame({"item_id": [i for i, c in counts.items() for _ in range(c)]})
    return test, train


def test_buckets_by_age_and_by_training_impressions():
    test, train = _frames(3)
    masks = slice_masks(test, train)
    age = masks["item_age"]
    assert [int(age[b].sum()) for b in ("<1d", "1-3d", "3-7d", ">7d")] == [6, 6, 6, 6]
    assert (test["item_id"][age["<1d"]] == 1).all() and (test["item_id"][age[">7d"]] == 4).all()
    imp = masks["train_impressions"]
    assert (test["item_id"][imp["0"]] == 1).all() and (test["item_id"][imp["1-10"]] == 2).all()
    assert (test["item_id"][imp["11-100"]] == 3).all() and (test["item_id"][imp[">100"]] == 4).all()


def test_a_model_that_knows_only_young_items_gains_only_there():
    test, train = _frames()
    rng = np.random.default_rng(0)
    y = test["clicked"].to_numpy().astype(float)
    young = (test["item_id"] == 1).to_numpy()
    base = rng.random(len(test))
    smart = np.where(young, y * 0.5 + 0.25 * rng.random(len(test)), base)
    out = sliced_metrics(test, train, {"id_only": [base], "mm": [smart]}, n_boot=50, seed=0)
    gain = out["mm"]["gauc_gain_by_item_age"]
    assert gain["<1d"]["delta"] > 0.3 and gain["<1d"]["ci"][0] > 0
    assert gain[">7d"]["delta"] == pytest.approx(0.0)
    assert out["mm"]["gauc_by_train_impressions"]["0"] == pytest.approx(1.0)
    assert "gauc_gain_by_item_age" not in out["id_only"]
    assert out["mm"]["rows_by_item_age"]["<1d"] == int(young.sum())
