import math

import torch

from tests.unit.training.fake_market import Market
from training.data import load_training_set, time_split
from training.models.ctr import model_config
from training.models.inputs import IdVocab, ItemVectorLookup, build_inputs
from training.trainer import fit_ctr_model, fit_make


def _data(market: Market, cfg):
    frame = load_training_set(market.frame, 10).head(3000)
    split = time_split(frame, cfg, market.item_vectors)
    vocab = IdVocab.fit(split.train)
    lookup = ItemVectorLookup.from_frame(market.item_vectors)

    def build(f):
        return build_inputs(f, lookup, vocab, n_tiers=10, history_len=20)

    return split, vocab, build(split.train), build(split.fit), build(split.valid)


def test_make_id_stage_trains_exactly_one_epoch_and_keeps_make_frozen(market: Market, small_cfg) -> None:
    ctr = small_cfg.model.ctr.model_copy(update={"id_epochs": 2, "make_epochs": 1})
    split, vocab, train, fit, valid = _data(market, small_cfg)
    mc = model_config("make", vocab, id_dim=8, mlp_hidden=(16, 8), n_tiers=10, vec_dim=16)
    make, pre = fit_make(fit, valid, mc.make, ctr, seed=0)
    assert pre.epochs == 1 and pre.samples == len(fit)
    model, log = fit_ctr_model(mc, train, ctr, seed=0, make=make)
    assert log.epochs == 1
    assert log.samples == len(train)
    for name, p in make.state_dict().items():
        assert torch.equal(model.make.state_dict()[name], p), name
    ft_cfg = model_config("make_ft", vocab, id_dim=8, mlp_hidden=(16, 8), n_tiers=10, vec_dim=16)
    ft, ft_log = fit_ctr_model(ft_cfg, train, ctr, seed=0, make=make)
    assert ft_log.epochs == 1
    assert not torch.equal(ft.make.head.weight, make.head.weight)
    id_only, id_log = fit_ctr_model(model_config("id_only", vocab, id_dim=8, mlp_hidden=(16, 8), n_tiers=10,
                                                 vec_dim=16), train, ctr, seed=0)
    assert id_log.epochs == 2


def test_make_early_stopping_keeps_the_best_epoch(market: Market, small_cfg) -> None:
    ctr = small_cfg.model.ctr.model_copy(update={"make_epochs": 4, "make_patience": 1, "lr": 0.05})
    _, vocab, _, fit, valid = _data(market, small_cfg)
    mc = model_config("make", vocab, id_dim=8, mlp_hidden=(16, 8), n_tiers=10, vec_dim=16)
    _, log = fit_make(fit, valid, mc.make, ctr, seed=0)
    best = max(range(len(log.val_auc)), key=lambda i: log.val_auc[i]) + 1
    assert log.best_epoch == best
    if log.epochs < 4:  # stopped early: the last epoch did not improve on the best
        assert log.val_auc[-1] <= log.val_auc[best - 1]
        assert log.epochs == best + 1
    assert all(not math.isnan(a) for a in log.val_auc)


def test_id_dropout_trains_the_oov_row_and_leaves_inference_alone(market: Market, small_cfg) -> None:
    from training.models.ctr import CTRModel
    from training.models.inputs import OOV

    _, vocab, train, _, valid = _data(market, small_cfg)
    mc = model_config("id_only", vocab, id_dim=8, mlp_hidden=(16, 8), n_tiers=10, vec_dim=16)
    plain, _ = fit_ctr_model(mc, train, small_cfg.model.ctr, seed=0)
    ctr = small_cfg.model.ctr.model_copy(update={"id_dropout": 0.3})
    dropped, _ = fit_ctr_model(mc, train, ctr, seed=0)
    assert plain.cfg.id_dropout == 0.0 and dropped.cfg.id_dropout == 0.3
    # without dropout no training row is OOV, so the OOV row keeps its initial value
    torch.manual_seed(0)  # what fit_ctr_model does before building the model
    init = CTRModel(mc)
    assert torch.equal(plain.item_emb.weight[OOV], init.item_emb.weight[OOV])
    assert not torch.equal(dropped.item_emb.weight[OOV], init.item_emb.weight[OOV])
    # eval mode never drops: scores are deterministic and use the real ids
    batch = valid.select(slice(0, 256))
    assert torch.equal(dropped(batch), dropped(batch))
    dropped.train()
    torch.manual_seed(1)
    assert not torch.equal(dropped(batch), dropped.eval()(batch))
