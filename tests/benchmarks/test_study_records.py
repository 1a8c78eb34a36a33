"""The study's bookkeeping (benchmarks/study/): which runs are done, and the committed records
that let a new checkout rebuild docs/results.md without the gitignored run folders."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

# the repository root is on sys.path (pyproject's pytest `pythonpath`), as when the study runs as
# `python -m benchmarks.study` from there
from benchmarks.study import experiments, runner


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "work" / "runs")
    monkeypatch.setattr(experiments, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(experiments, "WORK", tmp_path / "work")
    return SimpleNamespace(Run=experiments.Run, every_run=experiments.every_run, archive=runner.archive,
                           execute=runner.execute)


def test_distinct_runs_have_distinct_records(study):
    # names such as 'beta=0.1-s42' hold dots: a record path must not treat them as suffixes
    runs = study.every_run(["yelp", "beauty", "scientific", "games"], [42, 43])
    by_folder = {run.folder: run.record for run in runs}
    assert len(set(by_folder.values())) == len(by_folder)
    assert all(record.name.endswith("-s42.json") or record.name.endswith("-s43.json") for record in by_folder.values())


def fake_finished_run(run, interactions: Path) -> None:
    """What h2rec.train leaves in a run folder, reduced to the parts the record reads."""
    run.folder.mkdir(parents=True)
    metric = {"overall": {"NDCG@10": 0.5, "HR@10": 0.7}}
    (run.folder / "results.json").write_text(json.dumps({
        "seed": run.seed, "best_epoch": 2, "epochs_run": 3, "seconds_per_epoch": 10.0,
        "data": {"interactions_file": str(interactions)},
        "test": {"full": metric, "sampled_100": metric}}))
    (run.folder / "config.json").write_text(json.dumps({"model": {"kind": "h2rec"}}))
    epochs = [{"epoch": 1, "train_seconds": 1800, "eval_seconds": 0, "valid_NDCG@10": 0.1},
              {"epoch": 2, "train_seconds": 1800, "eval_seconds": 0, "valid_NDCG@10": 0.3},
              {"epoch": 2, "train_seconds": 1800, "eval_seconds": 0, "valid_NDCG@10": 0.2},  # a resumed sitting
              {"epoch": 3, "train_seconds": 0, "eval_seconds": 1800, "valid_NDCG@10": 0.25}]
    (run.folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))


def test_archive_writes_the_record_and_execute_skips_it(study, tmp_path, monkeypatch):
    interactions = tmp_path / "sequential_data.txt"
    interactions.write_text("1 a b a\n2 a b c\n")  # user 1's last item repeats its history, user 2's does not
    run = study.Run("table2", "beauty", "H2Rec", 42, {"model.kind": "h2rec"})
    fake_finished_run(run, interactions)

    record = study.archive(run)

    assert json.loads(run.record.read_text()) == record
    assert record["hours"] == 1.5  # epoch 2 counted once, as its last sitting
    assert record["valid_NDCG@10_by_epoch"] == [0.1, 0.2, 0.25]
    assert record["data"]["repeat_share"] == 0.5
    assert record["run"] == run.name_path.as_posix()
    assert not list(run.record.parent.glob("*.tmp"))

    # with a record and no run folder (a new checkout), the run is done: nothing is trained
    (run.folder / "results.json").unlink()
    monkeypatch.setattr(runner, "train_in_child", lambda *a: pytest.fail("a recorded run was trained again"))
    assert study.execute(run, tmp_path, "cpu") == record


def test_code_set_warning_counts_only_runs_that_read_codes():
    # a folder encoded again (1.50% collisions against 1.45%) matters to H2Rec's rows, not to SASRec's
    from benchmarks.study.report import code_set_warnings

    def record(kind: str, rate: float) -> dict:
        return {"run": f"beauty/rqvae-4x128/defaults/{kind}-s42", "config": {"model": {"kind": kind}},
                "collisions": {"collision_rate": rate}}

    same_codes = {("table2-defaults", "beauty"): {"SASRec": [record("hid", 0.0145)],
                                                  "LLM-ESR": [record("llmesr", 0.0145)],
                                                  "H2Rec": [record("h2rec", 0.0150)],
                                                  "SID only": [record("sid", 0.0150)]}}
    assert code_set_warnings(same_codes) == []
    mixed = {("table2-defaults", "beauty"): {**same_codes[("table2-defaults", "beauty")],
                                             "CCFRec": [record("ccfrec", 0.0145)]}}
    [warning] = code_set_warnings(mixed)
    assert "beauty/rqvae-4x128/defaults" in warning
    assert "collision rate 1.45%, perplexity per level -; collision rate 1.5%" in warning


def test_code_sets_that_collide_alike_are_told_apart_by_their_perplexities():
    # embeddings made afresh gave Beauty's rqvae codes the same 1.32% and other per-level perplexities
    from benchmarks.study.report import code_set_warnings

    def record(kind: str, perplexities: list[float]) -> dict:
        levels = [{"perplexity": p} for p in perplexities]
        return {"run": f"beauty/rqvae-4x128/defaults/{kind}-s44", "config": {"model": {"kind": kind}},
                "collisions": {"collision_rate": 0.013222, "per_level": levels}}

    first = {"SID only": [record("sid", [118.31, 123.1])], "H2Rec": [record("h2rec", [118.29, 123.1])]}
    assert code_set_warnings({("table2-defaults", "beauty"): first}) == []  # printed precision: one set
    remade = {**first, "CCFRec": [record("ccfrec", [120.4, 123.6])]}
    [warning] = code_set_warnings({("table2-defaults", "beauty"): remade})
    assert "perplexity per level 118.3 / 123.1; collision rate 1.32%, perplexity per level 120.4 / 123.6" in warning


def test_protocol_disagreements_compare_rows_on_the_seeds_both_have():
    # while seeds are partial, a row's extra seed must not flip which model a protocol puts first
    from benchmarks.study.report import protocol_disagreements

    def run(seed: int, full: float, sampled: float) -> dict:
        groups = lambda v: {g: {"NDCG@10": v} for g in ("overall", "tail", "head")}  # noqa: E731
        return {"seed": seed, "test": {"full": groups(full), "sampled_100": groups(sampled)}}

    # on seed 42, a leads under both protocols; a's unpaired seed 43 would put it behind on full ranking
    rows = {"a": [run(42, 0.05, 0.30), run(43, 0.00, 0.30)], "b": [run(42, 0.04, 0.20)]}
    assert protocol_disagreements(rows) == []
    rows["b"].append(run(43, 0.04, 0.20))  # now seed 43 is paired: a trails on full ranking, leads sampled
    assert protocol_disagreements(rows)[0].startswith("- overall: b beats a under full ranking")
    assert protocol_disagreements({"a": rows["a"][1:], "b": [run(44, 0.04, 0.20)]}) == []  # no seed in common


def test_tail_head_answer_ranks_rows_on_the_seeds_every_row_has():
    # H2Rec has a second seed whose SASRec run is weak on Tail; ranked on it, H2Rec would look best
    from benchmarks.study.report import tail_head_answer

    def run(seed: int, tail: float, head: float = 0.07) -> dict:
        groups = {"tail": {"NDCG@10": tail}, "head": {"NDCG@10": head}, "overall": {"NDCG@10": (tail + head) / 2}}
        return {"seed": seed, "test": {"full": groups}}

    rows = {"SASRec (hid)": [run(42, 0.020), run(43, 0.010)], "H2Rec": [run(42, 0.019), run(43, 0.020)],
            "tuned": [run(42, 0.021)]}
    lines = tail_head_answer(rows)
    assert "seeds every row has (42;" in lines[0]
    assert lines[-2].startswith("Answer on this dataset: **tuned** helps Tail most (+5.0%)")
    # ... and on both of its seeds paired with SASRec's, in the last column
    assert "| H2Rec | 1 | 0.0190 | -5.0% | - | 0.0700 | +0.0% | -1.1% | 2: +30.0% / +0.0% / +5.3% |" in lines
    assert "| tuned | 1 | 0.0210 | +5.0% | - | 0.0700 | +0.0% | +1.1% | |" in lines
    del rows["tuned"][0]
    rows["tuned"].append(run(44, 0.021))  # no seed common to all three: each row on its own pairs, said so
    lines = tail_head_answer(rows)
    assert "no seed is common to every row yet" in lines[0]
    assert lines[-2].startswith("Answer on this dataset (rows on different seeds: provisional): **H2Rec**")


def test_tail_head_answer_gives_the_paired_t_test_on_tail():
    from scipy import stats

    from benchmarks.study.report import tail_head_answer

    def run(seed: int, tail: float) -> dict:
        groups = {"tail": {"NDCG@10": tail}, "head": {"NDCG@10": 0.07}, "overall": {"NDCG@10": 0.05}}
        return {"seed": seed, "test": {"full": groups}}

    base, ours = [0.020, 0.016, 0.021], [0.022, 0.021, 0.022]
    # rows listed out of seed order: the test must still pair seed with seed
    rows = {"SASRec (hid)": [run(s, t) for s, t in zip((42, 43, 44), base)],
            "PCR-CA": [run(s, t) for s, t in reversed(list(zip((42, 43, 44), ours)))]}
    p = stats.ttest_rel(ours, base).pvalue
    lines = tail_head_answer(rows)
    assert f"| PCR-CA | 3 | 0.0217 | +14.0% | {p:.2g} |" in "\n".join(lines)
    assert f"paired t-test on Tail over 3 seeds: p = {p:.2g}" in lines[-2]


def test_table2_defaults_lists_every_row_of_a_seed_before_the_next_seed():
    runs = experiments.table2_defaults(("beauty", "yelp"), (43, 44))
    keys = [(run.dataset, run.seed) for run in runs]
    assert keys == sorted(keys, key=lambda k: (("beauty", "yelp").index(k[0]), k[1]))
    first_seed = [run.name for run in runs if (run.dataset, run.seed) == ("beauty", 43)]
    assert first_seed[0] == "SASRec (hid)" and "LLM-ESR (llmesr)" in first_seed
    assert len(set(first_seed)) == len(first_seed)
