"""The `h2rec` command line, end to end on the tiny dataset, through click's test runner."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from h2rec.cli import main

FAST = ["--max-len", "20", "--dim", "32", "--batch-size", "64", "--device", "cpu", "--quiet"]


def train_args(tiny, out, *extra):
    return ["train", "--interactions", str(tiny["interactions"]), "--semid", str(tiny["semid"]),
            "-o", str(out), *FAST, *extra]


@pytest.fixture(scope="module")
def two_models(tiny, tmp_path_factory):
    """hid and h2rec runs with two seeds each (one epoch): what `compare` needs."""
    root = tmp_path_factory.mktemp("cli")
    runner = CliRunner()
    dirs = {}
    for model in ("hid", "h2rec"):
        for seed in (1, 2):
            out = root / f"{model}-{seed}"
            result = runner.invoke(main, train_args(tiny, out, "--model", model, "--seed", str(seed),
                                                    "--epochs", "1", "--eval-negatives", "20"))
            assert result.exit_code == 0, result.output
            dirs[(model, seed)] = out
    return dirs


def test_train_prints_a_table_and_writes_the_run(two_models):
    run = two_models[("h2rec", 1)]
    results = json.loads((run / "results.json").read_text())
    assert set(results["test"]) == {"full", "full_unseen", "sampled_20"}
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 1 and config["model"]["kind"] == "h2rec"


def test_evaluate_recommend_compare(two_models):
    runner = CliRunner()
    run = two_models[("h2rec", 1)]
    result = runner.invoke(main, ["evaluate", str(run), "--eval-negatives", "20", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "| test | full |" in result.output and "| test | sampled_20 |" in result.output

    result = runner.invoke(main, ["recommend", str(run), "--user", "u00001", "-k", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    output = result.output.split("  rank  item")
    assert len(output) == 2 and "user u00001:" in output[0] and "most recent, newest last" in output[0]
    ranked = [line.split() for line in output[1].splitlines()[1:] if line.strip() and line.split()[0].isdigit()]
    assert [row[0] for row in ranked] == ["1", "2", "3"]
    history = {line.split()[0] for line in output[0].splitlines()[1:] if line.strip() and not line.startswith("top")}
    assert not history & {row[1] for row in ranked}  # seen items are left out by default
    assert "score: the model's logit" in result.output

    result = runner.invoke(main, ["compare", *map(str, two_models.values()), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # a label names the model and every choice that differs from the defaults (here the width)
    assert summary["labels"] == ["hid/sasrec (dim=32)", "h2rec/sasrec (dim=32)"]
    assert summary["table"]["hid/sasrec (dim=32)"]["overall NDCG@10"]["n"] == 2
    assert summary["tests"]["seeds"] == [1, 2]
    assert set(summary["tests"]["p_values"]) == {f"{g} {m}" for g in ("overall", "tail", "head")
                                                 for m in ("NDCG@10", "HR@10")}
    table = runner.invoke(main, ["compare", *map(str, two_models.values())]).output
    assert "paired two-sided t-test, h2rec/sasrec (dim=32) vs hid/sasrec (dim=32)" in table


def test_config_file_with_overrides(tiny, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  interactions: {tiny['interactions']}\n  semid: {tiny['semid']}\n"
                      "model:\n  kind: sid\n  dim: 16\ntrain:\n  epochs: 1\n")
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--dim", "32", "-o", str(tmp_path / "run"),
                                       "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["kind"] == "sid" and saved["model"]["dim"] == 32  # the flag wins over the file


def test_sasrec_preset_trains_item_ids_only_and_flags_override_it(tiny, tmp_path):
    result = CliRunner().invoke(main, train_args(tiny, tmp_path / "run", "--epochs", "1", "--preset", "sasrec",
                                                 "--emb-dropout", "0.3"))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["model"]["kind"], saved["model"]["backbone"]) == ("hid", "sasrec")
    model, train = saved["model"], saved["train"]
    assert (model["dropout"], model["attn_dropout"], train["label_smoothing"]) == (0.4, 0.5, 0.1)
    assert model["emb_dropout"] == 0.3  # the flag wins over the preset


@pytest.mark.parametrize("case", ["unknown_key", "unknown_section", "bad_choice", "bad_encoder_option",
                                  "unknown_item", "empty_file", "bad_version", "missing_semid"])
def test_bad_input_exits_2_with_a_clear_message(tiny, tmp_path, case, two_models):
    runner = CliRunner()
    if case == "unknown_key":
        config = tmp_path / "c.yaml"
        config.write_text("model:\n  hidden_size: 64\n")
        result = runner.invoke(main, ["train", "--config", str(config), "-o", str(tmp_path / "r")])
        expected = "unknown key(s) ['hidden_size'] in section 'model'; valid keys"
    elif case == "unknown_section":
        config = tmp_path / "c.yaml"
        config.write_text("optimizer:\n  lr: 0.1\n")
        result = runner.invoke(main, ["train", "--config", str(config), "-o", str(tmp_path / "r")])
        expected = "unknown section 'optimizer'"
    elif case == "bad_choice":
        config = tmp_path / "c.yaml"
        config.write_text("train:\n  loss: hinge\n")
        result = runner.invoke(main, ["train", "--config", str(config), "-o", str(tmp_path / "r")])
        expected = "train.loss is 'hinge'; choose one of"
    elif case == "bad_encoder_option":
        config = tmp_path / "c.yaml"
        config.write_text(f"data:\n  interactions: {tiny['interactions']}\n  semid: {tiny['semid']}\n"
                          "model:\n  backbone_options: {hidden_size: 8}\n")
        result = runner.invoke(main, ["train", "--config", str(config), "-o", str(tmp_path / "r")])
        expected = "unknown sasrec config key(s) ['hidden_size']"
    elif case == "unknown_item":
        inter = tmp_path / "inter.csv"
        inter.write_text("user_id,item_id\nu1,i00001\nu1,no-such-item\nu1,i00002\n")
        result = runner.invoke(main, ["train", "--interactions", str(inter), "--semid", str(tiny["semid"]),
                                      "-o", str(tmp_path / "r")])
        expected = "inter.csv: 1 item id(s) have no semantic ID"
    elif case == "empty_file":
        inter = tmp_path / "inter.csv"
        inter.write_text("")
        result = runner.invoke(main, ["train", "--interactions", str(inter), "--semid", str(tiny["semid"]),
                                      "-o", str(tmp_path / "r")])
        expected = "inter.csv: empty file"
    elif case == "bad_version":
        run = tmp_path / "old"
        run.mkdir()
        meta = json.loads((two_models[("hid", 1)] / "config.json").read_text())
        meta["format_version"] = 0
        (run / "config.json").write_text(json.dumps(meta))
        result = runner.invoke(main, ["evaluate", str(run)])
        expected = "run folder format 0"
    else:
        result = runner.invoke(main, ["train", "--interactions", str(tiny["interactions"]),
                                      "--semid", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r")])
        expected = "cannot read the semantic IDs folder"
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r" / "config.json").exists()  # nothing written for a run that never started


def test_every_command_has_help():
    runner = CliRunner()
    for command in ("train", "evaluate", "recommend", "export", "compare", "demo", "tune", "prepare"):
        result = runner.invoke(main, [command, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output
        assert len(result.output.splitlines()) > 5


def test_demo_runs_end_to_end_on_a_small_catalogue(tmp_path):
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "demo"), "--items", "150", "--users", "200",
                                       "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "H2Rec demo on GENERATED data" in result.output
    assert "| full | hid |" in result.output and "| sampled_100 | h2rec |" in result.output
    # the reader is told what the groups are, how many targets each has, and how far apart the models are
    assert "| full | h2rec vs hid |" in result.output and "one seed (42)" in result.output
    assert "Head = the" in result.output and "Test targets:" in result.output
    assert (tmp_path / "demo" / "groups.png").stat().st_size > 1000
    # the folder holds that demo: another catalogue size into it is refused, not mixed with it
    other = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "demo"), "--items", "160", "--users", "200",
                                      "--epochs", "1", "--device", "cpu"])
    assert other.exit_code == 2 and "holds the demo of" in other.output


def test_code_match_and_window_flags_and_their_old_spellings(tiny, tmp_path):
    runner = CliRunner()
    new = runner.invoke(main, train_args(tiny, tmp_path / "new", "--epochs", "1", "--code-match", "2", "--window", "0"))
    old = runner.invoke(main, train_args(tiny, tmp_path / "old", "--epochs", "1", "--p", "2", "--o", "0"))
    for result, run in ((new, "new"), (old, "old")):
        assert result.exit_code == 0, result.output
        train = json.loads((tmp_path / run / "config.json").read_text())["train"]
        assert (train["code_match"], train["window"]) == (2, 0)
    assert "--code-match" in runner.invoke(main, ["train", "-h"]).output
    assert "--p " not in runner.invoke(main, ["train", "-h"]).output  # hidden


def test_every_config_field_is_a_flag_or_file_only():
    """Flags are generated from the config fields (h2rec.flags): each flag names an existing key, and
    every key is a flag or declared file-only, so a new field cannot be forgotten on the command line."""
    from h2rec.flags import FILE_ONLY, TRAIN_COMMAND_FLAGS, config_keys

    flagged = [f.key for f in TRAIN_COMMAND_FLAGS]
    assert len(flagged) == len(set(flagged))
    missing = config_keys() - set(flagged) - FILE_ONLY
    assert not missing, f"no flag for {missing}: give each a Flag in h2rec/flags.py or list it in FILE_ONLY"
    assert set(flagged) | FILE_ONLY <= config_keys()
    assert not set(flagged) & FILE_ONLY


def test_train_flags_take_type_choices_and_default_from_the_config():
    import typing

    from h2rec.config import Config, ModelKind, TrainConfig

    params = {p.name: p for p in main.commands["train"].params}
    assert list(params["model__kind"].type.choices) == list(typing.get_args(ModelKind))
    assert list(params["train__lr_schedule"].type.choices) == list(
        typing.get_args(typing.get_type_hints(TrainConfig)["lr_schedule"]))
    assert params["model__dim"].type is click.INT and params["train__lr"].type is click.FLOAT
    assert f"(default {Config().model.dropout:g})" in params["model__dropout"].help
    assert f"(default {Config().train.patience_steps})" in params["train__patience_steps"].help
    assert "(default --dropout)" in params["model__emb_dropout"].help
