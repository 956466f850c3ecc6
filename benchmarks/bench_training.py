"""Training throughput of the CTR models (``mmads bench training``).

Synthetic rows in the training-set schema (d = cfg.model.dim, N = 50 full histories, batch 1024,
2 torch threads). ``train_samples_per_s`` is the ``simtier_make`` ID stage (SimTier + frozen MAKE,
the model trained in the one ID epoch); MAKE pre-training and ``make_ft`` are reported beside it,
as is the one-off cost of building input tensors from a frame.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_repo.simtier import SIMTIER_COLUMNS
from infra.config import load_config
from training.models.ctr import MAKE, model_config
from training.models.inputs import CTRInputs, IdVocab, ItemVectorLookup, build_inputs
from training.trainer import TrainingLog, fit_ctr_model, train_epoch

HISTORY = 50
BATCH = 1024


def _frame(rng: np.random.Generator, rows: int, n_users: int, n_items: int, dim: int, n_tiers: int) -> pd.DataFrame:
    items = rng.integers(0, n_items, rows)
    vecs = rng.normal(size=(n_items, dim)).astype(np.float32)
    hist = rng.integers(0, n_items, (rows, HISTORY))
    tiers = rng.dirichlet(np.ones(n_tiers), rows)
    frame = pd.DataFrame({
        "user_id": rng.integers(0, n_users, rows), "item_id": items,
        "ts": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(rows), unit="s"),
        "clicked": (rng.random(rows) < 0.1).astype(np.int8),
        "category": [f"c{i % 20}" for i in items], "has_emb": True, "item_emb": list(vecs[items]),
        "hist_item_ids": list(hist), "hist_len": HISTORY,
        "sim_max": rng.random(rows), "sim_mean": rng.random(rows) - 0.5,
    })
    return pd.concat([frame, pd.DataFrame(tiers, columns=SIMTIER_COLUMNS(n_tiers)[:n_tiers])], axis=1)


def run(quick: bool) -> dict[str, Any]:
    """Measure training throughput; ``quick`` uses fewer rows.

    Returns:
        ``train_samples_per_s`` (simtier_make ID stage), ``make_pretrain_samples_per_s``,
        ``make_ft_samples_per_s``, ``id_only_samples_per_s``, ``build_inputs_rows_per_s`` and the setup.
    """
    torch.set_num_threads(2)
    cfg = load_config()
    dim, n_tiers = cfg.model.dim, cfg.model.n_tiers
    rows = 20_480 if quick else 102_400
    rng = np.random.default_rng(0)
    frame = _frame(rng, rows, 5_000, 10_000, dim, n_tiers)
    emb = rng.normal(size=(10_000, dim)).astype(np.float32)
    vectors = pd.DataFrame({"item_id": np.arange(10_000), "emb": list(emb)})
    lookup = ItemVectorLookup.from_frame(vectors)
    vocab = IdVocab.fit(frame)
    start = time.perf_counter()
    data: CTRInputs = build_inputs(frame, lookup, vocab, n_tiers=n_tiers, history_len=HISTORY)
    build_s = time.perf_counter() - start
    ctr = cfg.model.ctr.model_copy(update={"batch_size": BATCH})
    out: dict[str, Any] = {"rows": rows, "batch_size": BATCH, "history_len": HISTORY, "dim": dim,
                           "threads": torch.get_num_threads(), "build_inputs_rows_per_s": rows / build_s}
    cfgs = {n: model_config(n, vocab, id_dim=ctr.id_dim, mlp_hidden=ctr.mlp_hidden, n_tiers=n_tiers, vec_dim=dim)
            for n in ("id_only", "make_ft", "simtier_make")}
    make_cfg = cfgs["simtier_make"].make
    assert make_cfg is not None
    make = MAKE(make_cfg)
    log = TrainingLog()
    train_epoch(make, data, torch.optim.Adam(make.parameters(), lr=ctr.lr), batch_size=BATCH, seed=0, log=log)
    out["make_pretrain_samples_per_s"] = log.samples_per_s
    for name, key in (("simtier_make", "train_samples_per_s"), ("make_ft", "make_ft_samples_per_s"),
                      ("id_only", "id_only_samples_per_s")):
        _, log = fit_ctr_model(cfgs[name], data, ctr, seed=0, make=make if cfgs[name].make else None)
        out[key] = log.samples_per_s
    print_table(out)
    return out


def print_table(res: dict[str, Any]) -> None:
    """Print the throughputs with the issue's target."""
    print(f"training benchmark ({res['rows']:,} rows, batch {res['batch_size']}, history {res['history_len']}, "
          f"d = {res['dim']}, {res['threads']} threads)")
    rows = [("simtier_make ID stage, samples/s", res["train_samples_per_s"], ">= 20,000"),
            ("make_ft ID stage, samples/s", res["make_ft_samples_per_s"], ""),
            ("id_only, samples/s", res["id_only_samples_per_s"], ""),
            ("MAKE pre-training, samples/s", res["make_pretrain_samples_per_s"], ""),
            ("build_inputs, rows/s", res["build_inputs_rows_per_s"], "")]
    for name, value, target in rows:
        print(f"  {name:<36} {value:>10,.0f}  {target}")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
