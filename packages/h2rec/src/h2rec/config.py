"""Typed configuration: four small frozen dataclasses, merged from defaults, a YAML file and CLI flags.

Every run folder stores the resolved configuration as ``config.json``; an unknown key, in a file
or an override, fails with the list of valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import H2RecError

ModelKind = Literal["h2rec", "hid", "sid", "llmesr", "melt", "ccfrec", "pcrca"]
# kinds that never read the items' semantic IDs (LLM-ESR reads their text embeddings, MELT nothing of
# the folder); a run of any other kind depends on the very codes of its folder
CODE_FREE_KINDS = ("hid", "llmesr", "melt")
SPARSE_ID_KINDS = ("hid", "h2rec")  # kinds whose item ID table train.sparse_ids can update lazily
Backbone = Literal["sasrec", "gru4rec", "bert4rec"]
RankingLoss = Literal["ce", "sampled_softmax", "gbce", "bce", "bpr"]
WindowScheme = Literal["sliding", "random", "last"]


@dataclass(frozen=True)
class DataConfig:
    interactions: str = ""  # CSV/TSV/JSONL/Parquet, RecBole .inter, P5 sequences (.txt), LC-Rec {user: [items]} JSON
    semid: str = ""  # a `semid encode` output folder: the items' semantic IDs, codebooks, text embeddings
    format: str = "auto"  # "auto" guesses from the file name; or csv, tsv, jsonl, parquet, inter, sequences, json
    user_field: str = "user_id"  # column names for CSV/TSV/JSONL interactions
    item_field: str = "item_id"
    time_field: str = "timestamp"  # used when present; otherwise file order is chronological order
    k_core: int = 0  # 0 = no filter; k = drop users and items with fewer than k interactions, repeatedly
    # refuse a semid folder of which fewer than this share of items occur in the interactions (another
    # catalogue whose ids happen to overlap); 0 = accept any
    min_catalogue_coverage: float = 0.5
    max_len: int = 50  # most recent items a history keeps
    head_share: float = 0.2  # top 20% of items by training interactions are Head (paper §4.1.4)
    # five popularity groups by training count: 4 cut points, e.g. (5, 10, 20, 40); None = item quintiles
    group_bounds: tuple[int, ...] | None = None
    # read the interactions through their prepared copy in the user cache folder (h2rec.dataset_cache),
    # written on the first read; false = parse the file every time and write nothing
    cache: bool = True


@dataclass(frozen=True)
class ModelConfig:
    kind: ModelKind = "h2rec"  # "hid": hash IDs only; "sid": semantic IDs only; "h2rec": both branches
    # ("llmesr": the rival LLM-ESR, text embeddings and IDs, h2rec.rivals; docs/model.md "LLM-ESR")
    # ("melt": the rival MELT, item IDs with long-tail user and item branches; docs/model.md "MELT")
    # ("pcrca": the rival PCR-CA, parallel-codebook semantic IDs and hash IDs, contrastively aligned;
    # docs/model.md "PCR-CA")
    # ("ccfrec": the rival CCFRec, semantic codes fused with text views, no item IDs; docs/model.md "CCFRec")
    backbone: Backbone = "sasrec"
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 1  # SASRec's best setting; BERT4Rec runs use 2
    # hidden dropout: feed-forward and residual branches (GRU4Rec: between layers). 0.5, as SASRec's
    # authors used on sparse data, beat 0.2 on Beauty validation (benchmarks/results/accuracy.md)
    dropout: float = 0.5
    emb_dropout: float | None = None  # on the input item embeddings (+ positions); None = dropout
    attn_dropout: float | None = None  # on the attention weights (SASRec, BERT4Rec); None = dropout
    backbone_options: dict = field(default_factory=dict)  # more srs_backbones.build_encoder keys: {"norm": "post"}
    share_encoders: bool = False  # paper: two independent encoders f_θ1, f_θ2; the authors' code shares one
    fusion: bool = True  # Eq. 2-3 multi-granularity fusion; False = fixed equal weights (Table 3 "w/o FN")
    fusion_hidden: int | None = None  # d_h of Eq. 2; None = dim
    prior_decay: float = 0.5  # b_prior starts at -prior_decay * l: coarse levels first (§3.2.1); 0 = uniform
    mca: bool = True  # Eq. 4-5 multi-granularity cross attention (Table 3 "w/o MCA")
    candidate_weights: Literal["intent", "uniform"] = "intent"  # level weights of a candidate's e^sid in Eq. 9
    # Algorithm 1 line 6; None = on for h2rec when text embeddings exist, off otherwise (llmesr: on, its
    # collaborative view's init; false = the LLM-ESR ablation with a random ID table)
    pca_init: bool | None = None
    init_std: float = 0.02
    # --- LLM-ESR (model.kind "llmesr" only; docs/model.md "LLM-ESR", (L3)): what each view's cross-view
    # attention does to it. "replace": the view becomes its attended form, as the authors' code (which
    # is not causal there, so every position also saw the items after it); "residual": the attended
    # form is added to the view; "off": no cross-view attention (the views meet only in the score).
    # "off" had the best validation NDCG@10 under causal masks (Scientific, benchmarks.study llmesr-defaults)
    llmesr_cross: Literal["replace", "residual", "off"] = "off"
    # --- CCFRec (model.kind "ccfrec" only; docs/model.md "CCFRec", (C1)-(C10))
    # V text views: contiguous slices of each item's text embedding, each whitened-PCA'd to dim (C1);
    # 5 as the authors' five text attributes (title, brand, features, categories, description); 1 = one view
    ccfrec_views: int = 5
    ccfrec_layers: int = 2  # layers of the semantic-fusion module (C3) (the authors' n_layers_cross)
    ccfrec_dropout: float = 0.3  # dropout in the semantic-fusion module (the authors' dropout_prob_cross)
    ccfrec_tau: float = 0.07  # τ of the cosine scores (C6), (C8) and (C9) (the authors' default)


# 0.1 beat 0 for H2Rec on Beauty validation on seeds 42-44 and for SASRec on seed 42
# (benchmarks/results/accuracy.md, "label smoothing 0.1" rows)
DEFAULT_LABEL_SMOOTHING = 0.1


@dataclass(frozen=True)
class TrainConfig:
    # --- what each training position learns from
    loss: RankingLoss = "ce"  # full softmax cross-entropy; the paper's Eq. 10 is "bpr" (--preset paper)
    # ce only: share of the target's mass spread over the catalogue. None = DEFAULT_LABEL_SMOOTHING under
    # the full softmax, 0 under any other loss or with exclude_seen (resolved into config.json)
    label_smoothing: float | None = None
    # ce only: leave the items before each target out of its softmax, as evaluation with seen items left
    # out (eval.exclude_history) leaves them out of the ranking; for data without repeat interactions
    exclude_seen: bool = False
    ce_chunk_items: int = 65536  # ce: catalogue items scored at once; bounds memory at 10^6 items
    # loss "ce" on a catalogue above this size trains as "sampled_softmax" (logQ-corrected): the full
    # softmax costs O(catalogue) per position; 0 = never switch
    ce_max_items: int = 100_000
    sampled_negatives: int = 1024  # sampled_softmax: negatives shared by all positions of a batch
    sampler: Literal["uniform", "popularity", "in_batch"] = "uniform"  # sampled_softmax's proposal
    popularity_alpha: float = 0.75  # sampler="popularity": q(i) ∝ training count ** alpha
    logq: bool = True  # sampled_softmax: subtract log q(i) from each candidate's logit (sampling-bias correction)
    num_negatives: int = 1  # bpr, bce, gbce: negatives sampled per position, outside the user's window
    gbce_t: float = 0.75  # gbce calibration t (gSASRec's default); 0 = plain bce
    # Eq. 10 is Σ_u Σ_j: summed over each user's positions, averaged over the batch's users ("user_sum"),
    # or averaged over positions ("mean"). user_sum won on Beauty validation (docs/model.md).
    rec_reduction: Literal["mean", "user_sum"] = "user_sum"
    # --- H2Rec's alignment losses (Eq. 6-8, 11)
    beta: float = 0.5  # β, weight of L_CA in Eq. 11; paper searches 0.1-0.9
    gamma: float = 0.3  # γ, weight of L_MSG in Eq. 11; paper searches 0.1-0.9
    tau: float = 1.0  # temperature of Eq. 6-8 (the paper gives none); 1.0 won on Beauty validation over 0.2, 0.5
    code_match: int = 3  # p: items sharing the first p code levels are positives (Eq. 7); 0 = removed
    window: int = 3  # o: items within o positions in the same sequence are positives (Eq. 7); 0 = removed
    ca_max_items: int = 256  # B of Eq. 6-7: item positions per batch that enter L_CA (cost is quadratic in B)
    mask_prob: float = 0.2  # BERT4Rec cloze masking ratio
    # --- LLM-ESR's retrieval-augmented self-distillation (model.kind "llmesr" only)
    distill_weight: float = 0.1  # α of L = L_rec + α L_sd (the authors' setting); 0 = no self-distillation
    similar_users: int = 10  # N: users retrieved per user by their training items' text (the paper's default)
    # --- MELT's bilateral branches (model.kind "melt" only; docs/model.md "MELT", (M1)-(M8))
    user_branch_weight: float = 0.1  # λ_U of L = L_rec + λ_U L_u + λ_I L_i (the authors' Beauty setting); 0 = off
    item_branch_weight: float = 0.4  # λ_I, the same (the authors' Beauty setting); 0 = off
    # Pareto share a: the top a of users by training length and of items by training count are head (M1);
    # 0.2 on Amazon data, as the paper; the authors use 0.5 on Foursquare and Behance
    melt_head_share: float = 0.2
    curriculum_epochs: int | None = None  # e_max of the curriculum (M7); None = train.epochs (authors: 180-200)
    # the authors start MELT from a trained SASRec: a finished "hid" run folder on the same data, backbone
    # and sizes, whose best weights start the encoder and item table; "" = from scratch
    melt_init: str = ""
    # --- PCR-CA's contrastive alignment (model.kind "pcrca" only; docs/model.md "PCR-CA", (P5)-(P7))
    item_contrast_weight: float = 0.1  # λ_I of L = L_rec + λ_I L_item + λ_U L_user; 0 = no item-level term
    user_contrast_weight: float = 0.1  # λ_U, the same; 0 = no user-level term
    contrast_tau: float = 0.1  # τ of both InfoNCE terms (cosine similarities)
    contrast_max_items: int = 1024  # items per batch in L_item at most (its cost is quadratic in them)
    # --- CCFRec's code masking (model.kind "ccfrec" only; docs/model.md "CCFRec", (C7)-(C10)); the authors' run.sh
    mcm_weight: float = 0.6  # λ_MCM, weight of masked code modeling (C8); 0 = off
    msa_weight: float = 0.4  # λ_MSA, weight of masked sequence alignment (C9); 0 = off
    code_mask_ratio: float = 0.5  # ρ: share of the input items' code tokens selected for masking (C7)
    # --- which rows an epoch trains on: every training target once per epoch unless "last"
    windows: WindowScheme = "sliding"  # "random": a new window phase each epoch; "last": last window only
    window_stride: int | None = None  # sliding/random: items between window ends; None = max_len
    # --- optimisation
    epochs: int = 200
    batch_size: int = 256
    bucket_batches: int = 16  # batch rows of similar length within chunks of this many batches; 1 = plain shuffling
    lr: float = 1e-3
    weight_decay: float = 0.0  # AdamW's decoupled decay, on matrices only (not biases or norms)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"  # decays to 0 at `epochs` epochs
    warmup_steps: int = 0  # linear warm-up from 0 over this many optimizer steps
    grad_clip: float = 0.0  # clip the gradient's global norm to this; 0 = off
    # sampled losses only: the item ID table gets sparse gradients and lazy Adam updates (torch's
    # SparseAdam: only the rows a step reads move, and only their moments decay), the other parameters
    # AdamW, and the weight average updates a row when a step reads it (optim.LazyTableAverage). A step
    # then no longer writes every row of a large table (benchmarks/optimizer_step.py)
    sparse_ids: bool = False
    # > 0: validation and the best checkpoint use an exponential moving average of the weights, updated
    # every optimizer step with decay 1 - 1 / (ema_epochs x optimizer steps an epoch): a horizon in epochs,
    # so that it means the same on Beauty's 88 steps an epoch and on a small set's 4; 0 = the weights themselves
    ema_epochs: float = 10.0
    # the average is the plain mean of the steps so far until it has seen a horizon's worth of them:
    # short runs then keep trained weights, not the first step's
    ema_warmup: bool = True
    # > 0: the decay per optimizer step itself (0.999: a horizon of about 1,000 steps), in place of ema_epochs
    ema_decay: float = 0.0
    # --- early stopping on validation NDCG@10: stop when neither clock has time left
    patience: int = 10  # epochs without a better validation NDCG@10 ...
    patience_steps: int = 1000  # ... and at least this many optimizer steps (small data: an epoch is a few steps)
    eval_every: int = 1
    seed: int = 42
    device: str = "auto"
    # torch.compile the training model's Transformer blocks and H2Rec's fusion and cross attention
    # (h2rec.compiled): fewer kernel launches where a step is launch-bound (a GPU at batch 256); the
    # first steps and each new batch shape pay the compile. Off: no faster on one CPU thread
    # (benchmarks/results/h2rec_speed_compile_cpu.md); on a GPU, where it is meant to help, unmeasured.
    compile: bool = False


@dataclass(frozen=True)
class EvalConfig:
    negatives: int = 0  # > 0 adds the paper's protocol (1 positive + this many sampled negatives) to the report
    select_on: Literal["full", "sampled"] = "full"  # protocol of the validation NDCG@10 that picks the checkpoint
    negatives_seed: int = 2024  # candidates are drawn once with this seed, so every model sees the same ones
    # full ranking is reported with the user's seen items in ("full") and left out ("full_unseen");
    # True selects the checkpoint on full_unseen, the protocol of the strong public SASRec figures.
    # None: True when no user's training sequence holds an item twice, else False (resolved into
    # config.json). On such data a seen item is never the next one, and the curve with seen items ranked
    # flattens early and stops runs that still improve (benchmarks/results/selection_protocol.md)
    exclude_history: bool | None = None
    batch_size: int = 512
    # full ranking scores this many items at a time: memory is (batch_size, item_chunk) scores, not
    # (batch_size, catalogue); catalogues up to this size are ranked in one pass
    item_chunk: int = 65536
    ks: tuple[int, ...] = (5, 10, 20)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}

# Named starting points: a preset's values come first, then a config file's, then flags.
PRESETS: dict[str, dict[str, Any]] = {
    # The H2Rec paper's objective (Eq. 10-11: BPR with one sampled negative per position, β = 0.5,
    # γ = 0.3, p = o = 3) with the training loop of this toolkit's first study (docs/results.md):
    # the last window of each history only, early stopping after 10 epochs without a better
    # validation NDCG@10 with seen items ranked, constant learning rate 1e-3, dropout 0.2, no average of
    # the weights.
    "paper": {"train.loss": "bpr", "train.num_negatives": 1, "train.beta": 0.5, "train.gamma": 0.3,
              "train.code_match": 3, "train.window": 3, "train.windows": "last", "train.patience": 10,
              "train.patience_steps": 0, "train.lr": 1e-3, "train.lr_schedule": "constant", "model.dropout": 0.2,
              "train.ema_epochs": 0.0, "eval.exclude_history": False},
    # SASRec (item IDs only) as our search found it on Beauty (`python -m benchmarks.accuracy tune`, trial
    # 15): ahead of the defaults on validation on seeds 42-44 (+0.7%, +2.8%, +1.7%); on test 0.0591 ± 0.0008
    # against 0.0586 ± 0.0003. A preset, not the default: under H2Rec the same values lose (validation
    # 0.0734 against 0.0751, seed 42). lr is the search's draw, kept exact so the preset repeats its runs.
    "sasrec": {"model.kind": "hid", "model.backbone": "sasrec", "model.dropout": 0.4, "model.emb_dropout": 0.5,
               "model.attn_dropout": 0.5, "train.label_smoothing": 0.1, "train.lr": 0.002084186310279843},
}


def _coerce(value: Any, hint: Any) -> Any:
    # YAML and JSON have lists, the dataclasses hold tuples (hashable, frozen); paths are stored as text.
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    # PyYAML (YAML 1.1) reads `lr: 1e-3` as the text "1e-3": a float field takes the number it spells
    # (anything else, e.g. "fast", stays text and _check_values refuses it)
    if isinstance(value, str) and float in _members(hint):
        try:
            return float(value)
        except ValueError:
            return value
    return tuple(value) if isinstance(value, list) else value


def build_config(values: dict[str, dict[str, Any]] | None = None, overrides: dict[str, Any] | None = None,
                 source: str = "config", preset: str | None = None, flags: dict[str, str] | None = None) -> Config:
    """A :class:`Config` from a named ``preset`` (see PRESETS), then nested ``{"model": {"dim": 64}}``
    values, then dotted ``{"model.dim": 64}`` overrides.

    Errors start with ``source``; ``flags`` maps dotted keys to the command-line flags that set them
    (``{"train.lr": "--lr"}``): a bad override among them is blamed on its flag, not on ``source``."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if preset is not None:
        if preset not in PRESETS:
            raise H2RecError(f"{source}: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        for dotted, value in PRESETS[preset].items():
            name, _, key = dotted.partition(".")
            merged[name][key] = value
    for name, section_values in (values or {}).items():
        if name not in SECTIONS:
            raise H2RecError(f"{source}: unknown section {name!r}; valid sections: {sorted(SECTIONS)}")
        if not isinstance(section_values, dict):
            raise H2RecError(f"{source}: section {name!r} must be a mapping of keys to values")
        merged[name].update(section_values)
    for dotted, value in (overrides or {}).items():
        name, _, key = dotted.partition(".")
        if name not in SECTIONS or not key:
            raise H2RecError(f"{source}: override {dotted!r} must look like 'section.key' "
                             f"with a section in {sorted(SECTIONS)}")
        merged[name][key] = value
    # where each value came from, for messages: "command line: --lr (train.lr)" or "run.yaml: train.lr"
    flagged = {dotted: flag for dotted, flag in (flags or {}).items() if dotted in (overrides or {})}

    def where(name: str, key: str) -> str:
        dotted = f"{name}.{key}"
        return f"command line: {flagged[dotted]} ({dotted})" if dotted in flagged else f"{source}: {dotted}"

    sections = {}
    for name, cls in SECTIONS.items():
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged[name]) - valid)
        if unknown:
            raise H2RecError(f"{source}: unknown key(s) {unknown} in section {name!r}; valid keys: {sorted(valid)}")
        hints = typing.get_type_hints(cls)
        sections[name] = cls(**{k: _coerce(v, hints[k]) for k, v in merged[name].items()})
        _check_values(sections[name], name, where)
    config = Config(**sections)
    _check_together(config, where)
    return config


