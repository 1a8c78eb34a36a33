"""Tables and plots of the study (`python -m benchmarks.study report`), from whatever runs exist.

Reads the committed run records (benchmarks/results/study/records/, written by runner.archive) and
nothing else. Writes the generated part of docs/results.md (between the `<!-- generated -->` markers;
the findings around it are written by hand), benchmarks/results/study/study.json (every number the
tables show) and PNG plots in docs/img/.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from h2rec.compare import paired_p_value
from h2rec.config import CODE_FREE_KINDS
from scipy import stats

from benchmarks.shared_data import REPO
from benchmarks.study import experiments
from benchmarks.study.experiments import QUANTIZER_ROWS, RESULTS

DOC = REPO / "docs" / "results.md"
IMG = REPO / "docs" / "img"
START, END = "<!-- generated:start -->", "<!-- generated:end -->"
COLUMNS = [("overall", "NDCG@10"), ("overall", "HR@10"), ("tail", "NDCG@10"), ("tail", "HR@10"),
           ("head", "NDCG@10"), ("head", "HR@10")]

# The paper's own figures (benchmarks/study/paper.json): {(table, dataset): {row: [values in COLUMNS order]}}
_PAPER_JSON = json.loads((Path(__file__).with_name("paper.json")).read_text())
assert _PAPER_JSON["columns"] == [f"{g} {m}" for g, m in COLUMNS], "paper.json lists its columns in COLUMNS order"
PAPER = {(table, dataset): rows for table, by_dataset in _PAPER_JSON["tables"].items()
         for dataset, rows in by_dataset.items()}
PAPER_COLLISIONS = {shape: (c["collision_rate_percent"], c["utilisation_percent"])
                    for shape, c in _PAPER_JSON["collisions"].items()}
TITLES = {
    "table2": "Table 2: overall performance",
    "table2-defaults": "Table 2 under h2rec's defaults (full cross-entropy, every training position, dropout 0.5, "
                        "no label smoothing)",
    "table3": "Table 3: ablations",
    "table3-defaults": "Table 3 under h2rec's defaults (full cross-entropy, every training position, dropout 0.5, "
                        "no label smoothing)",
    "llmesr-defaults": "LLM-ESR's parts under h2rec's defaults (its own ablations, and the form of the cross-view "
                       "attention)",
    "quantizer-defaults": "Beyond the paper: what a quantizer's collisions cost, under h2rec's defaults (RQ-VAE "
                          "against RQ-KMeans codes from the same embeddings)",
    "beta": "Figure 3 (left): alignment weight beta",
    "gamma": "Figure 3 (right): granularity weight gamma",
    "code_match": "Table 4: code-matching threshold p",
    "window": "Table 5: context window o",
    "table6": "Table 6: quantization mechanism",
    "table7": "Table 7: backbones",
    "table8": "Table 8: codebook shapes",
    "loss": "Beyond the paper: BPR (Eq. 10) against full cross-entropy",
    "patience": "Beyond the paper: early-stopping patience 10 against 30 epochs",
}
PROTOCOL_NAMES = {"full": "full ranking", "sampled_100": "1 + 100 sampled"}
PROTOCOL_LABELS = {"full": "full ranking",
                   "full_unseen": "full ranking, the user's seen items left out (the public Beauty anchors' protocol)",
                   "sampled_100": "1 + 100 sampled negatives (the paper's protocol)"}
DEFAULTS_SUFFIX = "-defaults"  # a table rerun under h2rec's defaults; its paper-preset twin has the bare name


def collect(datasets=("yelp", "beauty", "scientific", "games"), seeds=range(40, 50)) -> dict:
    """{(table, dataset): {row name: [results of each finished seed]}}, following experiments.EXPERIMENTS.

    The default H2Rec run is a row of nearly every table; a table is kept for a dataset only once
    one of its own runs (one no other table shares) has finished, so that Table 3 on Beauty does
    not appear as a single borrowed row. A borrowed row keeps only the seeds the table's own runs
    have: the default H2Rec run of seed 43 (from Table 2) must not make the one-seed sweeps compare
    a two-seed mean against one-seed variants.
    """
    found: dict = defaultdict(lambda: defaultdict(list))
    owners: dict = defaultdict(set)  # run folder -> tables that use it
    own_seeds: dict = defaultdict(set)  # (table, dataset) -> seeds of its finished runs of its own
    runs = experiments.every_run(datasets, seeds)
    for run in runs:
        owners[run.folder].add(run.table)
    shared = {folder for folder, tables in owners.items() if len(tables) > 1}
    for run in runs:
        if run.record.is_file():
            results = json.loads(run.record.read_text())
            # each Table 2 owns its rows
            results["_borrowed"] = run.folder in shared and run.table not in ("table2", "table2-defaults")
            found[(run.table, run.dataset)][run.name].append(results)
            if not results["_borrowed"]:
                own_seeds[(run.table, run.dataset)].add(run.seed)
    named = {}
    for key, rows in found.items():
        if own_seeds[key]:
            rows = {name: [r for r in results if not r["_borrowed"] or r["seed"] in own_seeds[key]]
                    for name, results in rows.items()}
            named[key] = {name: results for name, results in rows.items() if results}
    return named


def values(runs: list[dict], protocol: str, group: str, metric: str, split: str = "test") -> np.ndarray:
    return np.array([r[split][protocol][group][metric] for r in runs])


def cell(v: np.ndarray) -> str:
    if len(v) == 1:
        return f"{v[0]:.4f}"
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"


def table_markdown(rows: dict[str, list[dict]], protocol: str, paper: dict | None, extra=None) -> list[str]:
    """One row per variant (mean ± std over seeds); under the sampled protocol the paper's row follows ours."""
    extra_cols, extra_cells = extra if extra else ([], None)
    header = [f"{g.title()} {m.replace('NDCG', 'N').replace('HR', 'H')}" for g, m in COLUMNS] + extra_cols
    lines = ["| variant | seeds | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for name, runs in rows.items():
        cells = [cell(values(runs, protocol, g, m)) for g, m in COLUMNS]
        cells += extra_cells(name, runs) if extra_cells else []
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in runs)} | " + " | ".join(cells) + " |")
        if paper and name in paper and protocol.startswith("sampled"):
            cells = [f"*{v:.4f}*" for v in paper[name]] + [""] * len(extra_cols)
            lines.append("| *paper* | | " + " | ".join(cells) + " |")
    return lines


