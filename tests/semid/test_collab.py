"""`semid encode --collab`: collaborative item vectors quantized together with the text embeddings
(semid.collab): alignment by id, cold items, weight 0, errors, determinism, stats.json."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from semid import QuantizerConfig, encode_catalogue, load, load_quantizer
from semid.cli import main
from semid.collab import align, fuse, read_collab
from semid.config import CollabConfig

FAST = QuantizerConfig(kind="rqvae", levels=3, codebook_size=8, epochs=2, batch_size=64,
                       hidden_dims=(32, 16), latent_dim=8)
CODE_FILES = ("semantic_ids.jsonl", "semid.safetensors", "quantizer.safetensors", "quantizer.json",
              "embeddings.safetensors")


@pytest.fixture()
def behaviour() -> torch.Tensor:
    """300 x 16 collaborative vectors around 12 centres, grouped unlike the text (item i // 25, not i % 12)."""
    generator = torch.Generator().manual_seed(5)
    centres = torch.randn(12, 16, generator=generator)
    return centres[(torch.arange(300) // 25) % 12] + 0.1 * torch.randn(300, 16, generator=generator)


@pytest.fixture()
def text(tmp_path, clustered):
    """The text embeddings: clustered.npy + ids.txt (ids r0..r299)."""
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    return tmp_path / "emb.npy", tmp_path / "ids.txt"


def write_export(folder, matrix: torch.Tensor, ids: list[str], layout=("hid",)):
    """What `h2rec export` writes, as far as semid reads it."""
    folder.mkdir()
    np.save(folder / "item_vectors.npy", matrix.numpy())
    (folder / "item_ids.json").write_text(json.dumps(ids), encoding="utf-8")
    parts = [{"part": part, "columns": [0, 16]} for part in layout]
    (folder / "manifest.json").write_text(json.dumps({"format": "h2rec-export/1", "layout": parts}), encoding="utf-8")
    return folder


def encode(tmp_path, text, name, collab=None, quantizer=FAST):
    emb, ids = text
    return encode_catalogue(None, tmp_path / name, quantizer=quantizer, embeddings=emb, ids=ids, collab=collab)


def code_bytes(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in CODE_FILES}


def purity(codes: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of items whose code's most common label is their own."""
    return sum(int(torch.bincount(labels[codes == c]).max()) for c in codes.unique()) / len(codes)


def test_rows_are_matched_by_id_not_by_position(tmp_path, text, clustered, behaviour):
    ids = [f"r{i}" for i in range(300)]
    in_order = write_export(tmp_path / "in_order", behaviour, ids)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    shuffled = write_export(tmp_path / "shuffled", behaviour[order], [ids[i] for i in order.tolist()])
    a = encode(tmp_path, text, "a", CollabConfig(in_order))
    b = encode(tmp_path, text, "b", CollabConfig(shuffled))
    assert code_bytes(tmp_path / "a") == code_bytes(tmp_path / "b") and torch.equal(a.codes, b.codes)
    assert a.stats["collab"]["sha256"] != b.stats["collab"]["sha256"]  # two files, one set of codes
    # the fused input: row i holds item i's text and its own behaviour vector, both at unit norm
    vectors = read_collab(CollabConfig(shuffled, weight=0.5))
    fused = fuse(clustered, vectors, align(vectors, ids, "catalogue"), 0.5, tmp_path)
    assert fused.shape == (300, 48 + 16)
    torch.testing.assert_close(fused[:, :48], torch.nn.functional.normalize(clustered, dim=1))
    torch.testing.assert_close(fused[:, 48:], 0.5 * torch.nn.functional.normalize(behaviour, dim=1))


def test_the_saved_quantizer_takes_the_fused_rows_and_the_folder_keeps_the_text(tmp_path, text, clustered, behaviour):
    ids = [f"r{i}" for i in range(300)]
    export = write_export(tmp_path / "export", behaviour, ids)
    s = encode(tmp_path, text, "out", CollabConfig(export))
    assert torch.equal(s.embeddings, clustered)  # what h2rec's PCA initialisation reads: text, not the fusion
    vectors = read_collab(CollabConfig(export))
    fused = fuse(clustered, vectors, align(vectors, ids, "catalogue"), 1.0, tmp_path)
    assert torch.equal(load_quantizer(tmp_path / "out").encode(fused), s.codes)
    assert s.codebooks[0].shape == (8, 8)  # codebooks live in the rqvae's latent space, as without --collab
    assert not [p.name for p in (tmp_path / "out").iterdir() if "collab" in p.name]  # the temp input is gone


def test_the_weight_moves_the_codes_from_meaning_to_behaviour(tmp_path, text, behaviour):
    text_groups, behaviour_groups = torch.arange(300) % 12, (torch.arange(300) // 25) % 12
    export = write_export(tmp_path / "export", behaviour, [f"r{i}" for i in range(300)])
    one_level = QuantizerConfig(kind="rqkmeans", levels=1, codebook_size=12)
    by_text = encode(tmp_path, text, "w0", CollabConfig(export, weight=0.0), one_level).codes[:, 0]
    by_behaviour = encode(tmp_path, text, "w10", CollabConfig(export, weight=10.0), one_level).codes[:, 0]
    assert purity(by_text, text_groups) > 0.9 and purity(by_text, behaviour_groups) < 0.3
    assert purity(by_behaviour, behaviour_groups) > 0.9 and purity(by_behaviour, text_groups) < 0.3


def test_weight_zero_gives_the_text_only_codes_exactly(tmp_path, text, behaviour):
    export = write_export(tmp_path / "export", behaviour[:250], [f"r{i}" for i in range(250)])
    plain = encode(tmp_path, text, "plain")
    zero = encode(tmp_path, text, "zero", CollabConfig(export, weight=0.0))
    assert code_bytes(tmp_path / "plain") == code_bytes(tmp_path / "zero")
    assert torch.equal(plain.codes, zero.codes)
    assert zero.stats["collab"]["weight"] == 0.0 and zero.stats["collab"]["quantizer_input_dim"] == 48
    assert zero.stats["collab"]["cold_items"] == 50 and plain.stats["collab"] is None
    # and a weight above zero does change them
    assert not torch.equal(encode(tmp_path, text, "one", CollabConfig(export)).codes, plain.codes)


def test_cold_items_get_zeros_and_are_counted(tmp_path, text, clustered, behaviour):
    ids = [f"r{i}" for i in range(300)]
    warm = [i for i in range(300) if i % 10]  # every tenth item has no interaction: 30 cold items
    export = write_export(tmp_path / "export", behaviour[warm], [ids[i] for i in warm])
    s = encode(tmp_path, text, "out", CollabConfig(export, weight=2.0))
    collab = s.stats["collab"]
    assert (collab["covered_items"], collab["cold_items"], collab["coverage"]) == (270, 30, 0.9)
    assert any("30 of 300 item(s) have no collaborative vector (cold items)" in w for w in s.stats["warnings"])
    assert s.codes.shape == (300, 3)  # every item still gets codes
    vectors = read_collab(CollabConfig(export))
    alignment = align(vectors, ids, "catalogue")
    fused = fuse(clustered, vectors, alignment, 2.0, tmp_path)
    cold = torch.tensor([i % 10 == 0 for i in range(300)])
    assert torch.equal(alignment.rows == -1, cold)
    assert bool((fused[cold, 48:] == 0).all()) and bool((fused[~cold, 48:].norm(dim=1) - 2).abs().max() < 1e-5)


def test_same_seed_same_files(tmp_path, text, behaviour):
    export = write_export(tmp_path / "export", behaviour, [f"r{i}" for i in range(300)])
    encode(tmp_path, text, "a", CollabConfig(export))
    encode(tmp_path, text, "b", CollabConfig(export))
    assert code_bytes(tmp_path / "a") == code_bytes(tmp_path / "b")
    stats_a, stats_b = (json.loads((tmp_path / name / "stats.json").read_text()) for name in ("a", "b"))
    assert stats_a.pop("timings_s").keys() == stats_b.pop("timings_s").keys() == {"read", "collab", "fit", "encode"}
    assert stats_a == stats_b
    other = encode(tmp_path, text, "c", CollabConfig(export), quantizer=QuantizerConfig(**{**vars(FAST), "seed": 7}))
    assert not torch.equal(other.codes, load(tmp_path / "a").codes)


def test_stats_record_the_source_weight_coverage_and_the_usual_figures(tmp_path, text, behaviour):
    export = write_export(tmp_path / "export", behaviour, [f"r{i}" for i in range(300)])
    s = encode(tmp_path, text, "out", CollabConfig(export, weight=0.5))
    collab = s.stats["collab"]
    digest = hashlib.sha256((export / "item_vectors.npy").read_bytes()).hexdigest()
    assert collab == {
        "scheme": collab["scheme"], "path": str(export), "vectors": str(export / "item_vectors.npy"),
        "sha256": digest, "ids": str(export / "item_ids.json"),
        "ids_sha256": hashlib.sha256((export / "item_ids.json").read_bytes()).hexdigest(),
        "export_layout": ["hid"], "weight": 0.5, "dim": 16, "quantizer_input_dim": 64,
        "covered_items": 300, "cold_items": 0, "coverage": 1.0, "zero_vectors": 0,
    }
    assert s.stats["embedding_dim"] == 48 and s.stats["warnings"] == []
    assert 0 <= s.stats["collisions"]["collision_rate"] < 1
    assert [len(level) and 1 <= level["perplexity"] <= 8 for level in s.stats["collisions"]["per_level"]] == [True] * 3
    assert s.stats["reconstruction_error"] > 0


def test_safetensors_with_ids_and_npy_with_an_ids_file(tmp_path, text, behaviour):
    ids = [f"r{i}" for i in range(300)]
    save_file({"embeddings": behaviour}, tmp_path / "collab.safetensors", metadata={"ids": json.dumps(ids)})
    np.save(tmp_path / "collab.npy", behaviour.numpy())
    (tmp_path / "collab_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    a = encode(tmp_path, text, "a", CollabConfig(tmp_path / "collab.safetensors"))
    b = encode(tmp_path, text, "b", CollabConfig(tmp_path / "collab.npy", ids=tmp_path / "collab_ids.txt"))
    assert torch.equal(a.codes, b.codes)
    assert a.stats["collab"]["ids"] is None and a.stats["collab"]["export_layout"] is None


def test_an_export_of_code_embeddings_is_warned_about(tmp_path, text, behaviour):
    export = write_export(tmp_path / "export", behaviour, [f"r{i}" for i in range(300)], layout=("hid", "sid"))
    s = encode(tmp_path, text, "out", CollabConfig(export))
    assert any("not an ID embedding alone" in w for w in s.stats["warnings"])


def test_the_cli_prints_the_collab_line(tmp_path, text, behaviour):
    export = write_export(tmp_path / "export", behaviour[:200], [f"r{i}" for i in range(200)])
    emb, ids = text
    out = tmp_path / "out"
    args = ["encode", "-o", str(out), "--embeddings", str(emb), "--ids", str(ids), "--collab", str(export),
            "--collab-weight", "0.5", "--levels", "3", "--codebook-size", "8", "--epochs", "2", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"collab: {export} (16 dims), weight 0.5, covers 66.7 % of the items (100 cold)" in result.output
    assert "warning: " in result.output and "cold items" in result.output
    shown = CliRunner().invoke(main, ["stats", str(out)])
    assert "collab: " in shown.output and "perplexity" in shown.output


ERRORS = ["unknown_id", "duplicate_id", "nan", "three_dims", "ids_count", "npy_without_ids", "folder_without_ids",
          "ids_with_folder", "negative_weight", "weight_without_collab", "missing"]


@pytest.mark.parametrize("case", ERRORS)
def test_bad_collab_input_exits_2_naming_the_file_and_id(tmp_path, text, behaviour, case):
    emb, ids_file = text
    ids = [f"r{i}" for i in range(300)]
    matrix = behaviour.clone()
    extra: list[str] = []
    if case == "unknown_id":
        ids[7] = "nope"
        source = write_export(tmp_path / "export", matrix, ids)
        expected = f"{source / 'item_ids.json'}: field 'ids' entry 8 names item 'nope', which is not in the catalogue"
    elif case == "duplicate_id":
        ids[9] = "r3"
        source = write_export(tmp_path / "export", matrix, ids)
        expected = f"{source / 'item_ids.json'}: field 'ids' repeats id 'r3' (entries 4 and 10)"
    elif case == "nan":
        matrix[41, 2] = float("nan")
        source = write_export(tmp_path / "export", matrix, ids)
        expected = f"{source / 'item_vectors.npy'}:42: field 'embeddings' row 42 (id 'r41') holds NaN"
    elif case == "three_dims":
        source = write_export(tmp_path / "export", matrix.reshape(300, 4, 4), ids)
        expected = f"{source / 'item_vectors.npy'}: field 'embeddings' must be a non-empty 2-D matrix"
    elif case == "ids_count":
        source = write_export(tmp_path / "export", matrix, ids[:-1])
        expected = f"{source / 'item_ids.json'}: field 'ids' lists 299 ids but"
    elif case == "npy_without_ids":
        source = tmp_path / "collab.npy"
        np.save(source, matrix.numpy())
        expected = f"{source}: field 'ids' are absent: pass --collab-ids FILE"
    elif case == "folder_without_ids":
        source = write_export(tmp_path / "export", matrix, ids)
        (source / "item_ids.json").unlink()
        expected = f"{source}: is a folder without item_ids.json"
    elif case == "ids_with_folder":
        source = write_export(tmp_path / "export", matrix, ids)
        extra = ["--collab-ids", str(ids_file)]
        expected = f"{source}: is an `h2rec export` folder, whose ids are its item_ids.json; drop --collab-ids"
    elif case == "negative_weight":
        source = write_export(tmp_path / "export", matrix, ids)
        extra = ["--collab-weight", "-1"]
        expected = "field 'collab_weight' must be a finite number >= 0 (--collab-weight), got -1.0"
    elif case == "weight_without_collab":
        source = None
        extra = ["--collab-weight", "0.5"]
        expected = "--collab-weight is given without --collab"
    else:
        source = tmp_path / "nowhere"
        expected = f"{source}: no such file or folder (--collab)"
    out = tmp_path / "out"
    args = ["encode", "-o", str(out), "--embeddings", str(emb), "--ids", str(ids_file), "--levels", "3",
            "--codebook-size", "8", "--epochs", "2", "--quiet", *extra]
    if source is not None:
        args += ["--collab", str(source)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-written
