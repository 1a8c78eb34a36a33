"""train.compile: compiled blocks train as the eager ones do; a run may switch it on resume."""

from __future__ import annotations

import functools
import json

import h2rec
import torch
from h2rec import training
from h2rec.compiled import compile_blocks
from h2rec.model import GranularityFusion, MultiGranularityCrossAttention
from srs_backbones.layers import TransformerBlock


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss_total"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_switched_to_compiled_blocks_on_resume_follows_the_eager_run(tiny_config, tmp_path, monkeypatch):
    # Dynamo traces our modules and AOT autograd their backward, as in a real run; inductor's code
    # generation, minutes of C++ compiling on a cold CPU cache, is torch's and is left to gpu.sh's CUDA run
    monkeypatch.setattr(training, "compile_blocks", functools.partial(compile_blocks, backend="aot_eager"))
    # no dropout: compiled code may draw its own random numbers, so masks (not the arithmetic) would differ
    options = {"model.kind": "h2rec", "model.dropout": 0.0, "train.epochs": 2, "data.max_len": 10}
    eager = h2rec.train(tiny_config(**options), tmp_path / "eager", progress=False)
    h2rec.train(tiny_config(**{**options, "train.epochs": 1}), tmp_path / "switched", progress=False)
    switched = h2rec.train(tiny_config(**{**options, "train.compile": True}), tmp_path / "switched", resume=True,
                           progress=False)
    assert abs(losses(tmp_path / "switched")[1] - losses(tmp_path / "eager")[1]) < 1e-4
    for split in ("valid", "test"):  # the best weights, evaluated by the compiled model
        a, b = switched[split]["full"]["overall"]["NDCG@10"], eager[split]["full"]["overall"]["NDCG@10"]
        assert abs(a - b) < 1e-3, (split, a, b)
    config = json.loads((tmp_path / "switched" / "config.json").read_text())
    assert config["resumed_with_changes"] == [{"at_epoch": 1, "train.epochs": [1, 2], "train.compile": [False, True]}]


def test_compile_blocks_compiles_the_blocks_in_place_and_a_copy_is_eager(small_model):
    import copy

    _, _, _, model = small_model("h2rec")
    names = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = (TransformerBlock, GranularityFusion, MultiGranularityCrossAttention)
    expected = sum(isinstance(m, kinds) for m in model.modules())
    assert compile_blocks(model) == expected > 0
    state = model.state_dict()
    assert set(names) == set(state) and all(torch.equal(names[k], v) for k, v in state.items())
    assert all(m._compiled_call_impl is not None for m in model.modules() if isinstance(m, kinds))
    assert all(m._compiled_call_impl is None for m in copy.deepcopy(model).modules() if isinstance(m, kinds))
