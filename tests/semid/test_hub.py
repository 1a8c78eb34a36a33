"""save_pretrained / from_pretrained / push_to_hub: a shared copy gives the same codes; a repo id goes
through huggingface_hub (monkeypatched: these tests never touch the network)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
import semid
import torch
from click.testing import CliRunner
from huggingface_hub.utils import HFValidationError, LocalEntryNotFoundError
from semid import QuantizerConfig, SemidError, encode_catalogue
from semid.cli import main

SMALL = QuantizerConfig(kind="rq", levels=3, codebook_size=8, refine_iters=2)


@pytest.fixture()
def out_dir(tmp_path, clustered):
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    encode_catalogue(None, tmp_path / "out", quantizer=SMALL, embeddings=tmp_path / "emb.npy",
                     ids=tmp_path / "ids.txt", dedup=True)
    return tmp_path / "out"


def same(a: semid.SemanticIDs, b: semid.SemanticIDs) -> bool:
    return (a.ids == b.ids and torch.equal(a.codes, b.codes) and a.codebook_sizes == b.codebook_sizes
            and torch.equal(a.embeddings, b.embeddings) and a.dedup == b.dedup)


def test_save_then_load_gives_the_same_codes_quantizer_and_a_model_card(tmp_path, out_dir):
    original = semid.load(out_dir)
    saved = original.save_pretrained(tmp_path / "shared")
    copy = semid.from_pretrained(saved)
    assert same(original, copy)
    x = original.embeddings[:20]
    assert torch.equal(semid.load_quantizer(out_dir).encode(x), semid.load_quantizer(saved).encode(x))
    card = (saved / "README.md").read_text()
    stats = original.stats["collisions"]
    for expected in ("300 items", "3 x 8 + a dedup level", f"{100 * stats['collision_rate']:.2f}%",
                     f"{stats['unique_tuples']:,} unique tuples", "semid.from_pretrained(", "rq"):
        assert expected in card, expected
    # self-contained and without local paths
    assert str(tmp_path) not in (saved / "stats.json").read_text()
    assert json.loads((saved / "stats.json").read_text())["source"]["embeddings"] == "emb.npy"


def test_a_repo_id_is_downloaded_with_snapshot_download(tmp_path, out_dir, monkeypatch):
    saved = semid.load(out_dir).save_pretrained(tmp_path / "shared", repo_id="someone/beauty-sids")
    assert 'semid.from_pretrained("someone/beauty-sids")' in (saved / "README.md").read_text()
    calls = []

    def fake_download(repo_id, revision=None, token=None, **kwargs):
        calls.append((repo_id, revision))
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    copy = semid.from_pretrained("someone/beauty-sids", revision="v1")
    assert calls == [("someone/beauty-sids", "v1")] and same(semid.load(out_dir), copy)


@pytest.mark.parametrize("error, expected", [
    (HFValidationError("Repo id must use alphanumeric chars"), "not a Hugging Face Hub repo id"),
    (LocalEntryNotFoundError("offline and not in the cache"), "cannot be downloaded from the Hugging Face Hub"),
])
def test_a_repo_that_cannot_be_had_is_a_semid_error(monkeypatch, error, expected):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(SemidError, match=expected):
        semid.from_pretrained("no-such-folder/here")


def test_save_refuses_an_out_dir_reencoded_since_it_was_loaded(tmp_path, out_dir):
    loaded = semid.load(out_dir)
    encode_catalogue(None, out_dir, quantizer=QuantizerConfig(kind="rq", levels=2, codebook_size=4, refine_iters=1),
                     embeddings=tmp_path / "emb.npy", ids=tmp_path / "ids.txt")
    with pytest.raises(SemidError, match="changed since it was loaded"):
        loaded.save_pretrained(tmp_path / "shared")
    assert not (tmp_path / "shared").exists()


@pytest.fixture()
def fake_hub(monkeypatch):
    """create_repo and upload_folder replaced: records what would have been uploaded."""
    record: dict = {}

    def create_repo(repo_id, token=None, private=None, exist_ok=False, **kwargs):
        record["created"] = (repo_id, token, private, exist_ok)

    def upload_folder(*, repo_id, folder_path, token=None, ignore_patterns=None, **kwargs):
        record["files"] = sorted(p.relative_to(folder_path).as_posix() for p in folder_path.rglob("*") if p.is_file())
        record["ignore"] = ignore_patterns
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return record


def test_push_uploads_a_saved_copy_only_when_asked(out_dir, fake_hub):
    url = semid.load(out_dir).push_to_hub("someone/sids", token="hf_test", private=True)
    assert url == "https://huggingface.co/someone/sids/commit/abc"
    assert fake_hub["created"] == ("someone/sids", "hf_test", True, True)
    assert {"README.md", "semid.safetensors", "quantizer.safetensors", "stats.json"} <= set(fake_hub["files"])
    assert ".*" in fake_hub["ignore"]  # the lock file and staging files stay home


def test_cli_push(out_dir, fake_hub):
    runner = CliRunner()
    result = runner.invoke(main, ["push", str(out_dir), "someone/sids", "--token", "hf_test"])
    assert result.exit_code == 0, result.output
    assert "pushed: https://huggingface.co/someone/sids/commit/abc" in result.output
    for args, expected in ((["someone/sids"], "no Hugging Face token"),
                           (["bad repo!", "--token", "t"], "repo id 'bad repo!' is not valid")):
        fake_hub.clear()
        result = runner.invoke(main, ["push", str(out_dir), *args])
        assert result.exit_code == 2 and expected in result.output and not fake_hub, result.output