def paired_test(a: list[dict], b: list[dict], protocol: str) -> dict:
    """Two-sided paired t-test of b against a on each column, pairing runs by seed."""
    by_seed_a = {r["seed"]: r for r in a}
    by_seed_b = {r["seed"]: r for r in b}
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    out = {"seeds": seeds}
    for g, m in COLUMNS:
        x = [by_seed_a[s]["test"][protocol][g][m] for s in seeds]
        y = [by_seed_b[s]["test"][protocol][g][m] for s in seeds]
        out[f"{g} {m}"] = paired_p_value(x, y) if len(seeds) >= 2 else None
    return out


def on_common_seeds(a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict]]:
    """The runs of two rows restricted to the seeds both have (both empty where none), so that a row
    with an extra seed does not tilt a comparison of means."""
    common = {r["seed"] for r in a} & {r["seed"] for r in b}
    return [r for r in a if r["seed"] in common], [r for r in b if r["seed"] in common]


def protocol_disagreements(rows: dict[str, list[dict]]) -> list[str]:
    """Pairs of models that full ranking and the sampled protocol order differently (mean NDCG@10
    over the seeds both have, so that partial seed sets do not compare one seed's luck with another's)."""
    names = list(rows)
    lines = []
    for group in ("overall", "tail", "head"):
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                ours, theirs = on_common_seeds(rows[a], rows[b])
                if not ours:
                    continue
                full, samp = (values(ours, p, group, "NDCG@10").mean() - values(theirs, p, group, "NDCG@10").mean()
                              for p in ("full", "sampled_100"))
                if full * samp < 0:
                    winner, loser = (a, b) if full > 0 else (b, a)
                    lines.append(f"- {group}: {winner} beats {loser} under full ranking, "
                                 f"but {loser} is ahead under 1 + 100 sampling.")
    return lines


