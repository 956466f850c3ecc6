import math

import pytest
import torch
import torch.nn.functional as F

from encoders.losses import info_nce, triplet_margin
from encoders.negatives import mine_same_category


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_infonce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    t = 0.5
    # row 0: q0.k0 = 0.6, q0.k1 = 1.0; row 1: q1.k0 = 0.8, q1.k1 = 0.0
    expected = (_ce([0.6 / t, 1.0 / t], 0) + _ce([0.8 / t, 0.0 / t], 1)) / 2
    assert info_nce(q, k, t).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_with_queue_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    queue = torch.tensor([[0.0, -1.0]])
    t = 0.5
    expected = (_ce([0.6 / t, 1.0 / t, 0.0], 0) + _ce([0.8 / t, 0.0, -1.0 / t], 1)) / 2
    got = info_nce(q, k, t, key_ids=torch.tensor([1, 2]), queue=queue, queue_ids=torch.tensor([9]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_duplicate_positives_are_masked_in_batch_and_queue():
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(3, 4, generator=gen), dim=-1)
    k = F.normalize(torch.randn(3, 4, generator=gen), dim=-1)
    queue = F.normalize(torch.randn(2, 4, generator=gen), dim=-1)
    t = 0.1
    # keys 0 and 1 are the same item (id 5); queue row 0 is item 7 = query 2's positive
    got = info_nce(q, k, t, key_ids=torch.tensor([5, 5, 7]), queue=queue, queue_ids=torch.tensor([7, 8]))
    lg = (q @ k.T / t).tolist()
    lq = (q @ queue.T / t).tolist()
    expected = (_ce([lg[0][0], lg[0][2], lq[0][0], lq[0][1]], 0)
                + _ce([lg[1][1], lg[1][2], lq[1][0], lq[1][1]], 0)
                + _ce([lg[2][0], lg[2][1], lg[2][2], lq[2][1]], 2)) / 3
    assert got.item() == pytest.approx(expected, rel=1e-5)
    unmasked = info_nce(q, k, t, queue=queue)
    assert unmasked.item() != pytest.approx(expected, rel=1e-3)


def test_triplet_margin_by_hand_and_validity():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[0.8, 0.6], [1.0, 0.0]])
    n = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # margin 0.2: 0.2 - 0.6 + 0.8 = 0.4; margin 0.5: row 0 0.5 - 0.8 + 0.6 = 0.3, row 1 clipped to 0
    q0 = torch.tensor([[1.0, 0.0]])
    assert triplet_margin(q0, torch.tensor([[0.6, 0.8]]), torch.tensor([[0.8, 0.6]]), 0.2).item() == \
        pytest.approx(0.4)
    assert triplet_margin(q, p, n, 0.5).item() == pytest.approx((0.5 - 0.8 + 0.6 + 0.0) / 2)
    assert triplet_margin(q, p, n, 0.5, torch.tensor([False, True])).item() == pytest.approx(0.0)
    assert triplet_margin(q, p, n, 0.5, torch.tensor([False, False])).item() == 0.0


def test_mining_picks_hardest_same_category_other_item():
    q = torch.tensor([[1.0, 0.0]])
    cands = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.99, 0.0]])
    ids = torch.tensor([3, 4, 5, 6])
    cats = torch.tensor([0, 0, 0, 1])
    neg, ok = mine_same_category(q, torch.tensor([3]), torch.tensor([0]), cands, ids, cats)
    assert ok.tolist() == [True]
    assert torch.equal(neg[0], cands[1])  # id 3 is the positive itself, id 6 another category
    _, ok = mine_same_category(q, torch.tensor([3]), torch.tensor([2]), cands, ids, cats)
    assert ok.tolist() == [False]