# Natural ranges, by field name (a name means the same in every section). A value outside would
# crash deep inside torch or numpy, or train without a word and report nonsense (tau = 0: inf metrics).
_POSITIVE = {"dim", "num_layers", "num_heads", "max_len", "epochs", "patience", "batch_size", "eval_every",
             "ca_max_items", "num_negatives", "sampled_negatives", "ce_chunk_items", "bucket_batches",
             "window_stride", "fusion_hidden", "similar_users", "item_chunk", "curriculum_epochs",
             "ccfrec_views", "ccfrec_layers"}
_NON_NEGATIVE = {"ce_max_items",
                 "patience_steps", "warmup_steps", "grad_clip", "weight_decay", "popularity_alpha", "k_core",
                 "beta", "gamma", "code_match", "window", "negatives", "distill_weight", "user_branch_weight",
                 "item_branch_weight", "mcm_weight", "msa_weight"}
_ABOVE_ZERO = {"lr", "tau", "init_std", "ccfrec_tau"}  # real numbers > 0
_SEEDS = {"seed", "negatives_seed"}  # numpy takes seeds in [0, 2**32 - 1]
_UNIT_INTERVAL = {"min_catalogue_coverage": (0.0, 1.0), "label_smoothing": (0.0, 1.0), "gbce_t": (0.0, 1.0),
                  "dropout": (0.0, 1.0),
                  "emb_dropout": (0.0, 1.0), "attn_dropout": (0.0, 1.0), "mask_prob": (0.0, 1.0),
                  "head_share": (0.0, 1.0), "ccfrec_dropout": (0.0, 1.0), "code_mask_ratio": (0.0, 1.0)}
