import torch

from encoders.model import SCLModel
from encoders.queue import KeyQueue
from tests.unit.encoders.conftest import small_config


def test_queue_is_fifo_with_fixed_size():
    q = KeyQueue(4, 2)
    keys = torch.arange(12, dtype=torch.float32).view(6, 2)
    q.enqueue(keys[:3], torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]))
    assert len(q) == 3
    assert q.contents()[1].tolist() == [0, 1, 2]
    q.enqueue(keys[3:], torch.tensor([3, 4, 5]), torch.tensor([1, 1, 1]))
    k, ids, cats = q.contents()
    assert len(q) == 4 and k.shape == (4, 2)
    assert ids.tolist() == [2, 3, 4, 5]  # the two oldest were dequeued
    assert torch.equal(k, keys[2:])
    assert cats.tolist() == [0, 1, 1, 1]
    q.enqueue(torch.zeros(9, 2), torch.arange(10, 19), torch.zeros(9, dtype=torch.long))
    assert q.contents()[1].tolist() == [15, 16, 17, 18]  # a batch larger than K keeps its newest K


def test_queue_state_roundtrip():
    q = KeyQueue(3, 2)
    q.enqueue(torch.ones(2, 2), torch.tensor([7, 8]), torch.tensor([0, 1]))
    r = KeyQueue(3, 2)
    r.load_state_dict(q.state_dict())
    assert r.contents()[1].tolist() == [7, 8] and r.ptr == 2


def test_momentum_update_is_ema_of_online_weights():
    cfg = small_config(momentum=0.9)
    m = SCLModel(dim=4, hidden=8, use_images=False, fusion="mean", variant="queue", scl=cfg.model.scl,
                 queue_size=8)
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.fill_(1.0)
        for p in m.momentum_encoder.parameters():
            p.fill_(0.0)
    m.momentum_update()
    for p in m.momentum_encoder.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.1))
    assert all(not p.requires_grad for p in m.momentum_encoder.parameters())
