"""`h2rec export RUN -o DIR`: user and item vectors whose inner product is the model's score (Eq. 9),
for every model kind and backbone; the faiss index ranks as the model does; DIR is written whole."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h2rec
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from h2rec import build_config
from h2rec.assemble import build_model, prepare
from h2rec.cli import main
from h2rec.evaluate import next_item_states

K = 10
RUNS = [("hid", "sasrec"), ("sid", "gru4rec"), ("h2rec", "sasrec"), ("h2rec", "bert4rec")]


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "bert4rec"])
@pytest.mark.parametrize("kind, options", [
    ("hid", {}), ("sid", {}), ("h2rec", {}),
    ("h2rec", {"model.candidate_weights": "uniform"}),  # level weights the same for every user
    ("h2rec", {"model.fusion": False}),  # "w/o FN": alpha fixed at 1/L
])
def test_the_vectors_inner_product_is_the_models_score(tiny_config, kind, options, backbone):
    config, sids, ds = prepare(tiny_config(**{"model.kind": kind, "model.backbone": backbone, **options}))
    torch.manual_seed(0)
    model = build_model(config, sids).eval()
    with torch.no_grad():
        state = next_item_states(model, ds.sequences[:32], config.data.max_len)
        users, items = model.user_vectors(state), model.item_vectors()
        torch.testing.assert_close(users @ items.T, model.score_all(state)[:, 1:], rtol=1e-5, atol=1e-5)
    d = config.model.dim
    hid_part = 0 if kind == "sid" else d
    # one block per level only where the weights follow the user (the fusion network's intent)
    sid_part = 0 if kind == "hid" else d * (model.n_levels if model.levels_follow_the_user else 1)
    assert model.levels_follow_the_user == (kind != "hid" and not options)
    assert users.shape[1] == items.shape[1] == hid_part + sid_part


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """One-epoch runs of each model kind (and BERT4Rec, whose state comes from a mask token)."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind, backbone in RUNS:
        config = build_config(overrides={
            "data.interactions": str(tiny["interactions"]), "data.semid": str(tiny["semid"]), "data.max_len": 20,
            "model.dim": 32, "model.kind": kind, "model.backbone": backbone, "model.num_heads": 2,
            "train.epochs": 1, "train.batch_size": 64, "train.device": "cpu", "eval.batch_size": 256})
        out[(kind, backbone)] = root / f"{kind}-{backbone}"
        h2rec.train(config, out[(kind, backbone)], progress=False)
    return out


def export(run: Path, out: Path, *extra: str):
    # a small batch, so that the users cross batch borders
    return CliRunner().invoke(main, ["export", str(run), "-o", str(out), "--batch-size", "50", "--device", "cpu",
                                     "--quiet", *extra])


def model_scores(run: Path) -> tuple[h2rec.Recommender, np.ndarray]:
    """Every user's scores of items 1..n from the run's model itself, (U, n)."""
    recommender = h2rec.load(run, "cpu")
    ds = recommender.dataset
    with torch.no_grad():
        state = next_item_states(recommender.model, ds.sequences, recommender.config.data.max_len)
        return recommender, recommender.model.score_all(state)[:, 1:].numpy()