def collision_columns(name: str, runs: list[dict]) -> list[str]:
    collisions = runs[0].get("collisions")
    if collisions is None:
        return ["-", "-"]
    paper = PAPER_COLLISIONS.get(name)
    ours = f"{100 * collisions['collision_rate']:.2f} / {100 * collisions['utilisation']:.3g}"
    return [ours, f"{paper[0]} / {paper[1]}" if paper else "-"]


# the paper's Figure 1 sets these four apart by popularity group (H2Rec, LLM-ESR, SASRec, SID only)
FIGURE_MODELS = ("SASRec (hid)", "SID only (sid)", "LLM-ESR (llmesr)", "H2Rec")


def tail_head_answer(rows: dict[str, list[dict]], base: str = "SASRec (hid)") -> list[str]:
    """Issue 21's question, from the records: under full ranking, which model helps Tail items most
    against SASRec, and what does it cost on Head? Every row against the base on the seeds that every
    row has, so that the order compares like with like (a row with a seed the others lack would be
    ranked on another SASRec run); a last column gives each row on all the seeds it shares with the
    base where that is more. While no seed is common to all, each row is on its own pairs, and the
    answer says so."""
    if base not in rows or len(rows) < 2:
        return []
    everywhere = set.intersection(*({r["seed"] for r in runs} for runs in rows.values()))
    fmt = lambda v: "-" if v is None else f"{v:+.1f}%"  # noqa: E731

    def against_base(name: str, seeds: set[int] | None) -> tuple[int, dict, dict] | None:
        ours, theirs = on_common_seeds(rows[name], rows[base])
        if seeds is not None:
            ours, theirs = ([r for r in runs if r["seed"] in seeds] for runs in (ours, theirs))
        if not ours:
            return None
        ours, theirs = (sorted(runs, key=lambda r: r["seed"]) for runs in (ours, theirs))  # pairs by seed
        mean = {g: (values(ours, "full", g, "NDCG@10").mean(), values(theirs, "full", g, "NDCG@10").mean())
                for g in ("tail", "head", "overall")}
        change = {g: relative_change(*mean[g]) for g in mean}
        # Tail is the question, so its paired t-test goes beside the means (two or more seeds)
        change["p tail"] = (paired_p_value(list(values(theirs, "full", "tail", "NDCG@10")),
                                           list(values(ours, "full", "tail", "NDCG@10"))) if len(ours) >= 2 else None)
        return len(ours), mean, change

    found = [(name, *got) for name in rows if name != base
             and (got := against_base(name, everywhere or None)) is not None]
    found.sort(key=lambda f: -np.inf if f[3]["tail"] is None else f[3]["tail"], reverse=True)
    paired = {name: against_base(name, None) for name, *_ in found} if everywhere else {}
    more = {name: got for name, got in paired.items() if got is not None and got[0] > len(everywhere)}
    if everywhere:
        shared = ", ".join(str(s) for s in sorted(everywhere))
        lines = [f"Under full ranking (seen items ranked), each model against {base}: mean test NDCG@10 over "
                 f"the seeds every row has ({shared}; the tables above average each row's own), ordered by "
                 "the change on Tail; p Tail: two-sided paired t-test of Tail NDCG@10 against the base over "
                 "those seeds" + ("; the last column: the same means over every seed the row shares with "
                                  f"{base}, where that is more." if more else "."), ""]
    else:
        lines = [f"Under full ranking (seen items ranked), each model against {base}: mean test NDCG@10 over "
                 "the seeds it shares with the base (no seed is common to every row yet, so rows with "
                 "different seeds are compared with different base runs), ordered by the change on Tail; "
                 "p Tail: two-sided paired t-test of Tail NDCG@10 against the base over those seeds.", ""]
    extra = " all paired seeds: n, Tail / Head / Overall vs SASRec |" if more else ""
    p_cell = lambda p: "-" if p is None or np.isnan(p) else f"{p:.2g}"  # noqa: E731
    lines += ["| model | seeds | Tail | vs SASRec | p Tail | Head | vs SASRec | Overall vs SASRec |" + extra,
              "|---|---|---|---|---|---|---|---|" + ("---|" if more else "")]
    for name, n, mean, change in found:
        line = (f"| {name} | {n} | {mean['tail'][0]:.4f} | {fmt(change['tail'])} | {p_cell(change['p tail'])} | "
                f"{mean['head'][0]:.4f} | {fmt(change['head'])} | {fmt(change['overall'])} |")
        if more:
            if name in more:
                k, _, c = more[name]
                line += f" {k}: {fmt(c['tail'])} / {fmt(c['head'])} / {fmt(c['overall'])} |"
            else:
                line += " |"
        lines.append(line)
    if found and found[0][3]["tail"] is not None:
        name, _, _, change = found[0]
        verdict = "helps Tail most" if change["tail"] > 0 else "loses least on Tail (none beats SASRec there)"
        caveat = "" if everywhere else " (rows on different seeds: provisional)"
        p = change["p tail"]
        test = "" if p is None or np.isnan(p) else f"; paired t-test on Tail over {found[0][1]} seeds: p = {p:.2g}"
        lines += ["", f"Answer on this dataset{caveat}: **{name}** {verdict} ({fmt(change['tail'])}{test}), at "
                      f"{fmt(change['head'])} on Head and {fmt(change['overall'])} overall."]
    return lines + [""]


