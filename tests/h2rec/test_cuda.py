"""The same model on CUDA as on CPU: equal outputs, losses and gradients, and training that follows
the CPU's loss curve. Skipped without a CUDA device (CI has none; `benchmarks/gpu.sh` runs them)."""

from __future__ import annotations

import copy
import json

import h2rec
import pytest
import torch
from h2rec.assemble import build_model, prepare
from h2rec.data import training_windows
from h2rec.step import training_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BACKBONES = {"sasrec": {}, "gru4rec": {"model.num_layers": 1}, "bert4rec": {"model.num_heads": 2}}
# fp32 on both sides; the tolerance covers a different summation order in the GPU kernels
CLOSE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def full_fp32_on_cuda(monkeypatch):
    """cuDNN's RNNs may use TF32 by default, which is a precision choice, not a bug to find here."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("kind", ["h2rec", "hid", "sid"])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_cuda_scores_losses_and_gradients_match_cpu(tiny_config, kind, backbone):
    # dropout off: the two devices draw dropout masks from different generators
    config, sids, ds = prepare(tiny_config(**{"model.kind": kind, "model.backbone": backbone,
                                               "model.dropout": 0.0, **BACKBONES[backbone]}))
    torch.manual_seed(0)
    cpu = build_model(config, sids)
    gpu = copy.deepcopy(cpu).to("cuda")
    rows = training_windows(ds.train, config.data.max_len, cpu.causal, "sliding", None).rows[:48]

    with torch.no_grad():
        items = rows[:, :12].clamp(min=1)
        out_cpu, _ = cpu.eval()(items)
        out_gpu, _ = gpu.eval()(items.cuda())
        last = torch.zeros_like(items, dtype=torch.bool)
        last[:, -1] = True
        torch.testing.assert_close(gpu.score_all(out_gpu.select(last.cuda())).cpu(),
                                   cpu.score_all(out_cpu.select(last)), **CLOSE)

    # the negatives, masks and levels come from one CPU generator, so both steps draw the same ones
    parts_cpu = training_step(cpu.train(), rows, config.train, torch.Generator().manual_seed(1))
    parts_gpu = training_step(gpu.train(), rows, config.train, torch.Generator().manual_seed(1))
    assert parts_cpu.keys() == parts_gpu.keys()
    for name in parts_cpu:
        torch.testing.assert_close(parts_gpu[name].cpu(), parts_cpu[name], **CLOSE, msg=name)
    parts_cpu["total"].backward()
    parts_gpu["total"].backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        if p_cpu.grad is not None:
            torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_training_on_cuda_follows_the_cpu_run_and_resumes(tiny_config, tmp_path, crash_then_resume):
    def losses(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss_total"] for line in lines]

    settings = {"model.kind": "h2rec", "model.dropout": 0.0, "train.epochs": 3, "eval.negatives": 20}
    on_cpu = h2rec.train(tiny_config(**settings), tmp_path / "cpu", progress=False)
    config = tiny_config(**settings, **{"train.device": "cuda"})
    on_gpu = h2rec.train(config, tmp_path / "gpu", progress=False)
    assert on_gpu["peak_cuda_mb"] > 0
    # three epochs of Adam amplify rounding differences a little; a device bug moves the loss far more
    assert losses(tmp_path / "gpu") == pytest.approx(losses(tmp_path / "cpu"), rel=1e-3)
    for protocol in ("full", "sampled_20"):
        gpu_hr = on_gpu["test"][protocol]["overall"]["HR@10"]
        assert gpu_hr == pytest.approx(on_cpu["test"][protocol]["overall"]["HR@10"], abs=0.03), protocol

    # resumed on CUDA (model, optimizer, CPU and CUDA generator states): the run goes on as before;
    # approx, not ==, because CUDA's scatter-add gradients may sum in a different order each time
    resumed = crash_then_resume(config, tmp_path / "crashed", 2)
    assert losses(tmp_path / "crashed") == pytest.approx(losses(tmp_path / "gpu"), rel=1e-5)
    assert resumed["test"]["full"]["overall"]["NDCG@10"] == \
        pytest.approx(on_gpu["test"]["full"]["overall"]["NDCG@10"], abs=1e-3)