def assert_same_top_k(top: np.ndarray, scores: np.ndarray) -> None:
    """``top`` (U, K) item columns are the model's top K: their model scores are its K best (a tie may
    swap two items, never change a score)."""
    best = -np.sort(-scores, axis=1)[:, :K]
    np.testing.assert_allclose(np.take_along_axis(scores, top, 1), best, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, backbone", RUNS)
def test_exported_vectors_rank_and_score_as_the_model(runs, tmp_path, kind, backbone):
    out = tmp_path / "export"
    result = export(runs[(kind, backbone)], out)
    assert result.exit_code == 0, result.output
    recommender, scores = model_scores(runs[(kind, backbone)])
    users, items = np.load(out / "user_vectors.npy"), np.load(out / "item_vectors.npy")
    assert users.dtype == items.dtype == np.float32
    assert json.loads((out / "user_ids.json").read_text()) == recommender.dataset.user_ids
    assert json.loads((out / "item_ids.json").read_text()) == recommender.dataset.item_ids
    dot = users @ items.T
    np.testing.assert_allclose(dot, scores, rtol=1e-5, atol=1e-5)
    top = np.argsort(-dot, axis=1, kind="stable")[:, :K]
    assert_same_top_k(top, scores)
    # the single-user recommend (its own items allowed) names the same items for a sample of users
    item_ids = recommender.dataset.item_ids
    for row, user in list(enumerate(recommender.dataset.user_ids))[::60]:
        single = recommender.recommend(user, k=K, exclude_history=False)
        np.testing.assert_allclose([s["score"] for s in single], dot[row, top[row]], atol=1e-4)
        assert {s["item_id"] for s in single} == {item_ids[i] for i in top[row]}

    manifest = json.loads((out / "manifest.json").read_text())
    data = json.loads((runs[(kind, backbone)] / "data.json").read_text())
    assert manifest["model"]["kind"] == kind and manifest["model"]["backbone"] == backbone
    equation = {"h2rec": "Eq. 9", "hid": "Eq. 9", "sid": "Eq. 9", "llmesr": "(L5)", "melt": "(M3)",
                "ccfrec": "(C6)", "pcrca": "(P4)"}[kind]
    assert f"score ({equation}" in manifest["score"]  # each kind names its own score's equation
    assert manifest["dimension"] == items.shape[1] == manifest["layout"][-1]["columns"][1]
    assert manifest["data"]["interactions"]["sha256"] == data["interactions"]["sha256"]
    assert manifest["data"]["semid"]["sha256"] == data["semid"]["sha256"]
    assert manifest["checkpoint"].startswith("best-") and manifest["users"] == len(users)


def test_the_faiss_index_returns_the_models_top_k(runs, tmp_path):
    faiss = pytest.importorskip("faiss")
    run = runs[("h2rec", "sasrec")]
    out = tmp_path / "export"
    assert export(run, out).exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["files"]["faiss_index"] == "items.faiss"
    index = faiss.read_index(str(out / "items.faiss"))
    values, top = index.search(np.load(out / "user_vectors.npy"), K)
    _, scores = model_scores(run)
    assert_same_top_k(top, scores)
    np.testing.assert_allclose(values, -np.sort(-scores, axis=1)[:, :K], rtol=1e-5, atol=1e-5)


def test_without_faiss_the_export_has_no_index(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    out = tmp_path / "export"
    assert export(runs[("hid", "sasrec")], out).exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["files"]["faiss_index"] is None
    assert sorted(p.name for p in out.iterdir()) == ["item_ids.json", "item_vectors.npy", "manifest.json",
                                                     "user_ids.json", "user_vectors.npy"]


def test_a_failed_export_leaves_the_folder_as_it_was(runs, tmp_path, monkeypatch):
    run = runs[("hid", "sasrec")]
    out = tmp_path / "export"
    assert export(run, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from h2rec import export as export_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(export_module, "write_faiss_index", killed)
    export(run, out, "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left


@pytest.mark.parametrize("case", ["export_exists", "other_files", "a_file"])
def test_bad_output_exits_2_with_a_clear_message(runs, tmp_path, case):
    run = runs[("hid", "sasrec")]
    out = tmp_path / "export"
    if case == "export_exists":
        assert export(run, out).exit_code == 0
        expected = "holds an earlier export; pass --overwrite"
    elif case == "other_files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        expected = "the folder holds files and is not an h2rec export"
    else:
        out.write_text("mine")
        expected = "is a file"  # click's own check of -o
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = export(run, out)
    assert result.exit_code == 2, result.output
    assert str(out) in result.output and expected in result.output and "Traceback" not in result.output
    if case != "a_file":
        assert f"-o {out}: {expected}" in result.output  # names the flag
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if case == "export_exists":
        assert export(run, out, "--overwrite").exit_code == 0