def group_plot(rows: dict[str, list[dict]], dataset: str, suffix: str = "") -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in FIGURE_MODELS if m in rows]
    if len(models) < 2:
        return None
    path = IMG / f"groups_{dataset}{suffix}.png"
    if not all(any(k.startswith("G") for k in r["test"]["full"]) for m in models for r in rows[m]):
        # records rebuilt from study.json (see their "provenance") kept no group metrics: the plot
        # drawn from their original runs stays, and says so
        return (f"![{dataset} popularity groups](img/{path.name}) (drawn from the original runs; their records "
                "keep no group metrics)") if path.is_file() else None
    groups = [k for k in rows[models[0]][0]["test"]["full"] if k.startswith("G")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(models)
    for ax, metric in zip(axes, ("NDCG@10", "HR@10")):
        for i, model in enumerate(models):
            means = [values(rows[model], "full", g, metric).mean() for g in groups]
            ax.bar(np.arange(len(groups)) + i * width, means, width, label=model)
        ax.set_xticks(np.arange(len(groups)) + width * (len(models) - 1) / 2, groups, fontsize=8)
        ax.set_title(f"{dataset}: test {metric} by training popularity (full ranking)", fontsize=9)
        ax.set_xlabel("item group (training interactions)", fontsize=8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"![{dataset} popularity groups](img/{path.name})"


def sweep_plot(found: dict, dataset: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {t: found[(t, dataset)] for t in ("beta", "gamma") if found.get((t, dataset))}
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.5), squeeze=False)
    for ax, (table, rows) in zip(axes[0], series.items()):
        xs = [float(name.split("=")[1]) for name in rows]
        for group in ("overall", "tail", "head"):
            ys = [values(r, "full", group, "NDCG@10").mean() for r in rows.values()]
            order = np.argsort(xs)
            ax.plot(np.array(xs)[order], np.array(ys)[order], marker="o", label=group)
        ax.set_title(f"{dataset}: test NDCG@10 vs {table} (full ranking)", fontsize=9)
        ax.set_xlabel(table)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / f"sweeps_{dataset}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"![{dataset} beta and gamma](img/{path.name})"


def dataset_line(rows: dict[str, list[dict]]) -> str:
    data = next(iter(rows.values()))[0]["data"]
    return (f"Data after loading: {data['users']:,} users ({data['users_evaluated']:,} evaluated), "
            f"{data['catalogue_items']:,} items, {data['interactions']:,} interactions, mean length "
            f"{data['mean_length']}; file `{Path(data['interactions_file']).name}`; "
            f"{data['repeat_share']:.1%} of test targets repeat an item of the user's history.")


def code_set_warnings(named: dict) -> list[str]:
    """Every run of one dataset and codebook shape that reads semantic IDs must read the same ones.
    Records carry the statistics of theirs, so a set remade differently, say by another thread count,
    CPU or embedding cache (docs/semid.md), shows here: by its collision rate, or, where two sets
    collide alike, by its per-level perplexities. Runs of kinds that never read the codes (SASRec,
    LLM-ESR, MELT) record the folder's statistics too but do not count."""
    sets = defaultdict(set)
    for rows in named.values():
        for runs in rows.values():
            for r in runs:
                if "collisions" in r and r["config"]["model"]["kind"] not in CODE_FREE_KINDS:
                    sets[r["run"].rsplit("/", 1)[0]].add(code_set(r["collisions"]))

    def described(found: set) -> str:
        return "; ".join(f"collision rate {rate}%, perplexity per level {levels}" for rate, levels in sorted(found))

    return [f"**Warning**: the runs of `{codes}` used different semantic IDs ({described(found)}); compare them "
            f"with care.\n" for codes, found in sorted(sets.items()) if len(found) > 1]


def code_set(collisions: dict) -> tuple[float, str]:
    """What tells two code sets apart in a record: collision rate (%, as the tables print it) and the
    per-level perplexities (older records without them count by the rate alone)."""
    perplexity = " / ".join(f"{level['perplexity']:.1f}" for level in collisions.get("per_level", []))
    return round(100 * collisions["collision_rate"], 2), perplexity or "-"


def write_report(results_dir: Path = RESULTS) -> None:
    named = collect()
    out: list[str] = []
    numbers: dict = {}
    machines = sorted({r.get("machine", "?") for rows in named.values() for runs in rows.values() for r in runs})
    out += [f"Machine(s): {'; '.join(machines)}.", ""]
    out += code_set_warnings(named)
    out += progress_table()
    for table, title in TITLES.items():
        for (t, dataset), rows in sorted(named.items()):
            if t != table:
                continue
            paper = PAPER.get((table.removesuffix(DEFAULTS_SUFFIX), dataset))
            extra = None
            if table == "table8":
                extra = (["ours Coll.% / Util.%", "paper Coll.% / Util.%"], collision_columns)
            if table in ("table6", "quantizer-defaults"):  # the paper gives no collision figures per quantizer
                extra = (["Coll.% / Util.%"], lambda name, runs: collision_columns(name, runs)[:1])
            hours = sum(r["hours"] for runs in rows.values() for r in runs)
            out += [f"### {title} ({dataset})", "", dataset_line(rows),
                    f"Runs: {sum(len(v) for v in rows.values())}; training and validation took "
                    f"{hours:.2f} h in all (a run shared with another table counts in both).", ""]
            if extra:
                out += ["Coll.% = 1 - distinct code tuples / items, Util.% = distinct tuples / all possible tuples "
                        "(docs/semid.md).", ""]
            # the paper-preset records predate full_unseen; the reruns report it beside the others
            protocols = ("full", "full_unseen", "sampled_100") if table.endswith(DEFAULTS_SUFFIX) else (
                "full", "sampled_100")
            for protocol in protocols:
                out += [f"Test metrics, {PROTOCOL_LABELS[protocol]}; mean ± std over seeds:", ""]
                out += table_markdown(rows, protocol, paper, extra)
                out.append("")
            numbers[f"{table}/{dataset}"] = {
                name: {p: {f"{g} {m}": values(runs, p, g, m).tolist() for g, m in COLUMNS}
                       for p in ("full", "sampled_100")} | {"seeds": [r["seed"] for r in runs],
                                                            "epochs": [r["epochs_run"] for r in runs],
                                                            "best_epoch": [r["best_epoch"] for r in runs],
                                                            "hours": [round(r["hours"], 3) for r in runs],
                                                            "seconds_per_epoch": [r["seconds_per_epoch"] for r in runs]}
                for name, runs in rows.items()}
            if table == "table2-defaults":
                out += tail_head_answer(rows)
            if table in ("table2", "table2-defaults", "loss", "table7", "patience"):
                out += significance(rows, table, paper)
            if table in DEFAULT_ROW:
                out += variant_effects(rows, paper, DEFAULT_ROW[table])
            if table == "quantizer-defaults":  # each model's codes against its own RQ-VAE row
                for model in QUANTIZER_ROWS:
                    same_model = {name: runs for name, runs in rows.items() if name.startswith(f"{model}, ")}
                    out += variant_effects(same_model, None, f"{model}, RQ-VAE codes")
            if table.endswith(DEFAULTS_SUFFIX) and (table.removesuffix(DEFAULTS_SUFFIX), dataset) in named:
                out += settings_change(named[(table.removesuffix(DEFAULTS_SUFFIX), dataset)], rows)
            if table in ("table2", "table2-defaults"):
                disagreements = protocol_disagreements(rows)
                out += ["Where the two protocols disagree (NDCG@10 on all items, Tail and Head):", ""]
                out += disagreements or ["- nowhere: both protocols order these models the same way."]
                out.append("")
                plot = group_plot(rows, dataset, table.removeprefix("table2"))
                if plot:
                    figure = "Figure 1" if "LLM-ESR (llmesr)" in rows else "Figure 4"
                    out += [f"{figure} analogue ({dataset}): metrics by five popularity groups.", "", plot, ""]
        if table == "gamma":
            for dataset in sorted({d for (t, d) in named if t in ("beta", "gamma")}):
                plot = sweep_plot(named, dataset)
                if plot:
                    out += [plot, ""]
    for dataset in sorted({d for (_, d) in named}):
        out += training_length(named, dataset)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "study.json").write_text(json.dumps(numbers, indent=2) + "\n")
    text = DOC.read_text() if DOC.is_file() else f"# Results\n\n{START}\n{END}\n"
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    DOC.write_text(before + START + "\n" + "\n".join(out) + "\n" + END + after)
    print(f"wrote {DOC} and {results_dir / 'study.json'}")


