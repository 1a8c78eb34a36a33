"""benchmarks/selection_protocol.py pairs two records only where they are one training run."""

from __future__ import annotations

import h2rec

from benchmarks import selection_protocol as sp


def record(kind: str = "hid", unseen: bool = True, seed: int = 42, machine: str = "AMD EPYC", **config) -> dict:
    values = h2rec.build_config(overrides={"data.interactions": "/a/amazon-beauty/sequential_data.txt",
                                           "data.semid": "/a/semid", "model.kind": kind,
                                           "eval.exclude_history": unseen, **config}).to_dict()
    groups = {g: {"NDCG@10": 0.04} for g in ("overall", "tail", "head")}
    return {"row": kind, "seed": seed, "machine": machine, "best_epoch": 30 if unseen else 20, "config": values,
            "data": {"interactions_file": values["data"]["interactions"]},
            "test": {"full": groups, "full_unseen": groups}}


def test_one_training_run_selected_two_ways_is_a_pair():
    unseen, ranked = record(), record(unseen=False, **{"eval.negatives": 100})
    ranked["config"]["data"]["interactions"] = "/elsewhere/amazon-beauty/sequential_data.txt"  # another checkout
    assert sp.same_training(unseen, ranked)
    assert not sp.same_training(unseen, record(unseen=False, seed=43))
    assert not sp.same_training(unseen, record(unseen=False, machine="Intel Xeon"))
    assert not sp.same_training(unseen, record(unseen=False, **{"model.dropout": 0.4}))
    other = record(unseen=False)
    other["data"]["interactions_file"] = "/a/yelp/sequential_data.txt"  # the same file name, another dataset
    assert not sp.same_training(unseen, other)


def test_a_record_from_before_the_weight_average_trained_without_one():
    old = record(**{"train.ema_epochs": 0.0, "train.ema_warmup": False})
    for key in ("ema_epochs", "ema_warmup", "ema_decay"):
        del old["config"]["train"][key]
    assert sp.same_training(old, record(unseen=False, **{"train.ema_epochs": 0.0, "train.ema_warmup": False}))
    assert not sp.same_training(old, record(unseen=False))  # today's default averages the weights


def test_models_reading_semantic_ids_are_not_paired():
    # a dataset's codes were encoded again between sittings: the same settings need not be the same run
    assert not sp.same_training(record("h2rec"), record("h2rec", unseen=False))
    left_open = record("hid", unseen=False)
    left_open["config"]["model"]["pca_init"] = None  # the rule for None: off for SASRec
    assert sp.same_training(record("hid", **{"model.pca_init": False}), left_open)
