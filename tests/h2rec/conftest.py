"""A tiny generated dataset with semantic IDs, shared by the h2rec tests.

Item embeddings are a fixed random projection of each item's bag of words, so items of one
category share words, vectors and therefore leading codes, without loading a text encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import h2rec
import numpy as np
import pytest
import semid
import torch
from h2rec import build_config, training
from h2rec.assemble import build_model, prepare
from h2rec.synthetic import SyntheticConfig, write


def bag_of_words_embeddings(items_path: Path, dim: int = 48) -> tuple[np.ndarray, list[str]]:
    items = [json.loads(line) for line in items_path.read_text().splitlines()]
    vocab: dict[str, int] = {}
    rows = []
    for item in items:
        words = f"{item['title']} {item['category']} {item['brand']}".lower().replace(">", " ").split()
        rows.append([vocab.setdefault(w, len(vocab)) for w in words])
    projection = np.random.default_rng(0).normal(size=(len(vocab), dim))
    matrix = np.stack([projection[r].mean(0) for r in rows]).astype(np.float32)
    return matrix, [item["id"] for item in items]


@pytest.fixture(scope="session", autouse=True)
def dataset_cache(tmp_path_factory):
    """The dataset cache of every test in a folder of the session's own, never the user's cache folder."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("h2rec-cache")
        patch.setenv("H2REC_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """{"items", "interactions", "semid"}: 160 items, 240 users, 3 x 8 RQ codes."""
    root = tmp_path_factory.mktemp("tiny")
    items, interactions = write(root / "data", SyntheticConfig(n_items=160, n_users=240, mean_length=9, seed=3))
    matrix, ids = bag_of_words_embeddings(items)
    np.save(root / "emb.npy", matrix)
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    semid.encode_catalogue(items, root / "semid", embeddings=root / "emb.npy", ids=root / "ids.txt",
                           quantizer=semid.QuantizerConfig(kind="rq", levels=3, codebook_size=8), cache_dir=None)
    return {"items": items, "interactions": interactions, "semid": root / "semid"}


@pytest.fixture
def tiny_config(tiny):
    """``tiny_config(**dotted_overrides)``: a small, fast configuration on the tiny dataset."""
    return lambda **overrides: _tiny_config(tiny, **overrides)


def _tiny_config(tiny, **overrides):
    values = {"data.interactions": str(tiny["interactions"]), "data.semid": str(tiny["semid"]),
              "data.max_len": 20, "model.dim": 32, "train.epochs": 2, "train.batch_size": 64,
              "train.device": "cpu", "eval.batch_size": 256}
    values.update(overrides)
    return build_config(overrides=values)


@pytest.fixture
def small_model(tiny_config):
    """``small_model(kind, **dotted_overrides)``: (config, sids, dataset, model in eval mode) of a small
    model of that kind on the tiny dataset, with 2 attention heads and weights drawn from seed 0."""
    def build(kind: str, **overrides):
        config, sids, ds = prepare(tiny_config(**{"model.kind": kind, "model.num_heads": 2, **overrides}))
        torch.manual_seed(0)
        return config, sids, ds, build_model(config, sids).eval()

    return build


@pytest.fixture
def with_a_future_change():
    """``with_a_future_change(model, ds)``: (outputs, changed outputs, items): the model's outputs on the
    first 10 items of four users, and on the same with every item from position 6 on drawn at random
    (a causal model's outputs before position 6 must not move), and those items."""

    def outputs(model, ds):
        items = torch.from_numpy(np.stack([s[:10] for s in ds.sequences if len(s) >= 10][:4]))
        changed = items.clone()
        changed[:, 6:] = torch.randint(1, model.n_items + 1, changed[:, 6:].shape)
        with torch.no_grad():
            return model(items)[0], model(changed)[0], items

    return outputs


@pytest.fixture
def untimed_epochs():
    """``untimed_epochs(run_folder)``: its metrics.jsonl without the timings, what two runs that saw the
    same training data share exactly."""

    def read(folder: Path) -> list[dict]:
        epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in e.items() if "seconds" not in k} for e in epochs]

    return read


