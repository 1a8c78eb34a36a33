"""Where the embedding cache lands: --cache-dir, else $SEMID_CACHE_DIR, else the user cache folder
(platformdirs), never the working directory; --no-cache writes none. The encoder is faked."""

from __future__ import annotations

import json
from pathlib import Path

import platformdirs
import pytest
import semid.embed
import torch
from click.testing import CliRunner
from semid.cli import main
from semid.embed import CACHE_ENV, default_cache_dir


class FakeEmbedder:
    """Stands in for the text encoder: no model is loaded."""

    def __init__(self, config):
        pass

    def embed(self, texts, progress=False):
        return torch.arange(len(texts) * 4, dtype=torch.float32).reshape(len(texts), 4)


@pytest.fixture()
def places(tmp_path, monkeypatch):
    """A working directory, a user cache folder standing in for platformdirs', an items file elsewhere."""
    cwd, user = tmp_path / "cwd", tmp_path / "user-cache"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *args, **kwargs: str(user))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setattr(semid.embed, "Embedder", FakeEmbedder)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"i{i}", "title": f"item {i}"}) + "\n" for i in range(5)))
    return {"cwd": cwd, "user": user, "items": items, "root": tmp_path}


def embed(places, *options: str):
    out = places["root"] / "out"
    result = CliRunner().invoke(main, ["embed", str(places["items"]), "-o", str(out), "--model", "fake/encoder",
                                       *options])
    assert result.exit_code == 0, result.output
    return result


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []


def test_the_default_is_the_user_cache_folder_and_the_variable_wins_over_it(places, monkeypatch):
    assert default_cache_dir() == places["user"]
    monkeypatch.setenv(CACHE_ENV, str(places["root"] / "from-env"))
    assert default_cache_dir() == places["root"] / "from-env"
    monkeypatch.setenv(CACHE_ENV, "")  # empty: as if unset
    assert default_cache_dir() == places["user"]


def test_encode_caches_in_the_user_folder_and_writes_nothing_in_the_working_directory(places):
    embed(places)
    assert len(cache_files(places["user"])) == 1
    assert list(places["cwd"].iterdir()) == []


def test_the_variable_wins_over_the_user_folder_and_the_flag_wins_over_both(places, monkeypatch):
    env, flag = places["root"] / "env-cache", places["root"] / "flag-cache"
    monkeypatch.setenv(CACHE_ENV, str(env))
    embed(places)
    assert len(cache_files(env)) == 1 and cache_files(places["user"]) == []
    embed(places, "--cache-dir", str(flag))
    assert len(cache_files(flag)) == 1 and len(cache_files(env)) == 1 and cache_files(places["user"]) == []
    assert list(places["cwd"].iterdir()) == []


def test_no_cache_writes_no_cache_anywhere(places, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(places["root"] / "env-cache"))
    embed(places, "--no-cache")
    assert not (places["root"] / "env-cache").exists() and not places["user"].exists()
    assert list(places["cwd"].iterdir()) == []


def test_the_library_default_is_the_user_folder_too(places):
    catalogue = semid.pipeline.embed_catalogue(places["items"], embed=semid.EmbedConfig(model="fake/encoder"))
    assert catalogue.embeddings.shape == (5, 4)
    assert len(cache_files(places["user"])) == 1 and list(places["cwd"].iterdir()) == []