def training_length(named: dict, dataset: str) -> list[str]:
    """Tail and Head NDCG@10 against the best validation epoch, over every distinct H2Rec run on
    SASRec with BPR of a dataset: the variants differ, but if the epoch at which early stopping
    picks a run explains Tail as well as the variant does, one-seed differences between variants
    are partly differences in training length."""
    runs = {}  # by run folder: the default run is a row of most tables, and counts once
    for (_, d), rows in named.items():
        for group in rows.values():
            for r in group:
                c = r["config"]
                if d == dataset and c["model"]["kind"] == "h2rec" and c["model"]["backbone"] == "sasrec" \
                        and c["train"]["loss"] == "bpr":
                    runs[r["run"]] = r
    if len(runs) < 5:
        return []
    runs = list(runs.values())
    epochs = np.array([r["best_epoch"] for r in runs])
    if len(set(epochs)) == 1:  # a rank correlation is undefined
        return [f"### Training length and Tail ({dataset})", "",
                f"All {len(runs)} distinct H2Rec runs (SASRec, BPR) of this page's tables picked the checkpoint of "
                f"epoch {epochs[0]}: there is no training length to correlate.", ""]
    lines = [f"### Training length and Tail ({dataset})", "",
             f"All {len(runs)} distinct H2Rec runs (SASRec, BPR) of this page's tables, whatever their variant: "
             f"Spearman correlation of the best validation epoch (from {epochs.min()} to {epochs.max()}) "
             "with test NDCG@10 under full ranking.", "",
             "| group | rho | p-value |", "|---|---|---|"]
    for group in ("overall", "tail", "head"):
        rho, pvalue = stats.spearmanr(epochs, values(runs, "full", group, "NDCG@10"))
        lines.append(f"| {group} | {rho:+.2f} | {pvalue:.2g} |")
    return lines + [""]


