"""Mean and standard deviation over seeds, and a paired two-sided t-test between two models.

Runs are grouped by a label made of the model, the backbone and every training choice that
differs from the defaults (so an ablation is its own group); runs within a group differ by seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from .checkpoint import read_json
from .config import ModelConfig, TrainConfig
from .errors import H2RecError

# choices that make two runs different models rather than two seeds of one
_LABEL_FIELDS = {"model": ("fusion", "mca", "candidate_weights", "share_encoders", "dim", "num_layers"),
                 "train": ("loss", "beta", "gamma", "code_match", "window", "tau")}
_DEFAULTS = {"model": ModelConfig(), "train": TrainConfig()}


@dataclass
class Run:
    path: Path
    label: str
    seed: int
    results: dict

    def metric(self, split: str, protocol: str, group: str, name: str) -> float:
        try:
            return self.results[split][protocol][group][name]
        except KeyError:
            raise H2RecError(f"{self.path}: results have no {split}/{protocol}/{group}/{name}") from None


def run_label(config: dict) -> str:
    label = f"{config['model']['kind']}/{config['model']['backbone']}"
    changes = [f"{key}={config[section][key]}" for section, keys in _LABEL_FIELDS.items() for key in keys
               if config[section][key] != getattr(_DEFAULTS[section], key)]
    return label + (f" ({', '.join(changes)})" if changes else "")


def load_runs(paths: list[str | Path]) -> list[Run]:
    runs = []
    for path in map(Path, paths):
        results_path = path / "results.json"
        if not results_path.is_file():
            raise H2RecError(f"{path}: no results.json (is the run finished?)")
        config = read_json(path / "config.json")
        runs.append(Run(path, run_label(config), config["train"]["seed"], read_json(results_path)))
    return runs


def paired_p_value(baseline: list[float], target: list[float]) -> float:
    """Two-sided paired t-test of ``target`` against ``baseline`` (paired by position, e.g. by seed),
    as the paper's Table 2 reports; NaN when the differences are all equal."""
    return float(stats.ttest_rel(target, baseline).pvalue)


def summarise(runs: list[Run], split: str = "test", protocol: str = "full",
              groups: tuple[str, ...] = ("overall", "tail", "head"),
              metrics: tuple[str, ...] = ("NDCG@10", "HR@10"),
              baseline: str | None = None, target: str | None = None) -> dict:
    """Per label and metric: mean, std (ddof=1), n. With two labels, the paired t-test of ``target``
    against ``baseline`` (runs paired by seed)."""
    labels = list(dict.fromkeys(r.label for r in runs))
    table: dict[str, dict[str, dict[str, float]]] = {}
    for label in labels:
        group_runs = [r for r in runs if r.label == label]
        table[label] = {}
        for group in groups:
            for name in metrics:
                values = np.array([r.metric(split, protocol, group, name) for r in group_runs])
                table[label][f"{group} {name}"] = {
                    "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values)}
    out = {"split": split, "protocol": protocol, "labels": labels, "table": table, "tests": {}}
    if len(labels) >= 2:
        baseline = baseline or labels[0]
        target = target or labels[1]
        for name in (baseline, target):
            if name not in labels:
                raise H2RecError(f"no runs labelled {name!r}; labels: {labels}")
        base = {r.seed: r for r in runs if r.label == baseline}
        other = {r.seed: r for r in runs if r.label == target}
        seeds = sorted(set(base) & set(other))
        out["tests"] = {"baseline": baseline, "target": target, "seeds": seeds, "p_values": {}}
        if len(seeds) >= 2:
            for group in groups:
                for name in metrics:
                    a = [base[s].metric(split, protocol, group, name) for s in seeds]
                    b = [other[s].metric(split, protocol, group, name) for s in seeds]
                    p = paired_p_value(a, b)
                    out["tests"]["p_values"][f"{group} {name}"] = None if np.isnan(p) else float(p)
    return out


def format_summary(summary: dict) -> str:
    """A Markdown table: one row per label, mean ± std (n) per column, then p-values."""
    columns = list(next(iter(summary["table"].values())))
    lines = [f"{summary['split']} metrics, protocol: {summary['protocol']}", "",
             "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, row in summary["table"].items():
        cells = [f"{row[c]['mean']:.4f} ± {row[c]['std']:.4f} (n={row[c]['n']})" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    tests = summary.get("tests") or {}
    if tests:
        lines += ["", f"paired two-sided t-test, {tests['target']} vs {tests['baseline']}, seeds {tests['seeds']}:"]
        if tests["p_values"]:
            lines.append("| " + " | ".join(tests["p_values"]) + " |")
            lines.append("|" + "---|" * len(tests["p_values"]))
            cells = ["n/a" if p is None else f"{p:.4g}" for p in tests["p_values"].values()]
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append("(needs at least two seeds run by both models)")
    return "\n".join(lines)
