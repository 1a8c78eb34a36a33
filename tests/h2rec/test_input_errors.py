"""Every user mistake in h2rec's inputs is a one-line message and exit code 2, found before training.

Each case runs the command line on the tiny dataset and checks the exit code, that the message
names the thing (flag, file:line, field) and that nothing is left behind (no run, search or demo
folder; an existing run folder unchanged). A genuine bug would show a traceback and exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from h2rec.cli import main

FAST = ["--max-len", "10", "--dim", "16", "--batch-size", "64", "--epochs", "1", "--device", "cpu", "--quiet"]

BAD_DEVICE = "'--device': 'tpu' is not one of auto, cpu, cuda"


def _train(tiny, tmp, *extra, interactions=None):
    return ["train", "--interactions", str(interactions or tiny["interactions"]), "--semid", str(tiny["semid"]),
            "-o", str(tmp / "out"), *FAST, *extra]


def _write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _with_file(name: str, content: str | bytes, *extra: str):
    """A train case on an interaction file holding ``content``."""
    return lambda tiny, tmp: _train(tiny, tmp, *extra, interactions=_write(tmp, name, content))


def _with_config(yaml_text: str):
    return lambda tiny, tmp: _train(tiny, tmp, "--config", str(_write(tmp, "bad.yaml", yaml_text)))


def _with_parquet(columns: dict):
    """A train case on a Parquet file holding ``columns`` (name -> values)."""
    def args(tiny, tmp):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp / "inter.parquet"
        pq.write_table(pa.table(columns), path)
        return _train(tiny, tmp, interactions=path)
    return args


def _big_csv_with_a_bad_byte(line: int) -> bytes:
    """Far more than one read chunk (8 KiB) of valid rows, then a Latin-1 byte on ``line``."""
    rows = [b"user_id,item_id,timestamp"] + [b"u%05d,i%05d,%d" % (n % 50 + 1, n % 150 + 1, n) for n in range(3000)]
    rows[line - 1] = rows[line - 1].replace(b"i", b"caf\xe9-i", 1)
    return b"\n".join(rows) + b"\n"


# case id -> (arguments from (tiny, tmp_path), text the message must hold)
TRAIN_CASES = {
    # numeric flags outside their natural range, or not finite
    "lr_negative": (lambda t, p: _train(t, p, "--lr", "-1"), "--lr (train.lr) must be > 0, got -1"),
    "lr_nan": (lambda t, p: _train(t, p, "--lr", "nan"), "--lr (train.lr) must be a finite number, got nan"),
    "lr_inf": (lambda t, p: _train(t, p, "--lr", "inf"), "--lr (train.lr) must be a finite number, got inf"),
    "tau_zero": (lambda t, p: _train(t, p, "--tau", "0"), "--tau (train.tau) must be > 0"),
    "dim_zero": (lambda t, p: _train(t, p, "--dim", "0"), "--dim (model.dim) must be an integer >= 1, got 0"),
    "layers_zero": (lambda t, p: _train(t, p, "--layers", "0"), "--layers (model.num_layers) must be an integer >= 1"),
    "heads_negative": (lambda t, p: _train(t, p, "--heads", "-2"), "--heads (model.num_heads) must be an integer >= 1"),
    "batch_size_zero": (lambda t, p: _train(t, p, "--batch-size", "0"), "--batch-size (train.batch_size) must be"),
    "epochs_zero": (lambda t, p: _train(t, p, "--epochs", "0"), "--epochs (train.epochs) must be an integer >= 1"),
    "negatives_zero": (lambda t, p: _train(t, p, "--negatives", "0"), "--negatives (train.num_negatives) must be"),
    "dropout_above_one": (lambda t, p: _train(t, p, "--dropout", "1.5"),
                          "--dropout (model.dropout) must lie in [0.0, 1.0]"),
    "dropout_nan": (lambda t, p: _train(t, p, "--dropout", "nan"), "--dropout (model.dropout) must be a finite number"),
    "beta_negative": (lambda t, p: _train(t, p, "--beta", "-1"), "--beta (train.beta) must be >= 0"),
    "window_stride_zero": (lambda t, p: _train(t, p, "--window-stride", "0"), "--window-stride (train.window_stride)"),
    "seed_negative": (lambda t, p: _train(t, p, "--seed", "-1"), "--seed (train.seed) must lie in [0, 2**32 - 1]"),
    "eval_negatives_negative": (lambda t, p: _train(t, p, "--eval-negatives", "-5"),
                                "--eval-negatives (eval.negatives) must be >= 0, got -5"),
    "k_core_negative": (lambda t, p: _train(t, p, "--k-core", "-2"), "--k-core (data.k_core) must be >= 0, got -2"),
    "select_on_sampled_without_negatives": (lambda t, p: _train(t, p, "--select-on", "sampled"),
                                            "--select-on (eval.select_on) is 'sampled', which needs eval.negatives"),
    # lazy updates of the ID table need a sampled loss: known once the catalogue's size is (ce stays ce here)
    "sparse_ids_under_full_softmax": (lambda t, p: _train(t, p, "--sparse-ids"),
                                      "train.sparse_ids needs a sampled loss"),
    "sparse_ids_with_weight_decay": (lambda t, p: _train(t, p, "--sparse-ids", "--loss", "sampled_softmax",
                                                         "--weight-decay", "0.1"),
                                     "--sparse-ids (train.sparse_ids): the table's lazy updates"),
    # type errors in a YAML config name the file and the field
    "yaml_lr_text": (_with_config("train:\n  lr: fast\n"), "bad.yaml: train.lr must be a finite number, got 'fast'"),
    "yaml_lr_nan": (_with_config("train:\n  lr: .nan\n"), "bad.yaml: train.lr must be a finite number, got nan"),
    "yaml_bool_text": (_with_config("model:\n  fusion: maybe\n"), "bad.yaml: model.fusion must be true or false"),
    "yaml_int_float": (_with_config("model:\n  num_layers: 1.5\n"),
                       "bad.yaml: model.num_layers must be an integer, got 1.5"),
    "yaml_ks_without_10": (_with_config("eval:\n  ks: [5, 20]\n"),
                           "bad.yaml: eval.ks must be cut-offs >= 1 that include 10"),
    "yaml_group_bounds": (_with_config("data:\n  group_bounds: [10, 5]\n"),
                          "bad.yaml: data.group_bounds must be 4 ascending"),
    # interaction files: the message names the file, the line and the field
    "timestamp_nan": (_with_file("inter.csv", "user_id,item_id,timestamp\nu1,i00001,1\nu1,i00002,nan\n"),
                      "inter.csv:3: field 'timestamp' is 'nan'; a time must be a finite number"),
    "timestamp_inf": (_with_file("inter.tsv", "user_id\titem_id\ttimestamp\nu1\ti00001\t-inf\n"),
                      "inter.tsv:2: field 'timestamp' is '-inf'"),
    "timestamp_text": (_with_file("inter.csv", "user_id,item_id,timestamp\nu1,i00001,2021-03-04\n"),
                       "inter.csv:2: field 'timestamp' is not a number: '2021-03-04'"),
    "timestamp_json_nan": (_with_file("inter.jsonl", '{"user_id": "u1", "item_id": "i00001", "timestamp": NaN}\n'),
                           "inter.jsonl:1: field 'timestamp' is nan"),
    "timestamp_json_bool": (_with_file("inter.jsonl", '{"user_id": "u1", "item_id": "i00001", "timestamp": true}\n'),
                            "inter.jsonl:1: field 'timestamp' is not a number: True"),
    "unclosed_quote": (_with_file("inter.csv", 'user_id,item_id\nu1,"i00001\n'),
                       "inter.csv:2: a quoted field opened on this line is never closed"),
    "text_after_closing_quote": (_with_file("inter.csv", 'user_id,item_id\nu1,i00001\n"u1"x,i00002\n'),
                                 "inter.csv:3: malformed quoting"),
    "not_utf8_far_down": (_with_file("inter.csv", _big_csv_with_a_bad_byte(2500)),
                          "inter.csv:2500: not valid UTF-8 at byte 11 of the line"),
    "not_utf8_json": (_with_file("inter.json", b'{"u1": [\n"i00001",\n"caf\xe9"]}\n'),
                      "inter.json:3: not valid UTF-8"),
    # Parquet: typed columns, so the message names the row (1 = the first) and the field
    "parquet_missing_column": (_with_parquet({"user": ["u1"], "item_id": ["i00001"]}),
                               "inter.parquet: no field 'user_id'; the file has ['user', 'item_id']"),
    "parquet_null_id": (_with_parquet({"user_id": ["u1", None], "item_id": ["i00001", "i00002"]}),
                        "inter.parquet: row 2: field 'user_id' is missing (null)"),
    "parquet_timestamp_text": (_with_parquet({"user_id": ["u1"], "item_id": ["i00001"], "timestamp": ["2021-03-04"]}),
                               "inter.parquet: field 'timestamp' holds string values; a time must be a number"),
    "parquet_timestamp_nan": (_with_parquet({"user_id": ["u1"] * 2, "item_id": ["i00001"] * 2,
                                             "timestamp": [1.0, float("nan")]}),
                              "inter.parquet: row 2: field 'timestamp' is nan; a time must be a finite number"),
    "parquet_not_parquet": (_with_file("inter.parquet", "user_id,item_id\nu1,i00001\n"),
                            "inter.parquet: cannot tell the layout: the name ends in .parquet"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_refuses_bad_input(tiny, tmp_path, case):
    args, expected = TRAIN_CASES[case]
    result = CliRunner().invoke(main, args(tiny, tmp_path))
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before the run folder was made


def test_a_valid_file_still_reads(tiny, tmp_path):
    """What the checks must not refuse: a byte-order mark, a quoted field spanning lines, blank lines."""
    from h2rec.config import DataConfig
    from h2rec.readers import read_interactions

    path = _write(tmp_path, "inter.csv", b'\xef\xbb\xbfuser_id,item_id,timestamp\n\nu1,"i0,\n1",2\nu1,i2,1\n')
    assert read_interactions(DataConfig(interactions=str(path))) == {"u1": ["i2", "i0,\n1"]}
    config = _write(tmp_path, "ok.yaml", "train:\n  lr: 1e-3\n")  # PyYAML reads 1e-3 as text
    from h2rec.config import load_config_file

    assert load_config_file(config).train.lr == 0.001


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    """A trained one-epoch run for evaluate and recommend."""
    out = tmp_path_factory.mktemp("input-errors") / "run"
    result = CliRunner().invoke(main, ["train", "--interactions", str(tiny["interactions"]), "--semid",
                                       str(tiny["semid"]), "-o", str(out), *FAST, "--model", "hid"])
    assert result.exit_code == 0, result.output
    return out


RUN_CASES = {
    "evaluate_negatives_negative": (["evaluate", "{run}", "--eval-negatives", "-5"],
                                    "'--eval-negatives': -5 is not in the range x>=0"),
    "evaluate_negatives_too_many": (["evaluate", "{run}", "--eval-negatives", "5000", "--device", "cpu"],
                                    "eval.negatives (--eval-negatives) is 5000"),
    "evaluate_device_tpu": (["evaluate", "{run}", "--device", "tpu"], BAD_DEVICE),
    "recommend_k_negative": (["recommend", "{run}", "--user", "u00001", "-k", "-1"],
                             "'-k': -1 is not in the range x>=1"),
    "recommend_k_zero": (["recommend", "{run}", "--user", "u00001", "-k", "0"], "'-k': 0 is not in the range x>=1"),
    "recommend_device_tpu": (["recommend", "{run}", "--user", "u00001", "--device", "tpu"], BAD_DEVICE),
}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_evaluate_and_recommend_refuse_bad_flags(run_dir, case):
    args, expected = RUN_CASES[case]
    before = _snapshot(run_dir)
    result = CliRunner().invoke(main, [a.format(run=run_dir) for a in args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert _snapshot(run_dir) == before  # the run folder is untouched


OTHER_CASES = {
    "demo_items_too_few": (["demo", "-o", "{out}", "--items", "10"], "--items 10: the demo's catalogue needs 128 to"),
    "demo_items_too_many": (["demo", "-o", "{out}", "--items", "100000"], "--items 100000"),
    "demo_users_too_few": (["demo", "-o", "{out}", "--users", "1"], "--users 1: the demo needs at least half as many"),
    "demo_epochs_zero": (["demo", "-o", "{out}", "--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
    "demo_device_tpu": (["demo", "-o", "{out}", "--device", "tpu"], BAD_DEVICE),
    "tune_k_core_negative": (["tune", "--space", "{space}", "-o", "{out}", "--trials", "1", "--interactions", "{inter}",
                              "--semid", "{semid}", "--k-core", "-2"], "--k-core (data.k_core) must be >= 0"),
    "tune_minutes_nan": (["tune", "--space", "{space}", "-o", "{out}", "--minutes", "nan", "--interactions", "{inter}",
                          "--semid", "{semid}"], "minutes must be positive, got nan"),
    "tune_trials_zero": (["tune", "--space", "{space}", "-o", "{out}", "--trials", "0"], "'--trials': 0 is not in"),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_demo_and_tune_refuse_bad_flags(tiny, tmp_path, case):
    args, expected = OTHER_CASES[case]
    space = _write(tmp_path, "space.yaml", "train.lr: {float: [0.0001, 0.01], log: true}\n")
    names = {"out": tmp_path / "out", "space": space, "inter": tiny["interactions"], "semid": tiny["semid"]}
    result = CliRunner().invoke(main, [a.format(**names) for a in args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_config_json_of_a_run_round_trips(run_dir):
    """The stricter checks accept every configuration a run writes."""
    from h2rec.config import SECTIONS, build_config

    meta = json.loads((run_dir / "config.json").read_text())
    build_config({k: meta[k] for k in SECTIONS}, source="config.json")


@pytest.mark.parametrize("name", ["tpu", "xla", "cuda:x"])
def test_a_device_torch_cannot_use_is_a_user_error(name):
    """The flag is checked by click; a config file or the Python API reach resolve_device."""
    from h2rec.assemble import resolve_device
    from h2rec.errors import H2RecError

    with pytest.raises(H2RecError, match=f"'device' is '{name}'"):
        resolve_device(name)
