"""What the study runs: the shared settings, one function per table, and where each run lives.

A :class:`Run` is named by what it trains (dataset, semantic-ID shape, the options that differ from
its settings' base, seed), not by the table it belongs to: two tables that need the same model share
one run folder and one record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from h2rec.config import PRESETS

from benchmarks.shared_data import WORK

RUNS = WORK / "runs"
RESULTS = Path(__file__).resolve().parents[1] / "results" / "study"
RECORDS = RESULTS / "records"

# shared by every run of the study: the paper preset (BPR, last window, patience in epochs only),
# which is what h2rec's defaults were when the study ran, so its run names and records stay valid
BASE = {
    **PRESETS["paper"],
    # settings that came later, at the values the study trained with (its CE rows had no label smoothing)
    "train.label_smoothing": 0.0,
    "train.ema_epochs": 0.0,
    "train.ema_warmup": False,
    "model.dim": 64,
    "model.num_layers": 2,
    "train.epochs": 200,
    "train.patience": 10,
    "train.batch_size": 256,
    "eval.negatives": 100,  # report the paper's protocol beside full ranking
    "eval.select_on": "full",
}
# Tables 2 and 3 again under h2rec's defaults, the settings issue 17 measured best (full cross-entropy,
# every training position, dropout 0.5, patience in epochs and optimizer steps): the study's sizes
# and protocols, nothing of the paper preset.
# Without the label smoothing (or any later default, such as a weight average) that came after them
# (README, "Defaults"): every run of these tables trains the setting they started with.
DEFAULTS = {**{key: BASE[key] for key in ("model.dim", "model.num_layers", "train.epochs", "train.batch_size",
                                          "eval.negatives", "eval.select_on")},
            "train.label_smoothing": 0.0, "train.ema_epochs": 0.0, "train.ema_warmup": False,
            # selected with seen items ranked, as these tables were run (the default now leaves them out
            # where no training sequence repeats an item)
            "eval.exclude_history": False}
SETTINGS = {"paper": BASE, "defaults": DEFAULTS}


@dataclass(frozen=True)
class SemanticIDs:
    quantizer: str = "rqvae"
    levels: int = 4
    codebook: int = 128
    pca_dim: int = 0  # rqkmeans only: semid's --pca-dim

    @property
    def slug(self) -> str:
        projection = f"-pca{self.pca_dim}" if self.pca_dim else ""
        return f"{self.quantizer}{projection}-{self.levels}x{self.codebook}"


@dataclass(frozen=True)
class Run:
    table: str
    dataset: str
    name: str  # row label in the table
    seed: int
    overrides: dict = field(default_factory=dict, hash=False)
    sids: SemanticIDs = SemanticIDs()
    settings: str = "paper"  # a key of SETTINGS: what the overrides are applied to

    @property
    def base(self) -> dict:
        return SETTINGS[self.settings]

    @property
    def folder(self) -> Path:
        """Named by what is trained, not by the table: two tables that need the same model (the
        default H2Rec is a row of Tables 2-8) share one run."""
        return RUNS / self.name_path

    @property
    def name_path(self) -> Path:
        # the paper-preset runs keep the names they were recorded under; other settings get a folder
        settings = () if self.settings == "paper" else (self.settings,)
        return Path(self.dataset, self.sids.slug, *settings, f"{config_slug(self.overrides, self.base)}-s{self.seed}")

    @property
    def record(self) -> Path:
        """The committed copy of the finished run's results (see `archive`)."""
        path = RECORDS / self.name_path
        return path.with_name(path.name + ".json")  # not with_suffix: names hold dots, as in 'beta=0.1-s42'


def config_slug(overrides: dict, base: dict = BASE) -> str:
    """The options that differ from ``base``, e.g. 'kind=hid,backbone=gru4rec,num_layers=1'."""
    import h2rec

    config = h2rec.build_config(overrides={**base, **overrides}).to_dict()
    default = h2rec.build_config(overrides=base).to_dict()
    changed = [f"{key}={config[section][key]}" for section in ("model", "train")
               for key in config[section] if config[section][key] != default[section][key]]
    return ",".join(changed) or "h2rec"


def semid_folder(dataset: str, sids: SemanticIDs) -> Path:
    return WORK / dataset / f"semid-{sids.slug}"




def table2(datasets, seeds) -> list[Run]:
    models = {
        "SASRec (hid)": {"model.kind": "hid", "model.backbone": "sasrec"},
        "BERT4Rec (hid)": {"model.kind": "hid", "model.backbone": "bert4rec", "model.num_heads": 2},
        "GRU4Rec (hid)": {"model.kind": "hid", "model.backbone": "gru4rec", "model.num_layers": 1},
        "SID only (sid)": {"model.kind": "sid", "model.backbone": "sasrec"},
        "H2Rec": {"model.kind": "h2rec", "model.backbone": "sasrec"},
    }
    return [Run("table2", d, name, s, o) for d in datasets for s in seeds for name, o in models.items()]