GAIN_COLUMNS = [("overall", "NDCG@10"), ("tail", "NDCG@10"), ("head", "NDCG@10")]


def gain_header(first: str = "protocol") -> list[str]:
    return [f"| {first} | Overall | Tail | Head | p Overall | p Tail | p Head |", "|---|---|---|---|---|---|---|"]


def relative_change(new: float, base: float) -> float | None:
    """100 (new / base - 1), or None where the base is 0 (a Tail no run of the row reached)."""
    return None if base == 0 else 100 * (new / base - 1)


def gain_lines(rows: dict[str, list[dict]], ours: str, base: str, paper: dict | None, label: str = "") -> list[str]:
    """Rows of relative change of ``ours`` against ``base`` in mean NDCG@10, with the p-value of a
    paired two-sided t-test over seeds, per protocol; the paper's change (sampled) after them.
    Only the seeds both rows have count, so an extra seed of one row does not tilt the comparison."""
    rows = dict(zip((ours, base), on_common_seeds(rows[ours], rows[base])))
    if not rows[ours]:
        return [f"| {label}no seed in common | | | | | | |"]
    lines = []
    for protocol in ("full", "sampled_100"):
        test = paired_test(rows[base], rows[ours], protocol)
        gains = [relative_change(values(rows[ours], protocol, g, m).mean(), values(rows[base], protocol, g, m).mean())
                 for g, m in GAIN_COLUMNS]
        ps = [test[f"{g} {m}"] for g, m in GAIN_COLUMNS]
        lines.append(f"| {label}{PROTOCOL_NAMES[protocol]} | " + " | ".join(
            "- (from 0)" if v is None else f"{v:+.1f}%" for v in gains) + " | "
                     + " | ".join("-" if v is None else f"{v:.3g}" for v in ps) + " |")
    if paper and ours in paper and base in paper:
        gains = [100 * (paper[ours][COLUMNS.index(c)] / paper[base][COLUMNS.index(c)] - 1) for c in GAIN_COLUMNS]
        lines.append(f"| *{label}paper, sampled* | " + " | ".join(f"*{v:+.1f}%*" for v in gains) + " | | | |")
    return lines


