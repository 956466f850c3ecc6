"""One rank of the torchrun test: train ``id_only`` data-parallel from a parquet directory.

Usage (what the test runs): ``torchrun --standalone --nproc-per-node 2 torchrun_entry.py SET VECTORS OUT``.
Each rank prints ``RANK <rank> <sorted keys of what train_and_evaluate returned>``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd

from infra.config import load_config
from training.experiment import train_and_evaluate


def main() -> None:
    """Train from ``argv``'s set and vectors into ``argv``'s run directory."""
    set_dir, vectors, out = (Path(a) for a in sys.argv[1:4])
    cfg = load_config(env={}).with_overrides(
        model={"dim": 16, "history_len": 20, "n_tiers": 10,
               "ctr": {"batch_size": 256, "mlp_hidden": [32, 16], "bootstrap": 10, "epoch_study": 0}},
        data={"side_features": []})
    section = train_and_evaluate(set_dir, pd.read_parquet(vectors), cfg, out, models=["id_only"], progress=False)
    print("RANK", os.environ["RANK"], json.dumps(sorted(section)), flush=True)


if __name__ == "__main__":
    main()