# PCR-CA's settings (model.kind "pcrca")
_POSITIVE |= {"contrast_max_items"}
_NON_NEGATIVE |= {"item_contrast_weight", "user_contrast_weight"}
_ABOVE_ZERO |= {"contrast_tau"}


def _members(hint: Any) -> tuple[Any, ...]:
    """The types a field's annotation allows: ``float | None`` -> (float, NoneType)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the annotated type (bool is not a number here; floats are finite)."""
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, member) for member in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict:
        return isinstance(value, dict)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    raise TypeError(f"no check for the annotation {hint!r}")  # a new kind of field: teach _fits about it


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return f"one of {list(typing.get_args(hint))}"
    members = [m for m in _members(hint) if m is not type(None)]
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "text", dict: "a mapping"}
    text = " or ".join(names.get(m, "a list of integers") for m in members)
    return text + (" or null" if len(members) < len(_members(hint)) else "")


def _check_values(section: Any, name: str, where: Callable[[str, str], str]) -> None:
    """Each field has its annotated type (Literal fields: one of their values) and its natural range."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f.name
        if not _fits(value, hints[key]):
            if typing.get_origin(hints[key]) is Literal:
                raise H2RecError(f"{where(name, key)} is {value!r}; choose one of {list(typing.get_args(hints[key]))}")
            raise H2RecError(f"{where(name, key)} must be {_describe(hints[key])}, got {value!r}")
        if value is None:  # allowed by the type: "unset, use the default rule"
            continue
        if key in _POSITIVE and value < 1:
            raise H2RecError(f"{where(name, key)} must be an integer >= 1, got {value!r}")
        if key in _NON_NEGATIVE and value < 0:
            raise H2RecError(f"{where(name, key)} must be >= 0, got {value!r}")
        if key in _ABOVE_ZERO and value <= 0:
            raise H2RecError(f"{where(name, key)} must be > 0, got {value!r}")
        if key in _SEEDS and not 0 <= value < 2**32:
            raise H2RecError(f"{where(name, key)} must lie in [0, 2**32 - 1], got {value!r}")
        if key in _UNIT_INTERVAL:
            low, high = _UNIT_INTERVAL[key]
            if not low <= value <= high:
                raise H2RecError(f"{where(name, key)} must lie in [{low}, {high}], got {value!r}")


# settings that belong to one model kind: set for another, they would do nothing without a word
_KIND_ONLY = {
    "llmesr": ("LLM-ESR", ("model.llmesr_cross", "train.distill_weight", "train.similar_users")),
    "melt": ("MELT's bilateral branches", ("train.user_branch_weight", "train.item_branch_weight",
                                           "train.melt_head_share", "train.curriculum_epochs", "train.melt_init")),
    "pcrca": ("PCR-CA's contrastive alignment", ("train.item_contrast_weight", "train.user_contrast_weight",
                                                 "train.contrast_tau", "train.contrast_max_items")),
    "ccfrec": ("CCFRec", ("model.ccfrec_views", "model.ccfrec_layers", "model.ccfrec_dropout", "model.ccfrec_tau",
                          "train.mcm_weight", "train.msa_weight", "train.code_mask_ratio")),
}


def _check_sparse_ids(config: Config, where: Callable[[str, str], str]) -> None:
    """train.sparse_ids: what lazy updates of the ID table cannot do, refused rather than ignored."""
    if config.model.kind not in SPARSE_ID_KINDS:
        raise H2RecError(f"{where('train', 'sparse_ids')} applies to the item ID table of model.kind "
                         f"{' or '.join(map(repr, SPARSE_ID_KINDS))}, not {config.model.kind!r}")
    if config.train.weight_decay > 0 or config.train.grad_clip > 0:
        raise H2RecError(f"{where('train', 'sparse_ids')}: the table's lazy updates (SparseAdam) take neither "
                         "train.weight_decay nor train.grad_clip; set both to 0")


def _check_together(config: Config, where: Callable[[str, str], str]) -> None:
    """Rules between fields, checked here so that a run fails before it reads data or writes a file."""
    bounds = config.data.group_bounds
    if bounds is not None and (len(bounds) != 4 or list(bounds) != sorted(bounds) or bounds[0] < 0):
        raise H2RecError(f"{where('data', 'group_bounds')} must be 4 ascending counts >= 0, got {list(bounds)}")
    ks = config.eval.ks
    if 10 not in ks or min(ks) < 1:  # the checkpoint is selected on NDCG@10, and tables show @10
        raise H2RecError(f"{where('eval', 'ks')} must be cut-offs >= 1 that include 10, got {list(ks)}")
    smoothing = config.train.label_smoothing
    if config.train.exclude_seen and (config.train.loss != "ce" or (smoothing or 0) > 0):
        raise H2RecError(f"{where('train', 'exclude_seen')} works with train.loss 'ce' without label smoothing")
    if config.train.loss != "ce" and (smoothing or 0) > 0:
        raise H2RecError(f"{where('train', 'label_smoothing')} smooths the full softmax (train.loss 'ce'), "
                         f"not train.loss {config.train.loss!r}")
    for kind, (owner, keys) in _KIND_ONLY.items():
        for dotted in keys:
            section, key = dotted.split(".")
            value, default = getattr(getattr(config, section), key), getattr(SECTIONS[section](), key)
            if config.model.kind != kind and value != default:
                raise H2RecError(f"{where(section, key)} belongs to {owner} (model.kind {kind!r}), "
                                 f"not to model.kind {config.model.kind!r}")
    if config.model.kind == "ccfrec" and config.model.pca_init:  # it would be ignored without a word
        raise H2RecError(f"{where('model', 'pca_init')} initialises an item ID table, and CCFRec (model.kind "
                         "'ccfrec') has none: its items are their semantic codes and text")
    if not 0 < config.train.melt_head_share < 1:  # a = 0 or 1: no head users or no tail users
        raise H2RecError(f"{where('train', 'melt_head_share')} must lie strictly between 0 and 1, "
                         f"got {config.train.melt_head_share!r}")
    if config.train.sparse_ids:
        _check_sparse_ids(config, where)
    if config.train.ema_epochs < 0:
        raise H2RecError(f"{where('train', 'ema_epochs')} must be >= 0 (0 = no average), "
                         f"got {config.train.ema_epochs!r}")
    if not 0 <= config.train.ema_decay < 1:  # at 1 the average would stay at the initial weights
        raise H2RecError(f"{where('train', 'ema_decay')} must lie in [0, 1) (0 = no average), "
                         f"got {config.train.ema_decay!r}")
    if config.eval.select_on == "sampled" and not config.eval.negatives:
        raise H2RecError(f"{where('eval', 'select_on')} is 'sampled', which needs eval.negatives > 0 "
                         "(--eval-negatives N)")


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The sections of a YAML (or JSON) config file, unchecked (build_config checks them)."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise H2RecError(f"{path}: cannot read the config file: {err}") from err
    if not isinstance(values, dict):
        raise H2RecError(f"{path}: a config file holds a mapping of sections (data, model, train, eval)")
    values.pop("h2rec_version", None)  # present in a run folder's config.json
    values.pop("format_version", None)
    values.pop("resumed_with_changes", None)  # a run folder's record of what --resume changed
    return values


def load_config_file(path: str | Path, overrides: dict[str, Any] | None = None, preset: str | None = None,
                     flags: dict[str, str] | None = None) -> Config:
    """Reads a YAML (or JSON) file with sections data/model/train/eval, then applies dotted overrides
    (``flags``: as for :func:`build_config`)."""
    return build_config(read_config_values(path), overrides, source=str(path), preset=preset, flags=flags)