@pytest.fixture
def moved_test_items(tiny):
    """``moved_test_items(folder)``: a copy of the tiny interactions in which every user's test item
    (the last) is another item, to show that training never reads it."""
    def write(folder: Path) -> Path:
        lines = Path(tiny["interactions"]).read_text().splitlines()
        header, rows = lines[0], [line.split(",") for line in lines[1:]]
        last = {}
        for index, (user, _, time) in enumerate(rows):
            if user not in last or int(time) >= int(rows[last[user]][2]):
                last[user] = index
        for index in last.values():
            rows[index][1] = f"i{int(rows[index][1][1:]) % 160 + 1:05d}"
        moved = folder / "moved.csv"
        moved.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
        return moved
    return write


@pytest.fixture
def crash_then_resume(monkeypatch):
    """``crash_then_resume(config, run_dir, epoch)``: trains until the checkpoint of ``epoch`` is
    written, is killed before that epoch's metrics line (the worst moment), then resumes; returns
    the resumed run's results."""

    def run(config, run_dir: Path, epoch: int) -> dict:
        real_save = training.save_checkpoint
        calls = {"n": 0}

        def save_then_crash(*args, **kwargs):
            real_save(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == epoch:
                raise KeyboardInterrupt("simulated kill")

        monkeypatch.setattr(training, "save_checkpoint", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            h2rec.train(config, run_dir, progress=False)
        monkeypatch.setattr(training, "save_checkpoint", real_save)
        assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"] == epoch
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == epoch - 1
        return h2rec.train(config, run_dir, resume=True, progress=False)

    return run


@pytest.fixture
def cli_round_trip(tmp_path):
    """``cli_round_trip(args, kind, backbone)``: the command line end to end for one model kind, as
    every rival's test runs it. ``args``: ``h2rec train`` arguments without ``--epochs`` (one epoch,
    then ``--resume`` to two); then ``evaluate`` (the same test metrics), ``export`` to
    tmp_path/vectors (the exported vectors' inner products are ``score_all``) and ``recommend``
    (its model line names the kind and backbone). Returns (results.json, the loaded recommender,
    every user's scores over the items, the export's layout parts)."""
    import torch
    from click.testing import CliRunner
    from h2rec.cli import main
    from h2rec.evaluate import next_item_states

    def run(args: list[str], kind: str, backbone: str):
        runner, folder = CliRunner(), Path(args[args.index("-o") + 1])
        for epochs in (["--epochs", "1"], ["--epochs", "2", "--resume"]):
            result = runner.invoke(main, [*args, *epochs])
            assert result.exit_code == 0, result.output
        results = json.loads((folder / "results.json").read_text())
        assert results["model"] == kind and results["epochs_run"] == 2 and "sampled_20" in results["test"]

        result = runner.invoke(main, ["evaluate", str(folder), "--device", "cpu", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["test"]["full"] == results["test"]["full"]

        out = tmp_path / "vectors"
        result = runner.invoke(main, ["export", str(folder), "-o", str(out), "--device", "cpu", "--quiet"])
        assert result.exit_code == 0, result.output
        recommender = h2rec.load(folder, "cpu")
        with torch.no_grad():
            state = next_item_states(recommender.model, recommender.dataset.sequences, 20)
            scores = recommender.model.score_all(state)[:, 1:].numpy()
        users, items = np.load(out / "user_vectors.npy"), np.load(out / "item_vectors.npy")
        np.testing.assert_allclose(users @ items.T, scores, rtol=1e-4, atol=1e-4)
        manifest = json.loads((out / "manifest.json").read_text())
        layout = [part["part"] for part in manifest["layout"]]
        equation = {"llmesr": "(L5)", "melt": "(M3)", "ccfrec": "(C6)", "pcrca": "(P4)"}.get(kind, "Eq. 9")
        assert f"score ({equation}" in manifest["score"]  # each kind names its own score's equation

        user = recommender.dataset.user_ids[0]
        result = runner.invoke(main, ["recommend", str(folder), "--user", user, "-k", "5", "--device", "cpu"])
        assert result.exit_code == 0 and f"{kind}/{backbone}" in result.output, result.output
        return results, recommender, scores, layout

    return run
