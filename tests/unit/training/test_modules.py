import torch

from training.models.modules import SimTierTower, TargetAttention


def _naive_din(att: TargetAttention, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # the textbook layer on [q, k, q - k, q * k], with W = [W1, W2, W3, W4] built from the factors
    qq = q.unsqueeze(1).expand_as(k)
    x = torch.cat([qq, k, qq - k, qq * k], dim=-1)
    w_q, w_k, w_qk = att.q_proj.weight, att.k_proj.weight, att.qk_proj.weight
    w = torch.cat([w_q, w_k, torch.zeros_like(w_k), w_qk], dim=1)  # W3 = 0 is one valid choice
    h = torch.relu(x @ w.t() + att.q_proj.bias)
    logits = att.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
    weights = torch.softmax(logits, -1)
    return (weights.unsqueeze(-1) * k).sum(1)


def test_target_attention_matches_the_concatenated_din_layer() -> None:
    torch.manual_seed(0)
    att = TargetAttention(8, 16)
    q, k = torch.randn(4, 8), torch.randn(4, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]).bool()
    torch.testing.assert_close(att(q, k, mask), _naive_din(att, q, k, mask), atol=1e-5, rtol=1e-5)


def test_target_attention_ignores_padding_and_zeroes_empty_histories() -> None:
    torch.manual_seed(0)
    att = TargetAttention(4, 8)
    q, k = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
    out = att(q, k, mask)
    k2 = k.clone()
    k2[0, 2] = 100.0
    torch.testing.assert_close(att(q, k2, mask)[0], out[0])
    assert torch.equal(out[1], torch.zeros(4))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in att.parameters())


def test_shared_keys_give_the_same_attention_as_repeated_keys() -> None:
    torch.manual_seed(0)
    att = TargetAttention(8, 16)
    q, k = torch.randn(6, 8), torch.randn(1, 5, 8)
    for mask in (torch.tensor([[1, 1, 1, 0, 0]]).bool(), torch.zeros(1, 5, dtype=torch.bool)):
        shared = att(q, k, mask)
        repeated = att(q, k.expand(6, 5, 8), mask.expand(6, 5))
        torch.testing.assert_close(shared, repeated, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(shared, _naive_din(att, q, k.expand(6, 5, 8), mask.expand(6, 5)).nan_to_num(0.0),
                                   atol=1e-5, rtol=1e-5)
    assert torch.equal(shared, torch.zeros(6, 8))  # the all-padding history pools to zeros


def test_simtier_tower_log1p_counts_times_weights() -> None:
    tower = SimTierTower(2)
    with torch.no_grad():
        tower.tier_weight.copy_(torch.tensor([2.0, 1.0]))
    feats = torch.tensor([[0.25, 0.75, 4.0, 0.9, 0.3]])
    expected = torch.tensor([[2.0 * torch.log1p(torch.tensor(1.0)), torch.log1p(torch.tensor(3.0)),
                              torch.log1p(torch.tensor(4.0)), 0.9, 0.3]])
    torch.testing.assert_close(tower(feats), expected)
