"""Dropout per part: emb_dropout (input), attn_dropout (attention weights), dropout (hidden)."""

from __future__ import annotations

import math

import pytest
import torch
from srs_backbones import ENCODERS, build_encoder

NAMES = sorted(ENCODERS)
TRANSFORMERS = ["bert4rec", "sasrec"]
SMALL = dict(dim=32, num_layers=2, num_heads=2, max_len=12)  # 2 GRU layers: the inter-layer dropout is live


def make(name: str, **overrides):
    torch.manual_seed(0)
    small = SMALL if name != "gru4rec" else {k: v for k, v in SMALL.items() if k != "num_heads"}
    return build_encoder(name, **{**small, **overrides})


def inputs():
    torch.manual_seed(1)
    x = torch.randn(3, 12, 32)
    pad = torch.arange(12)[None, :] >= torch.tensor([12, 7, 3])[:, None]
    return x, pad


def train_output(enc, x, pad, seed: int = 5):
    enc.train()
    torch.manual_seed(seed)
    return enc(x, pad)


def eval_output(enc, x, pad):
    return enc.eval()(x, pad)


def new_fields(name: str) -> list[str]:
    return ["emb_dropout"] if name == "gru4rec" else ["emb_dropout", "attn_dropout"]


@pytest.mark.parametrize("norm", ["sasrec", "pre", "post"])
@pytest.mark.parametrize("name", NAMES)
def test_none_is_the_hidden_dropout_bit_for_bit(name, norm):
    if name == "gru4rec" and norm != "sasrec":
        pytest.skip("GRU4Rec has no layer norm")
    norm_option = {} if name == "gru4rec" else {"norm": norm}
    default = make(name, dropout=0.3, **norm_option)
    explicit = make(name, dropout=0.3, **norm_option, **{f: 0.3 for f in new_fields(name)})
    x, pad = inputs()
    # same parameters, same RNG draws in the same order, hence the same train-mode outputs
    for (ka, a), (kb, b) in zip(default.state_dict().items(), explicit.state_dict().items()):
        assert ka == kb and torch.equal(a, b), ka
    for seed in (5, 6):
        out = train_output(default, x, pad, seed)
        assert torch.equal(out, train_output(explicit, x, pad, seed))
        assert not torch.equal(out, eval_output(default, x, pad))  # dropout really ran


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_each_transformer_dropout_sits_on_its_own_part(name):
    stack = make(name, dropout=0.1, emb_dropout=0.2, attn_dropout=0.3).stack
    assert stack.drop.p == 0.2
    for block in stack.blocks:
        assert block.attn.dropout == 0.3
        assert block.drop.p == 0.1
        assert [m.p for m in block.ffn.modules() if isinstance(m, torch.nn.Dropout)] == [0.1]


def test_each_gru_dropout_sits_on_its_own_part():
    enc = make("gru4rec", dropout=0.1, emb_dropout=0.2)
    assert enc.emb_dropout.p == 0.2 and enc.gru.dropout == 0.1
    assert make("gru4rec", num_layers=1, dropout=0.1).gru.dropout == 0.0  # no layer to drop between


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_dropouts_make_train_mode_match_eval_mode(name):
    enc = make(name, dropout=0.0, **{f: 0.0 for f in new_fields(name)})
    x, pad = inputs()
    assert torch.equal(train_output(enc, x, pad), eval_output(enc, x, pad))


@pytest.mark.parametrize(("name", "knob"), [(n, k) for n in NAMES for k in ["dropout", *new_fields(n)]])
def test_one_dropout_alone_makes_train_mode_differ(name, knob):
    zeros = {k: 0.0 for k in ["dropout", *new_fields(name)]}
    enc = make(name, **{**zeros, knob: 0.5})
    x, pad = inputs()
    train, evaluated = train_output(enc, x, pad), eval_output(enc, x, pad)
    assert not torch.allclose(train, evaluated)
    assert torch.all(train[pad] == 0)


def test_single_layer_gru_dropout_acts_only_through_the_input_default():
    enc = make("gru4rec", num_layers=1, dropout=0.5, emb_dropout=0.0)
    x, pad = inputs()
    assert torch.equal(train_output(enc, x, pad), eval_output(enc, x, pad))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, True, "0.2"])
@pytest.mark.parametrize(("name", "field"), [(n, f) for n in NAMES for f in ["dropout", *new_fields(n)]])
def test_bad_dropout_values_are_named(name, field, bad):
    with pytest.raises(ValueError, match=f"^{field}="):
        make(name, **{field: bad})


@pytest.mark.parametrize("name", NAMES)
def test_zero_and_none_are_valid(name):
    for value in (0.0, 0.99, None):
        make(name, **{f: value for f in new_fields(name)})