def table3(datasets, seeds) -> list[Run]:
    variants = {
        "H2Rec": {},
        "w/o FN": {"model.fusion": False},
        "w/o L_CA": {"train.beta": 0.0},
        "w/o MCA": {"model.mca": False},
        "w/o L_MSG": {"train.gamma": 0.0},
    }
    return [Run("table3", d, name, s, {"model.kind": "h2rec", **o})
            for d in datasets for s in seeds for name, o in variants.items()]


# Issue 21: the paper's rivals beside Table 2's models, under the same defaults and budget (every row
# trains with h2rec's defaults and early stopping; none is tuned apart). PCR-CA's codebooks are
# parallel, so it reads the product-quantized folder of the same shape (Table 6's PQ codes).
RIVALS = {
    "LLM-ESR (llmesr)": ({"model.kind": "llmesr", "model.backbone": "sasrec"}, SemanticIDs()),
    "MELT (melt)": ({"model.kind": "melt", "model.backbone": "sasrec"}, SemanticIDs()),
    "CCFRec (ccfrec)": ({"model.kind": "ccfrec", "model.backbone": "sasrec"}, SemanticIDs()),
    "PCR-CA (pcrca)": ({"model.kind": "pcrca", "model.backbone": "sasrec"}, SemanticIDs("pq", 4, 128)),
}


# The control the accuracy study (benchmarks/accuracy.py) found H2Rec's gain to come from: SASRec whose
# ID table starts from the principal components of the item text embeddings, as H2Rec's and LLM-ESR's
# collaborative tables do; without it, a text-initialised model's edge mixes the start and the method.
CONTROLS = {
    "SASRec, text-initialised (hid, PCA)": ({"model.kind": "hid", "model.backbone": "sasrec",
                                            "model.pca_init": True}, SemanticIDs()),
}


# The strongest plain SASRec we know: `h2rec train --preset sasrec`, the setting our search picked on
# Beauty validation (benchmarks/accuracy.py). A gain over the default SASRec row alone proves little.
BASELINES = {"SASRec, tuned (hid, --preset sasrec)": ({**PRESETS["sasrec"]}, SemanticIDs())}


def table2_defaults(datasets, seeds) -> list[Run]:
    runs = [replace(run, table="table2-defaults", settings="defaults") for run in table2(datasets, seeds)]
    runs += [Run("table2-defaults", d, name, s, o, sids, settings="defaults") for d in datasets for s in seeds
             for name, (o, sids) in {**RIVALS, **CONTROLS, **BASELINES}.items()]
    # every row of a seed before the next seed (a stable sort keeps the rows' order): a study stopped
    # part way then has whole seeds, which the paired comparisons need
    datasets = list(datasets)
    return sorted(runs, key=lambda run: (datasets.index(run.dataset), run.seed))


def table3_defaults(datasets, seeds) -> list[Run]:
    return [replace(run, table="table3-defaults", settings="defaults") for run in table3(datasets, seeds)]


# LLM-ESR's own ablation study under the same defaults, and the one form of (L3) the paper leaves open:
# the authors' code replaces each view by its cross-attended form, with masks that let every position
# see the whole sequence; under a causal mask a position no longer keeps its own item (docs/model.md).
# The default form, no cross-view attention, was chosen from these rows on validation.
LLMESR_PARTS = {
    "LLM-ESR": {},  # model.llmesr_cross "off": the views meet in the score only
    "cross-view attention replacing each view (the authors' code)": {"model.llmesr_cross": "replace"},
    "cross-view attention added to each view (residual)": {"model.llmesr_cross": "residual"},
    "w/o self-distillation": {"train.distill_weight": 0.0},
}


def llmesr_defaults(datasets, seeds) -> list[Run]:
    overrides, sids = RIVALS["LLM-ESR (llmesr)"]
    return [Run("llmesr-defaults", d, name, s, {**overrides, **o}, sids, settings="defaults")
            for d in datasets for s in seeds for name, o in LLMESR_PARTS.items()]


# What a quantizer's collisions cost a recommender (issue 23): SID-only, which tells colliding items
# apart by nothing but their codes, and H2Rec, whose hash IDs tell them apart, on the study's RQ-VAE
# codes and on RQ-KMeans codes (GRID's default; 6x the collisions on Beauty, docs/semid.md 3.1) made
# from the same embeddings, under the defaults of Table 2. The RQ-VAE rows are Table 2's runs.
# RQ-KMeans on the embeddings' first 32 principal components (semid --pca-dim 32) collides 3.2%.
QUANTIZER_ROWS = {"SID only": {"model.kind": "sid"}, "H2Rec": {}}
QUANTIZER_CODES = {"RQ-VAE": SemanticIDs(), "RQ-KMeans": SemanticIDs("rqkmeans", 4, 128),
                   "RQ-KMeans, 32 PCs": SemanticIDs("rqkmeans", 4, 128, pca_dim=32)}


