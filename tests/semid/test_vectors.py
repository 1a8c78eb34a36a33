"""Precomputed embeddings: .npy / .safetensors, id lists, and their bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from semid import SemidError, read_embeddings
from semid.vectors import embeddings_bytes, read_ids


def test_npy_with_ids_file(tmp_path):
    matrix = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    np.save(tmp_path / "emb.npy", matrix)
    (tmp_path / "ids.txt").write_text("a\nb\nc\nd\n", encoding="utf-8")
    stored = read_embeddings(tmp_path / "emb.npy", tmp_path / "ids.txt")
    assert stored.ids == ["a", "b", "c", "d"]
    assert torch.equal(stored.matrix, torch.from_numpy(matrix))


def test_float64_npy_becomes_float32_and_ids_may_be_json(tmp_path):
    np.save(tmp_path / "emb.npy", np.ones((2, 3)))
    (tmp_path / "ids.json").write_text(json.dumps([1, 2]), encoding="utf-8")
    stored = read_embeddings(tmp_path / "emb.npy", tmp_path / "ids.json")
    assert stored.matrix.dtype == torch.float32 and stored.ids == ["1", "2"]


def test_safetensors_written_by_semid_carries_its_ids(tmp_path):
    path = tmp_path / "embeddings.safetensors"
    path.write_bytes(embeddings_bytes(["x", "y"], torch.eye(2), {"model": "m"}))
    stored = read_embeddings(path)
    assert stored.ids == ["x", "y"] and stored.metadata["model"] == "m"


def test_foreign_safetensors_with_one_tensor(tmp_path):
    save_file({"vectors": torch.zeros(3, 2)}, str(tmp_path / "api.safetensors"))
    stored = read_embeddings(tmp_path / "api.safetensors")
    assert stored.ids is None and stored.matrix.shape == (3, 2)


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "an infinite value")])
def test_non_finite_values_name_file_row_and_field(tmp_path, value, word):
    matrix = np.zeros((5, 3), dtype=np.float32)
    matrix[3, 1] = value
    np.save(tmp_path / "emb.npy", matrix)
    with pytest.raises(SemidError) as info:
        read_embeddings(tmp_path / "emb.npy")
    assert str(info.value) == f"{tmp_path / 'emb.npy'}:4: field 'embeddings' row 4 holds {word} (1 bad row(s) in all)"


def test_id_list_that_does_not_match_the_rows(tmp_path):
    np.save(tmp_path / "emb.npy", np.zeros((3, 2), dtype=np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(SemidError) as info:
        read_embeddings(tmp_path / "emb.npy", tmp_path / "ids.txt")
    assert str(info.value).startswith(f"{tmp_path / 'ids.txt'}: field 'ids' lists 2 ids but")
    assert "has 3 embedding rows" in str(info.value)


def test_bad_id_files(tmp_path):
    (tmp_path / "dup.txt").write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(SemidError, match=r"dup\.txt:3: field 'ids' repeats id 'a' \(entries 1 and 3\)"):
        read_ids(tmp_path / "dup.txt")
    (tmp_path / "blank.txt").write_text("a\n\nb\n", encoding="utf-8")
    with pytest.raises(SemidError, match=r"blank\.txt:2: field 'ids' is empty"):
        read_ids(tmp_path / "blank.txt")
    (tmp_path / "bad.txt").write_bytes(b"a\nb\xff\n")
    with pytest.raises(SemidError, match=r"bad\.txt:2: field 'ids' holds invalid UTF-8"):
        read_ids(tmp_path / "bad.txt")


def test_unsupported_or_unreadable_files(tmp_path):
    (tmp_path / "emb.csv").write_text("1,2\n", encoding="utf-8")
    with pytest.raises(SemidError, match="must be a .safetensors or .npy file"):
        read_embeddings(tmp_path / "emb.csv")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SemidError, match=r"broken\.safetensors: cannot be read as safetensors"):
        read_embeddings(tmp_path / "broken.safetensors")
    np.save(tmp_path / "one_d.npy", np.zeros(4, dtype=np.float32))
    with pytest.raises(SemidError, match="must be a non-empty 2-D matrix"):
        read_embeddings(tmp_path / "one_d.npy")
