"""`torchrun --nproc_per_node 2 -m h2rec train`: two CPU processes (gloo) train the run one process
trains with the same global batch, and a run resumed under torchrun ends as an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h2rec
import pytest
import torch
from h2rec import assemble, ddp, training
from h2rec.distributed import Group, Shard, check_batch_size, main_process
from h2rec.errors import H2RecError

# Dropout is the one draw that is each process's own (h2rec.distributed); without it two processes
# compute one process's batches. 4 optimizer steps an epoch.
SETTINGS = {"model": {"dropout": 0.0}, "train": {"epochs": 2, "batch_size": 64, "ca_max_items": 64}}

# Under torchrun: the process group is the script's, kept across three runs: an uninterrupted one,
# one stopped by rank 0 right after the checkpoint of epoch 1, and its resumption. Processes other
# than rank 0 must not open, read or write the run folder. DDP finds the unused parameters itself
# here, as for a model kind that ddp.idle_parameters does not describe.
RESUMING = """
import json, sys
import torch.distributed as dist
import h2rec
from h2rec import ddp, training
from h2rec.errors import H2RecError

config, root = h2rec.build_config(json.loads(sys.argv[1])), sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()
ddp.idle_parameters = lambda model, cfg: None
if rank:
    def refuse(*args, **kwargs):
        raise AssertionError("a process other than rank 0 touched the run folder")
    for name in ("one_writer", "save_checkpoint", "load_checkpoint", "remove_leftovers", "write_json",
                 "write_text", "read_json", "load_weights", "best_weights_path"):
        setattr(training, name, refuse)
h2rec.train(config, f"{root}/whole", progress=False)

class Killed(Exception):
    pass

saving = training.save_checkpoint
def save_then_stop(*args, **kwargs):
    saving(*args, **kwargs)
    raise Killed("stopped after the checkpoint of epoch 1")
if rank == 0:
    training.save_checkpoint = save_then_stop
try:
    h2rec.train(config, f"{root}/resumed", progress=False)
except (Killed, H2RecError) as error:
    print(f"rank {rank}: {error}")
if rank == 0:
    training.save_checkpoint = saving
h2rec.train(config, f"{root}/resumed", resume=True, progress=False)
dist.destroy_process_group()
"""


def torchrun(*command: str) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command]
    result = subprocess.run(launch, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def metrics(run_dir) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_seconds")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def scores(run_dir) -> dict[str, float]:
    """Every validation and test metric of results.json, flat: {"test/full/tail/NDCG@10": ...}."""
    results = json.loads((run_dir / "results.json").read_text())
    return {f"{split}/{protocol}/{group}/{name}": value
            for split in ("valid", "test") for protocol, groups in results[split].items()
            for group, values in groups.items() for name, value in values.items()}


@pytest.fixture
def settings(tiny):
    return {**SETTINGS, "data": {"interactions": str(tiny["interactions"]), "semid": str(tiny["semid"]),
                                 "max_len": 20},
            "train": {**SETTINGS["train"], "device": "cpu"}, "eval": {"batch_size": 64}}


def test_two_processes_follow_one_process(settings, tmp_path):
    one = h2rec.train(h2rec.build_config(settings), tmp_path / "one", progress=False)
    (tmp_path / "config.json").write_text(json.dumps(settings))
    torchrun("-m", "h2rec", "train", "--config", str(tmp_path / "config.json"), "-o", str(tmp_path / "two"), "--quiet")
    one_epochs, two_epochs = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [set(epoch) for epoch in two_epochs] == [set(epoch) for epoch in one_epochs]
    assert {"loss_rec", "loss_ca", "loss_msg"} <= set(one_epochs[0])  # the gathered L_CA and L_MSG too
    for a, b in zip(one_epochs, two_epochs):
        assert b == pytest.approx(a, rel=1e-4)  # losses, learning rate, validation metrics
    assert scores(tmp_path / "two") == pytest.approx(scores(tmp_path / "one"), rel=1e-5)
    assert one["best_epoch"] == json.loads((tmp_path / "two/results.json").read_text())["best_epoch"]
    assert json.loads((tmp_path / "two/results.json").read_text())["processes"] == 2
    files = {run: sorted(p.name for p in (tmp_path / run).rglob("*")) for run in ("one", "two")}
    assert files["two"] == files["one"]  # rank 0 wrote the files one process writes


def test_resumed_under_torchrun_ends_as_an_uninterrupted_run(settings, tmp_path):
    settings = {**settings, "model": {"dropout": 0.2}}  # each process's own dropout stream, redrawn on resume
    # with a weight average: rank 0 restores it, and the others must take it from rank 0
    settings["train"] = {**settings["train"], "epochs": 3, "ema_decay": 0.5}
    script = tmp_path / "resuming.py"
    script.write_text(RESUMING, encoding="utf-8")
    out = torchrun(str(script), json.dumps(settings), str(tmp_path))
    assert "rank 0: stopped after the checkpoint of epoch 1" in out.stdout
    assert "rank 1: rank 0 stopped: stopped after the checkpoint of epoch 1" in out.stdout
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "whole")
    assert scores(tmp_path / "resumed") == scores(tmp_path / "whole")


# ----------------------------------------------------------------------------- the parts, in one process
def test_a_batch_that_two_processes_cannot_share_is_refused():
    check_batch_size(64, Group(rank=0, world_size=2))
    with pytest.raises(H2RecError, match="--batch-size"):
        check_batch_size(63, Group(rank=1, world_size=2))
    check_batch_size(63, Group())  # one process: any size


def test_rank_0_is_the_main_process(monkeypatch):
    assert main_process()
    monkeypatch.setenv("RANK", "1")
    assert not main_process()


def test_shards_split_a_batch_and_a_short_batch_leaves_ghosts():
    shards = [Shard(Group(rank=rank, world_size=3)) for rank in range(3)]
    rows = [shard.rows(7) for shard in shards]
    assert [r.tolist() for r, _ in rows] == [[0, 3, 6], [1, 4], [2, 5]] and not any(g for _, g in rows)
    assert shards[2].rows(2) == (torch.tensor([0]), True)  # no row of its own: row 0, weighted 0
    assert [h.tolist() for h in shards[0].holders(torch.tensor([4, 0, 5, 3]))] == [[1, 3], [0], [2]]


@pytest.mark.parametrize("overrides", [
    {}, {"train.gamma": 0.0}, {"model.kind": "sid"}, {"model.kind": "hid"}, {"model.backbone": "bert4rec"},
    {"model.kind": "llmesr"}, {"model.kind": "llmesr", "model.backbone": "bert4rec"}])
def test_idle_parameters_are_those_a_step_leaves_without_gradient(tiny_config, overrides):
    """What DDP is told no step uses is what one process's step leaves without a gradient."""
    config, sids, ds = assemble.prepare(tiny_config(**overrides))
    model = assemble.build_model(config, sids)
    windows = training.training_windows(ds.train, config.data.max_len, model.causal, "sliding", None)
    distill = training.build_distillation(config, ds, model)
    owners = None if distill is None else distill.owners(windows, model.causal, "sliding", None, None)[:32]
    parts = training.training_step(model, windows.rows[:32], config.train, torch.Generator().manual_seed(0),
                                   windows.first_target[:32], None, distill, owners)
    parts["total"].backward()
    without = {name for name, p in model.named_parameters() if p.grad is None}
    assert ddp.idle_parameters(model, config.train) == without
