"""Shared tiny market for the training tests (seeded, built once per session)."""

from __future__ import annotations

import pytest
import torch

from infra.config import MmadsConfig, load_config
from tests.unit.training.fake_market import Market, fake_market

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def market() -> Market:
    return fake_market(0, n_users=150, n_items=300, imps_per_user=40, history_len=20)


@pytest.fixture(scope="session")
def small_cfg() -> MmadsConfig:
    return load_config(env={}).with_overrides(
        model={"dim": 16, "history_len": 20, "n_tiers": 10,
               "ctr": {"batch_size": 256, "mlp_hidden": [32, 16], "make_epochs": 2, "bootstrap": 50}},
    )