def quantizer_defaults(datasets, seeds) -> list[Run]:
    return [Run("quantizer-defaults", d, f"{row}, {codes} codes", s, overrides, sids, settings="defaults")
            for d in datasets for s in seeds for row, overrides in QUANTIZER_ROWS.items()
            for codes, sids in QUANTIZER_CODES.items()]


def sweeps(datasets, seeds) -> list[Run]:
    runs = []
    for d in datasets:
        for s in seeds:
            for v in (0.1, 0.3, 0.5, 0.7, 0.9):
                runs.append(Run("beta", d, f"beta={v}", s, {"train.beta": v}))
                runs.append(Run("gamma", d, f"gamma={v}", s, {"train.gamma": v}))
            for p in (0, 1, 2, 3):
                runs.append(Run("code_match", d, "removed" if p == 0 else f"p={p}", s, {"train.code_match": p}))
            for o in (0, 1, 3, 5):
                runs.append(Run("window", d, "removed" if o == 0 else f"o={o}", s, {"train.window": o}))
    return runs


def table6(datasets, seeds) -> list[Run]:
    return [Run("table6", d, f"{q.upper()} + H2Rec", s, {}, SemanticIDs(q, 4, 128))
            for d in datasets for s in seeds for q in ("vq", "pq", "rq", "rqvae")]


def table7(datasets, seeds) -> list[Run]:
    runs = []
    for backbone, extra in (("gru4rec", {"model.num_layers": 1}), ("bert4rec", {"model.num_heads": 2})):
        for kind, name in (("hid", f"{backbone} (hid)"), ("h2rec", f"{backbone} + H2Rec")):
            runs += [Run("table7", d, name, s, {"model.kind": kind, "model.backbone": backbone, **extra})
                     for d in datasets for s in seeds]
    return runs


def table8(datasets, seeds) -> list[Run]:
    shapes = [(3, 128), (3, 256), (3, 512), (4, 128), (4, 256)]
    return [Run("table8", d, f"{levels}x{k}", s, {}, SemanticIDs("rqvae", levels, k))
            for d in datasets for s in seeds for levels, k in shapes]


def loss_choice(datasets, seeds) -> list[Run]:
    models = {"SASRec (hid)": {"model.kind": "hid"}, "SID only (sid)": {"model.kind": "sid"},
              "H2Rec": {"model.kind": "h2rec"}}
    return [Run("loss", d, f"{name}, {loss}", s, {**o, "train.loss": loss})
            for d in datasets for s in seeds for name, o in models.items() for loss in ("bpr", "ce")]


def patience_check(datasets, seeds) -> list[Run]:
    """Finding 13 asks whether early stopping decides Tail: the Table 2 models again with a patience
    of 30 epochs instead of 10 (the patience-10 rows are Table 2's own runs)."""
    models = {"SASRec (hid)": {"model.kind": "hid"}, "SID only (sid)": {"model.kind": "sid"},
              "H2Rec": {"model.kind": "h2rec"}}
    return [Run("patience", d, f"{name}, patience {p}", s, {**o, "train.patience": p})
            for d in datasets for s in seeds for name, o in models.items() for p in (10, 30)]


def every_run(datasets, seeds) -> list[Run]:
    """The runs of every experiment; a run shared by two tables appears once per table."""
    return [run for experiment in EXPERIMENTS.values() for run in experiment(list(datasets), list(seeds))]


EXPERIMENTS = {"table2": table2, "table3": table3, "table2-defaults": table2_defaults,
               "table3-defaults": table3_defaults, "llmesr-defaults": llmesr_defaults,
               "quantizer-defaults": quantizer_defaults, "sweeps": sweeps,
               "table6": table6, "table7": table7,
               "table8": table8, "loss": loss_choice, "patience": patience_check}
# the others: Yelp, the paper's domain; the patience check on the smallest catalogue, where it is cheap
DEFAULT_DATASETS = {"table2": ["yelp", "beauty", "scientific"], "table3": ["yelp", "scientific"], "loss": ["beauty"],
                    "table2-defaults": ["scientific", "beauty", "yelp"], "table3-defaults": ["scientific", "yelp"],
                    "llmesr-defaults": ["scientific"], "quantizer-defaults": ["beauty"],
                    "patience": ["scientific"]}