def significance(rows: dict[str, list[dict]], table: str, paper: dict | None) -> list[str]:
    """H2Rec against the best baseline (by mean full-ranking overall NDCG@10): relative gain of the
    means and a paired two-sided t-test over seeds; the paper's gain over the same baseline beside it."""
    lines = []
    for ours, baselines in contrasts(table, rows):
        best = max(baselines, key=lambda n: values(rows[n], "full", "overall", "NDCG@10").mean())
        lines += [f"{ours} against the best baseline, {best}: relative gain of the mean NDCG@10 over the "
                  "seeds both have, and the p-value of a paired two-sided t-test (needs two or more seeds).", "",
                  *gain_header()]
        lines += gain_lines(rows, ours, best, paper) + [""]
    return lines


# The row each variant of a table is measured against: the configuration every other table uses.
DEFAULT_ROW = {"table3": "H2Rec", "table3-defaults": "H2Rec", "llmesr-defaults": "LLM-ESR", "table6": "RQVAE + H2Rec",
               "table8": "4x128"}


def variant_effects(rows: dict[str, list[dict]], paper: dict | None, reference: str) -> list[str]:
    """Each variant against the default row: for an ablation, a negative change means the removed
    part helped; for a quantizer or codebook shape, how far it moves the metrics from the default."""
    if reference not in rows or len(rows) < 2:
        return []
    lines = [f"Each variant against {reference}, the default: relative change of the mean NDCG@10 (negative: "
             "below the default; in an ablation, the removed part helped), paired t-test over seeds where there "
             "are two or more.", "",
             *gain_header("variant, protocol")]
    for name in rows:
        if name != reference:
            lines += gain_lines(rows, name, reference, paper, label=f"{name}, ")
    return lines + [""]


