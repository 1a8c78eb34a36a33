"""Behaviour of the three encoders: causality, padding invariance, fused == reference attention."""

from __future__ import annotations

import math
import shutil

import pytest
import srs_backbones
import torch
from srs_backbones import ENCODERS, build_encoder, layers

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NAMES = sorted(ENCODERS)
SMALL = dict(dim=32, num_layers=2, max_len=12)


def make(name: str, device: str = "cpu", **overrides):
    torch.manual_seed(0)
    return build_encoder(name, **{**SMALL, **overrides}).to(device).eval()


def right_padded(lengths: list[int], n: int, dim: int, device: str = "cpu"):
    torch.manual_seed(1)
    x = torch.randn(len(lengths), n, dim, device=device)
    pad = torch.arange(n, device=device)[None, :] >= torch.tensor(lengths, device=device)[:, None]
    return x, pad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_zero_padding(name, device):
    enc = make(name, device)
    x, pad = right_padded([5, 12, 1], 12, 32, device)
    out = enc(x, pad)
    assert out.shape == x.shape
    assert torch.all(out[pad] == 0)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_causal_encoders_never_see_the_future(name, device):
    enc = make(name, device)
    assert enc.causal
    x, pad = right_padded([12, 12], 12, 32, device)
    base = enc(x, pad)
    for t in (0, 3, 7, 10):
        changed = x.clone()
        changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:])
        out = enc(changed, pad)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("device", DEVICES)
def test_bert4rec_is_bidirectional(device):
    enc = make("bert4rec", device)
    assert not enc.causal
    x, pad = right_padded([12], 12, 32, device)
    changed = x.clone()
    changed[:, 9] = torch.randn_like(changed[:, 9])
    assert not torch.allclose(enc(x, pad)[:, :5], enc(changed, pad)[:, :5])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_padding_changes_no_real_output(name, device):
    enc = make(name, device)
    x, pad = right_padded([4, 7], 7, 32, device)
    base = enc(x, pad)
    # More padding, filled with garbage: real positions must not move.
    extra = torch.randn(2, 5, 32, device=device) * 100
    longer = torch.cat([x, extra], 1)
    longer[0, 4:7] = torch.randn(3, 32, device=device) * 100  # garbage in row 0's existing padding too
    longer_pad = torch.cat([pad, torch.ones(2, 5, dtype=torch.bool, device=device)], 1)
    out = enc(longer, longer_pad)
    real = ~pad
    torch.testing.assert_close(out[:, :7][real], base[real], rtol=1e-5, atol=1e-5)


def reference_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
    """Attention with an explicit softmax, the textbook formula."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    n_q, n_k = scores.shape[-2:]
    if is_causal:
        scores = scores.masked_fill(~torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("lengths", [[12, 12], [3, 9]], ids=["full", "padded"])
def test_fused_attention_equals_reference(name, lengths, device, monkeypatch):
    enc = make(name, device, num_heads=4)
    x, pad = right_padded(lengths, 12, 32, device)
    fused = enc(x, pad)
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", reference_sdpa)
    reference = enc(x, pad)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_and_train_uses_dropout(name):
    enc = make(name, dropout=0.5)
    x, pad = right_padded([6, 12], 12, 32)
    assert torch.equal(enc(x, pad), enc(x, pad))
    enc.train()
    assert not torch.equal(enc(x, pad), enc(x, pad))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    enc = make(name).train()
    x, pad = right_padded([12, 12, 5], 12, 32)
    x.requires_grad_(True)
    enc(x, pad).pow(2).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler, and this platform has none")
@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_runs_and_matches_eager(name):
    enc = make(name, dim=16, num_layers=1)
    x, pad = right_padded([3, 12], 12, 16)
    compiled = torch.compile(enc)
    torch.testing.assert_close(compiled(x, pad), enc(x, pad), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flash_or_efficient_backend_accepts_sasrec_masks():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    enc = make("sasrec", "cuda", num_heads=2).half()
    x, pad = right_padded([5, 12], 12, 32, "cuda")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        out = enc(x.half(), pad)  # raises if neither fused kernel accepts the inputs
    assert torch.isfinite(out).all()


def test_build_encoder_rejects_unknown_names_and_keys():
    with pytest.raises(ValueError, match="choose one of"):
        build_encoder("transformer4rec")
    with pytest.raises(ValueError, match="valid keys"):
        build_encoder("sasrec", hidden_size=64)


def test_bad_inputs_are_named():
    enc = make("sasrec")
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.randn(1, 13, 32), torch.zeros(1, 13, dtype=torch.bool))
    with pytest.raises(ValueError, match="padding_mask"):
        enc(torch.randn(1, 5, 32), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="norm"):
        build_encoder("sasrec", norm="sandwich")


def test_all_padding_row_gives_zeros_not_nan():
    enc = make("bert4rec")
    x, pad = right_padded([0, 4], 12, 32)
    out = enc(x, pad)
    assert torch.isfinite(out).all() and torch.all(out[0] == 0)


def test_sasrec_variants_run():
    for norm, activation in [("sasrec", "relu"), ("pre", "gelu"), ("post", "gelu")]:
        enc = make("sasrec", norm=norm, activation=activation)
        x, pad = right_padded([4, 12], 12, 32)
        assert torch.isfinite(enc(x, pad)).all()


def test_package_exports_protocol():
    for name in NAMES:
        assert isinstance(make(name), srs_backbones.SequenceEncoder)
