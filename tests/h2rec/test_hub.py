"""h2rec save_pretrained / from_pretrained / push: the shared folder recommends exactly as the run
folder does, for a history of item ids; a repo id goes through huggingface_hub (monkeypatched:
these tests never touch the network)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h2rec
import huggingface_hub
import pytest
import torch
from click.testing import CliRunner
from h2rec import H2RecError, build_config
from h2rec.cli import main
from h2rec.evaluate import model_inputs


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory) -> Path:
    """A one-epoch run on the tiny dataset."""
    config = build_config(overrides={
        "data.interactions": str(tiny["interactions"]), "data.semid": str(tiny["semid"]), "data.max_len": 20,
        "model.dim": 32, "train.epochs": 1, "train.batch_size": 64, "train.device": "cpu", "eval.batch_size": 256,
        "eval.negatives": 20})
    run_dir = tmp_path_factory.mktemp("hub") / "run"
    h2rec.train(config, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def saved(run) -> Path:
    return h2rec.load(run, "cpu").save_pretrained(run.parent / "shared", repo_id="someone/tiny-h2rec")


def history_ids(recommender: h2rec.Recommender, row: int) -> list[str]:
    return [recommender.dataset.item_ids[i - 1] for i in recommender.dataset.sequences[row].tolist()]


def test_the_shared_folder_scores_and_recommends_as_the_run(run, saved):
    original = h2rec.load(run, "cpu")
    for pretrained in (h2rec.from_pretrained(saved, device="cpu"), h2rec.from_pretrained(run, device="cpu")):
        for row in (0, 7, 100):
            user, history = original.dataset.user_ids[row], history_ids(original, row)
            assert pretrained.recommend(history, k=10) == original.recommend(user, k=10)
            assert pretrained.recommend(history, 5, False) == original.recommend(user, 5, exclude_history=False)
            with torch.no_grad():
                encoded, _ = original.model(model_inputs(original.model, [original.dataset.sequences[row]],
                                                         original.config.data.max_len))
                expected = original.model.score_all(encoded.last())[0]
            assert torch.equal(pretrained.scores(history), expected)


def test_the_folder_is_self_contained_and_holds_no_local_paths(run, saved, tiny):
    names = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()}
    assert {"model.safetensors", "config.json", "items.json", "results.json", "data_stats.json", "README.md",
            "semid/semid.safetensors", "semid/README.md"} <= names
    config = json.loads((saved / "config.json").read_text())
    assert config["data"]["semid"] == "semid" and config["data"]["interactions"] == tiny["interactions"].name
    assert json.loads((saved / "items.json").read_text())["item_ids"] == h2rec.load(run).dataset.item_ids
    for name in ("config.json", "items.json", "results.json", "data_stats.json", "README.md", "semid/stats.json"):
        text = (saved / name).read_text()
        assert str(run.parent) not in text and str(tiny["semid"].parent) not in text, name
    assert "user_ids" not in (saved / "items.json").read_text()


def test_the_model_card_names_the_model_data_and_test_metrics(run, saved):
    card = (saved / "README.md").read_text()
    results = json.loads((run / "results.json").read_text())
    for protocol in ("full", "full_unseen", "sampled_20"):
        assert f"`{protocol}`" in card and results["protocols"][protocol] in card
        assert f"{results['test'][protocol]['overall']['NDCG@10']:.4f}" in card
    for expected in ("h2rec / sasrec", "160 items", "| users | 240 |", 'h2rec.from_pretrained("someone/tiny-h2rec")'):
        assert expected in card, expected


def test_a_repo_id_is_downloaded_with_snapshot_download(run, saved, monkeypatch):
    calls = []

    def fake_download(repo_id, revision=None, token=None, **kwargs):
        calls.append(repo_id)
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    pretrained = h2rec.from_pretrained("someone/tiny-h2rec", device="cpu")
    original = h2rec.load(run, "cpu")
    assert calls == ["someone/tiny-h2rec"]
    assert pretrained.recommend(history_ids(original, 3)) == original.recommend(original.dataset.user_ids[3])


def test_mistakes_are_h2rec_errors(run, saved, tmp_path):
    pretrained = h2rec.from_pretrained(saved, device="cpu")
    with pytest.raises(H2RecError, match="not in the model's catalogue"):
        pretrained.recommend(["no-such-item"])
    with pytest.raises(H2RecError, match="non-empty list of item ids"):
        pretrained.recommend([])
    with pytest.raises(H2RecError, match="is a run folder"):
        h2rec.load(run, "cpu").save_pretrained(run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(H2RecError, match="not a folder of h2rec's save_pretrained"):
        h2rec.from_pretrained(tmp_path / "empty")


def test_cli_push_uploads_only_when_called_and_exits_2_without_a_token(run, monkeypatch):
    uploaded: dict = {}

    def upload_folder(*, repo_id, folder_path, **kwargs):
        uploaded["files"] = sorted(p.relative_to(folder_path).as_posix() for p in folder_path.rglob("*") if p.is_file())
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["push", str(run), "someone/tiny-h2rec"])
    assert result.exit_code == 2 and "no Hugging Face token" in result.output and not uploaded
    result = runner.invoke(main, ["push", str(run), "someone/tiny-h2rec", "--token", "hf_test"])
    assert result.exit_code == 0, result.output
    assert "pushed: https://huggingface.co/someone/tiny-h2rec/commit/abc" in result.output
    assert {"model.safetensors", "README.md", "semid/semid.safetensors"} <= set(uploaded["files"])
