"""The `semid` CLI through click's test runner: encode, embed, stats, --help, exit code 2 on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from semid.cli import main

FAST = ["--levels", "3", "--codebook-size", "8", "--epochs", "2", "--quiet"]


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def embedded(tmp_path, clustered):
    np.save(tmp_path / "emb.npy", clustered.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
    return str(tmp_path / "emb.npy"), str(tmp_path / "ids.txt")


@pytest.mark.parametrize("command, expected", [
    ("encode", ["--out", "--format", "--id-field", "--text-fields", "--template", "--quantizer", "--levels",
                "--codebook-size", "--dedup", "--model", "--embeddings", "--ids", "--seed", "--device",
                "--epochs", "--export", "--pooling", "--no-normalize", "--cache-dir", "--threads", "--quiet",
                "--fit-sample", "--kmeans-backend", "rqkmeans"]),
    ("embed", ["--out", "--format", "--id-field", "--text-fields", "--template", "--model", "--pooling",
               "--device", "--max-length", "--batch-size", "--no-cache"]),
    ("stats", ["OUT_DIR", "--json"]),
])
def test_help_of_each_command_is_complete(runner, command, expected):
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0
    for option in expected:
        assert option in result.output, option


def test_top_level_help_lists_the_commands(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in ("encode", "embed", "stats"))


def test_encode_with_precomputed_embeddings_then_stats(runner, tmp_path, embedded):
    emb, ids = embedded
    out = tmp_path / "out"
    result = runner.invoke(main, ["encode", "-o", str(out), "--embeddings", emb, "--ids", ids, "--dedup",
                                  "--quantizer", "pq", "--export", "recbole", *FAST])
    assert result.exit_code == 0, result.output
    assert "collision rate" in result.output and "after --dedup:" in result.output
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["quantizer"]["kind"] == "pq" and stats["quantizer"]["codebook_size"] == 8
    assert (out / "semid.item").is_file()
    shown = runner.invoke(main, ["stats", str(out)])
    assert shown.exit_code == 0 and "utilisation" in shown.output and "perplexity" in shown.output
    raw = runner.invoke(main, ["stats", str(out), "--json"])
    assert json.loads(raw.stdout) == stats


def test_per_level_codebook_sizes_on_the_command_line(runner, tmp_path, embedded):
    emb, ids = embedded
    result = runner.invoke(main, ["encode", "-o", str(tmp_path / "out"), "--embeddings", emb, "--ids", ids,
                                  "--quantizer", "rq", "--levels", "3", "--codebook-size", "16,8,4", "--quiet"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "out/stats.json").read_text(encoding="utf-8"))
    assert stats["collisions"]["codebook_sizes"] == [16, 8, 4]


def test_pca_dim_reaches_the_quantizer(runner, tmp_path, embedded):
    emb, ids = embedded
    result = runner.invoke(main, ["encode", "-o", str(tmp_path / "out"), "--embeddings", emb, "--ids", ids,
                                  "--quantizer", "rqkmeans", "--levels", "2", "--codebook-size", "8",
                                  "--pca-dim", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "out/stats.json").read_text(encoding="utf-8"))
    assert stats["quantizer"]["pca_dim"] == 6 and 0 < stats["fit"]["pca_variance_kept"] < 1


def test_encode_and_embed_from_text_with_a_local_model(runner, tmp_path, item_records, write_jsonl, tiny_bert):
    items = str(write_jsonl(item_records[:40]))
    common = ["--model", str(tiny_bert), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    embedded = runner.invoke(main, ["embed", items, "-o", str(tmp_path / "emb"), "--text-fields", "title,brand",
                                    *common])
    assert embedded.exit_code == 0, embedded.output
    # beside the outputs only the lock file, which stays (see semid.io): no staging or marker files
    assert {p.name for p in (tmp_path / "emb").iterdir()} == {".lock", "embeddings.safetensors", "texts.jsonl"}
    first = json.loads((tmp_path / "emb/texts.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["text"].startswith("title: ") and "\nbrand: " in first["text"]
    encoded = runner.invoke(main, ["encode", items, "-o", str(tmp_path / "out"), "--quantizer", "vq",
                                   "--levels", "2", "--codebook-size", "4", *common])
    assert encoded.exit_code == 0, encoded.output
    # the embeddings of `semid embed` feed `semid encode --embeddings` (ids travel inside the file)
    reused = runner.invoke(main, ["encode", "-o", str(tmp_path / "out2"), "--embeddings",
                                  str(tmp_path / "emb/embeddings.safetensors"), "--quantizer", "rq",
                                  "--levels", "2", "--codebook-size", "4", "--quiet"])
    assert reused.exit_code == 0, reused.output


@pytest.mark.parametrize("case", ["malformed_json", "duplicate_id", "missing_template_field", "nan_embeddings",
                                  "ids_mismatch", "codebook_too_large", "missing_file", "stats_of_empty_dir",
                                  "csv_unclosed_quote", "seed_too_large", "npy_of_strings", "cache_dir_under_a_file",
                                  "pca_dim_too_large", "pca_dim_on_rqvae"])
def test_bad_input_exits_with_code_2_and_a_located_message(runner, tmp_path, case, write_jsonl, clustered):
    out = tmp_path / "out"
    if case == "csv_unclosed_quote":  # once read as one item, then blamed on the codebook size
        path = tmp_path / "items.csv"
        path.write_text('id,title\na,"unclosed\n', encoding="utf-8")
        args, expected = ["encode", str(path), "-o", str(out)], f"{path}:2: malformed CSV"
    elif case in ("seed_too_large", "npy_of_strings"):
        values = np.array([["a", "b"]] * 3) if case == "npy_of_strings" else clustered.numpy()
        np.save(tmp_path / "emb.npy", values)
        (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(len(values))), encoding="utf-8")
        args = ["encode", "-o", str(out), "--embeddings", str(tmp_path / "emb.npy"), "--ids", str(tmp_path / "ids.txt"),
                "--seed", str(2**70 if case == "seed_too_large" else 1)]
        expected = "field 'seed' must be an integer" if case == "seed_too_large" else \
            f"{tmp_path / 'emb.npy'}: field 'embeddings' must hold floats, got numpy dtype <U1"
    elif case == "cache_dir_under_a_file":
        path = write_jsonl([{"id": "a", "title": "x"}, {"id": "b", "title": "y"}])
        (tmp_path / "afile").write_text("x", encoding="utf-8")
        args = ["encode", str(path), "-o", str(out), "--cache-dir", str(tmp_path / "afile/cache"), "--levels", "1",
                "--codebook-size", "2"]
        expected = f"{tmp_path / 'afile/cache'}: field 'cache_dir' cannot be created"
    elif case == "malformed_json":
        path = tmp_path / "items.jsonl"
        path.write_text('{"id": "a"}\n{"id": \n', encoding="utf-8")
        args, expected = ["encode", str(path), "-o", str(out)], f"{path}:2: malformed JSON"
    elif case == "duplicate_id":
        path = write_jsonl([{"id": "a"}, {"id": "a"}])
        args, expected = ["encode", str(path), "-o", str(out)], f"{path}:2: field 'id' repeats id 'a'"
    elif case == "missing_template_field":
        path = write_jsonl([{"id": "a", "title": "x"}])
        args = ["embed", str(path), "-o", str(out), "--template", "{title} {brand}"]
        expected = f"{path}:1: field 'brand' named in --template is missing"
    elif case == "nan_embeddings":
        matrix = clustered.numpy().copy()
        matrix[9, 0] = np.nan
        np.save(tmp_path / "emb.npy", matrix)
        (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
        args = ["encode", "-o", str(out), "--embeddings", str(tmp_path / "emb.npy"), "--ids", str(tmp_path / "ids.txt")]
        expected = f"{tmp_path / 'emb.npy'}:10: field 'embeddings' row 10 holds NaN"
    elif case == "ids_mismatch":
        np.save(tmp_path / "emb.npy", clustered.numpy())
        (tmp_path / "ids.txt").write_text("a\nb\n", encoding="utf-8")
        args = ["encode", "-o", str(out), "--embeddings", str(tmp_path / "emb.npy"), "--ids", str(tmp_path / "ids.txt")]
        expected = f"{tmp_path / 'ids.txt'}: field 'ids' lists 2 ids but"
    elif case == "codebook_too_large":
        np.save(tmp_path / "emb.npy", clustered.numpy())
        (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
        args = ["encode", "-o", str(out), "--embeddings", str(tmp_path / "emb.npy"), "--ids",
                str(tmp_path / "ids.txt"), "--codebook-size", "1024", "--quantizer", "rq"]
        expected = f"{tmp_path / 'emb.npy'}: field 'codebook_size' is 1024, more codes than the 300 items"
    elif case in ("pca_dim_too_large", "pca_dim_on_rqvae"):
        np.save(tmp_path / "emb.npy", clustered.numpy())
        (tmp_path / "ids.txt").write_text("".join(f"r{i}\n" for i in range(300)), encoding="utf-8")
        too_large = case == "pca_dim_too_large"
        args = ["encode", "-o", str(out), "--embeddings", str(tmp_path / "emb.npy"), "--ids", str(tmp_path / "ids.txt"),
                "--quantizer", "rqkmeans" if too_large else "rqvae", "--pca-dim", "64" if too_large else "8"]
        expected = (f"{tmp_path / 'emb.npy'}: field 'pca_dim' is 64, more than the embeddings' 48 dimensions"
                    if too_large else "field 'pca_dim' applies to rqkmeans only, not rqvae")
    elif case == "missing_file":
        args, expected = ["encode", str(tmp_path / "nope.jsonl"), "-o", str(out)], "nope.jsonl: no such file"
    else:
        out.mkdir()
        args, expected = ["stats", str(out)], f"{out / 'stats.json'}: cannot be read"
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    if case != "stats_of_empty_dir":
        assert not out.exists()  # nothing half-written


def test_click_usage_errors_also_exit_2(runner, tmp_path):
    result = runner.invoke(main, ["encode", "items.jsonl"])  # no -o
    assert result.exit_code == 2 and "Missing option" in result.output
    result = runner.invoke(main, ["encode", "x.jsonl", "-o", str(tmp_path), "--codebook-size", "big"])
    assert result.exit_code == 2 and "is not an integer" in result.output
    result = runner.invoke(main, ["encode", "x.jsonl", "-o", str(tmp_path), "--quantizer", "lfq"])
    assert result.exit_code == 2