def settings_change(paper_rows: dict[str, list[dict]], rows: dict[str, list[dict]]) -> list[str]:
    """Each row under h2rec's defaults against the same row under the paper preset (the bare table):
    relative change of the mean test NDCG@10 per protocol, over the seeds both have."""
    lines = ["Each row under h2rec's defaults against the same row under the paper preset (the table without "
             "'defaults' above): relative change of the mean test NDCG@10, paired t-test over the seeds both have.",
             "", *gain_header("row, protocol")]
    for name in rows:
        if name in paper_rows:
            pair = {f"{name}, defaults": rows[name], f"{name}, paper": paper_rows[name]}
            lines += gain_lines(pair, f"{name}, defaults", f"{name}, paper", None, label=f"{name}, ")
    return lines + [""]


def contrasts(table: str, rows: dict) -> list[tuple[str, list[str]]]:
    """(H2Rec row, the baseline rows it is measured against) for each comparison the table makes."""
    if table == "table7":  # each backbone against itself
        pairs = [(f"{b} + H2Rec", [f"{b} (hid)"]) for b in ("gru4rec", "bert4rec")]
    elif table in ("loss", "patience"):  # rows "<model>, <setting>": each setting against its own baselines
        settings = sorted({n.split(", ", 1)[1] for n in rows})
        pairs = [(f"H2Rec, {s}", [n for n in rows if n.endswith(f", {s}") and not n.startswith("H2Rec")])
                 for s in settings]
    else:
        pairs = [("H2Rec", [n for n in rows if n != "H2Rec"])]
    return [(ours, [b for b in baselines if b in rows]) for ours, baselines in pairs
            if ours in rows and any(b in rows for b in baselines)]


def progress_table() -> list[str]:
    """How far each `benchmarks.study` command has got and how long its runs took here, so that a reader
    can plan the rest (a run shared by two commands counts in both). A run still to do is estimated
    by the finished runs of the same dataset, model kind and loss, anywhere in the study."""
    def kind(run) -> tuple:
        return run.dataset, run.overrides.get("model.kind", "h2rec"), run.settings, run.overrides.get("train.loss")

    plans = {command: experiment(experiments.DEFAULT_DATASETS.get(command, ["yelp"]), [42] if command == "sweeps"
                                 else [42, 43, 44]) for command, experiment in experiments.EXPERIMENTS.items()}

    def hours(run) -> float:
        return json.loads(run.record.read_text())["hours"]

    finished = defaultdict(list)
    for run in {run.folder: run for runs in plans.values() for run in runs}.values():
        if run.record.is_file():
            finished[kind(run)].append(hours(run))
    lines = ["### Progress and time per piece", "",
             "| command | datasets | seeds | runs done / planned | hours so far | hours left (est.) |",
             "|---|---|---|---|---|---|"]
    for command, runs in plans.items():
        runs = list({run.folder: run for run in runs}.values())
        done = [hours(r) for r in runs if r.record.is_file()]
        todo = [r for r in runs if not r.record.is_file()]
        guesses = [np.mean(finished[kind(r)]) if finished[kind(r)] else np.nan for r in todo]
        left = "-" if np.isnan(sum(guesses)) else f"{sum(guesses):.1f}"
        lines.append(f"| `benchmarks.study {command}` | {', '.join(sorted({r.dataset for r in runs}))} | "
                     f"{', '.join(sorted({str(r.seed) for r in runs}))} | {len(done)} / {len(runs)} | "
                     f"{sum(done):.1f} | {left} |")
    return lines + ["", "Times are training plus per-epoch validation on this machine; `benchmarks.study prepare` "
                        "(semantic IDs) adds about a minute per dataset and codebook shape once the text is "
                        "embedded (the first embedding of Scientific's long descriptions took 6 minutes beside "
                        "two workers); '-' where no run of that kind has finished yet.", ""]
