"""Command-line flags generated from the configuration dataclasses.

A flag here is a config key, a spelling and what it does. Its type, its choices (from a ``Literal``)
and the default its help shows are read from the config field itself, so `h2rec train -h` cannot
drift from `h2rec.config`. Every field of the sections ``train`` reads is either a flag below or
listed in ``FILE_ONLY`` (set in a ``--config`` file); a test holds the two lists to the config, so a
new field needs a decision.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

import click

from .config import Config, _members

# bool fields: "both" = --x/--no-x; "on" = --x sets True; "off" = --no-x sets False (unset: config)
Switch = Literal["both", "on", "off"]


class DeviceType(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps: checked when the flag is read, listed in --help."""

    name = "device"

    def get_metavar(self, param, ctx=None):
        return "[auto|cpu|cuda|cuda:N|mps]"

    def convert(self, value, param, ctx):
        if re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            return value
        self.fail(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps", param, ctx)


DEVICE = DeviceType()


@dataclass(frozen=True)
class Flag:
    key: str  # dotted config key, "model.dim"
    name: str  # "--dim"
    help: str  # what it does; " (default X)" is added from the config
    switch: Switch | None = None  # bool fields only
    default: str | None = None  # the default in words where the value alone says little ("--dropout")
    type: Any = None  # a click type where the field's own says too little (a device, a format)

    @property
    def param(self) -> str:
        """The click parameter name: the dotted key, spelt as an identifier."""
        return self.key.replace(".", "__")


DATA_FLAGS = [
    Flag("data.interactions", "--interactions",
         "Interactions: .csv/.tsv/.jsonl/.parquet, RecBole .inter, P5 .txt sequences or LC-Rec .json.",
         type=click.Path(dir_okay=False)),
    Flag("data.semid", "--semid", "Folder written by `semid encode` for the same items.",
         type=click.Path(file_okay=False)),
    Flag("data.format", "--format", "Interaction layout.", default="from the suffix",
         type=click.Choice(["auto", "csv", "tsv", "jsonl", "parquet", "inter", "sequences", "json"])),
    Flag("data.user_field", "--user-field", "User column of CSV/TSV/JSONL interactions."),
    Flag("data.item_field", "--item-field", "Item column."),
    Flag("data.time_field", "--time-field", "Timestamp column, used when present."),
    Flag("data.k_core", "--k-core", "Drop users and items with fewer than k interactions; 0 = off."),
    Flag("data.max_len", "--max-len", "Most recent items a history keeps."),
    Flag("data.min_catalogue_coverage", "--min-catalogue-coverage",
         "Refuse a semid folder of which fewer than this share of items occur in the interactions (another "
         "catalogue?); 0 = accept any."),
    Flag("data.cache", "--no-cache", "Parse the interactions file afresh instead of its prepared copy in the cache "
         "folder ($H2REC_CACHE_DIR, else the user cache folder), and write none.", switch="off"),
]

MODEL_FLAGS = [
    Flag("model.kind", "--model", "h2rec (both branches), hid (hash IDs only), sid (semantic IDs only), or a "
         "rival: llmesr, LLM-ESR on text embeddings and IDs, which needs a semid folder with embeddings; melt, "
         "MELT's long-tail user and item branches on item IDs; ccfrec, CCFRec's semantic codes fused with text "
         "views, which needs a semid folder with embeddings; pcrca, PCR-CA's parallel-codebook semantic IDs "
         "and hash IDs, contrastively aligned."),
    Flag("model.backbone", "--backbone", "Sequence encoder of each branch."),
    Flag("model.dim", "--dim", "Embedding and hidden size d."),
    Flag("model.num_layers", "--layers", "Encoder layers."),
    Flag("model.num_heads", "--heads", "Attention heads."),
    Flag("model.dropout", "--dropout", "Hidden dropout: feed-forward and residual branches."),
    Flag("model.emb_dropout", "--emb-dropout", "Dropout on the input embeddings.", default="--dropout"),
    Flag("model.attn_dropout", "--attn-dropout", "Dropout on the attention weights.", default="--dropout"),
    Flag("model.fusion", "--no-fusion", "Fixed equal level weights instead of the fusion network (Eq. 2-3).",
         switch="off"),
    Flag("model.mca", "--no-mca", "Drop the multi-granularity cross attention (Eq. 4-5).", switch="off"),
    Flag("model.pca_init", "--pca-init", "Initialise hash-ID embeddings from the PCA of the text embeddings.",
         switch="both", default="on for h2rec and llmesr"),
    Flag("model.candidate_weights", "--candidate-weights", "Level weights of a candidate's SID embedding in Eq. 9."),
    Flag("model.llmesr_cross", "--llmesr-cross", "llmesr: each view becomes its cross-view attended form "
         "(replace, the authors' code), gains it (residual), or the views meet only in the score (off, "
         "the best measured)."),
    Flag("model.ccfrec_views", "--ccfrec-views", "ccfrec: text views, contiguous slices of each item's text "
         "embedding, that the codes attend to; 1 = the whole embedding as one view."),
    Flag("model.ccfrec_layers", "--ccfrec-layers", "ccfrec: layers of the semantic-fusion module."),
    Flag("model.ccfrec_dropout", "--ccfrec-dropout", "ccfrec: dropout in the semantic-fusion module."),
    Flag("model.ccfrec_tau", "--ccfrec-tau", "ccfrec: temperature of the cosine scores and of both masking losses."),
]

TRAIN_FLAGS = [
    Flag("train.loss", "--loss", "Ranking loss: ce is the full softmax; the paper's Eq. 10 is bpr."),
    Flag("train.label_smoothing", "--label-smoothing", "ce: label smoothing.",
         default="0.1 under ce without --exclude-seen, else 0"),
    Flag("train.exclude_seen", "--exclude-seen", "ce: leave each position's earlier items out of its softmax, as "
         "--exclude-history leaves them out of the ranking; for data without repeats.", switch="both"),
    Flag("train.sampled_negatives", "--sampled-negatives", "sampled_softmax: negatives shared by a batch."),
    Flag("train.sampler", "--sampler", "sampled_softmax: where the shared negatives come from."),
    Flag("train.logq", "--logq", "sampled_softmax: logQ correction of the sampling bias.", switch="both"),
    Flag("train.num_negatives", "--negatives", "bpr/bce/gbce: negatives sampled per position."),
    Flag("train.gbce_t", "--gbce-t", "gbce: calibration t in [0, 1]."),
    Flag("train.beta", "--beta", "Weight of the code-guided alignment loss of Eq. 11; 0 = off."),
    Flag("train.gamma", "--gamma", "Weight of the masked granularity loss of Eq. 11; 0 = off."),
    Flag("train.tau", "--tau", "Temperature of Eq. 6-8."),
    Flag("train.rec_reduction", "--rec-reduction",
         "Eq. 10 over a batch: per-user sum averaged over users (user_sum), or mean over positions."),
    Flag("train.distill_weight", "--distill-weight",
         "llmesr: weight α of the retrieval-augmented self-distillation; 0 = off."),
    Flag("train.similar_users", "--similar-users", "llmesr: similar users retrieved per user for the "
         "self-distillation."),
    Flag("train.user_branch_weight", "--user-branch-weight", "melt: weight λ_U of the user branch's loss; 0 = "
         "no user branch."),
    Flag("train.item_branch_weight", "--item-branch-weight", "melt: weight λ_I of the item branch's loss; 0 = "
         "no item branch (and no tail-item refresh)."),
    Flag("train.melt_head_share", "--melt-head-share", "melt: share a of users (by training length) and of items "
         "(by training count) that are head, the Pareto rule."),
    Flag("train.curriculum_epochs", "--curriculum-epochs", "melt: epochs e_max over which the curriculum moves "
         "each branch's weight from the longest head users and items to those nearest the tail.",
         default="--epochs"),
    Flag("train.melt_init", "--melt-init", "melt: start from the best weights of this finished hid run on the same "
         "data (the authors start from a trained SASRec); unset = from scratch.",
         type=click.Path(exists=True, file_okay=False)),
    Flag("train.item_contrast_weight", "--item-contrast-weight", "pcrca: weight λ_I of the item-level contrastive "
         "alignment of ID and semantic embeddings; 0 = off."),
    Flag("train.user_contrast_weight", "--user-contrast-weight", "pcrca: weight λ_U of the user-level contrastive "
         "alignment of the ID and semantic user states; 0 = off."),
    Flag("train.contrast_tau", "--contrast-tau", "pcrca: temperature τ of both contrastive alignments."),
    Flag("train.mcm_weight", "--mcm-weight", "ccfrec: weight λ_MCM of masked code modeling; 0 = off."),
    Flag("train.msa_weight", "--msa-weight", "ccfrec: weight λ_MSA of masked sequence alignment; 0 = off."),
    Flag("train.code_mask_ratio", "--code-mask-ratio", "ccfrec: share of the input items' code tokens masked for "
         "both masking losses."),
    Flag("train.code_match", "--code-match", "Code-matching threshold p of Eq. 7; 0 = removed."),
    Flag("train.window", "--window", "Context window o of Eq. 7; 0 = removed."),
    Flag("train.windows", "--windows", "Training rows: every target once per epoch in sliding or randomly "
         "phased windows, or each history's last window only."),
    Flag("train.window_stride", "--window-stride", "Items between window ends.", default="--max-len"),
    Flag("train.epochs", "--epochs", "Maximum epochs."),
    Flag("train.patience", "--patience", "Epochs without a better validation NDCG@10 before stopping."),
    Flag("train.patience_steps", "--patience-steps", "... and at least this many optimizer steps without one; "
         "0 = epochs only."),
    Flag("train.eval_every", "--eval-every", "Evaluate on validation every k epochs."),
    Flag("train.batch_size", "--batch-size", "Training windows per batch: the global batch, of which each of N "
         "torchrun processes computes batch_size / N rows."),
    Flag("train.lr", "--lr", "AdamW learning rate."),
    Flag("train.weight_decay", "--weight-decay", "AdamW weight decay on matrices, not biases or norms."),
    Flag("train.lr_schedule", "--lr-schedule", "Learning-rate decay to 0 at --epochs."),
    Flag("train.warmup_steps", "--warmup-steps", "Linear learning-rate warm-up steps."),
    Flag("train.grad_clip", "--grad-clip", "Clip the gradient norm to this; 0 = off."),
    Flag("train.sparse_ids", "--sparse-ids", "Sampled losses: sparse gradients and lazy Adam updates of the item "
         "ID table (only the rows a step reads move); for large catalogues.", switch="both"),
    Flag("train.ema_epochs", "--ema-epochs", "Validate and keep an exponential moving average of the weights "
         "whose horizon is this many epochs; 0 = off."),
    Flag("train.ema_warmup", "--ema-warmup", "Until a horizon's worth of steps, average the steps so far "
         "uniformly.", switch="both"),
    Flag("train.ema_decay", "--ema-decay", "The average's decay per optimizer step instead (e.g. 0.999); "
         "0 = use --ema-epochs."),
    Flag("train.seed", "--seed", "Random seed."),
    Flag("train.device", "--device", "Where to run; auto = cuda when available.", type=DEVICE),
    Flag("train.compile", "--compile", "torch.compile the Transformer blocks (and H2Rec's fusion and cross "
         "attention) of the trained model: fewer kernel launches on a GPU; compiling costs the first steps. "
         "May change on --resume.", switch="both"),
]

EVAL_FLAGS = [
    Flag("eval.negatives", "--eval-negatives", "Also report the paper's protocol, 1 positive + this many sampled "
         "negatives, e.g. 100; 0 = not. Full ranking is always reported."),
    Flag("eval.select_on", "--select-on", "Protocol of the validation NDCG@10 that picks the checkpoint."),
    Flag("eval.exclude_history", "--exclude-history", "Select the checkpoint on full ranking with the user's "
         "past items left out (full_unseen) or ranked (full); both are reported.", switch="both",
         default="on when no training sequence repeats an item"),
]

# Fields set in a --config file only: rarely changed, or structured (a mapping, a list).
FILE_ONLY = {
    "model.backbone_options", "model.share_encoders", "model.fusion_hidden", "model.prior_decay", "model.init_std",
    "train.ce_chunk_items", "train.ce_max_items", "train.popularity_alpha", "train.ca_max_items", "train.mask_prob",
    "train.bucket_batches",
    "train.contrast_max_items",
    "data.head_share", "data.group_bounds",
    "eval.negatives_seed", "eval.batch_size", "eval.item_chunk", "eval.ks",
}

TRAIN_COMMAND_FLAGS = DATA_FLAGS + MODEL_FLAGS + TRAIN_FLAGS + EVAL_FLAGS
# tune takes the data and where to run; the rest comes from --config and the search space
TUNE_COMMAND_FLAGS = DATA_FLAGS + [next(f for f in TRAIN_FLAGS if f.key == "train.device")]


def field(key: str) -> tuple[Any, Any]:
    """(type hint, default) of a dotted config key."""
    section, name = key.split(".")
    cls = type(getattr(Config(), section))
    hint = typing.get_type_hints(cls)[name]
    return hint, getattr(getattr(Config(), section), name)


def spelled(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def click_option(flag: Flag):
    """The click option of ``flag``: its type and the default in its help from the config field."""
    hint, default = field(flag.key)
    members = [m for m in _members(hint) if m is not type(None)]
    said = flag.default if flag.default is not None else (None if default is None else spelled(default))
    if flag.switch in ("on", "off"):
        said = None  # a one-way switch: leaving it out is the default
    text = flag.help if said in (None, "") else f"{flag.help.rstrip('.')} (default {said})."
    if flag.switch is not None:
        if members != [bool]:
            raise TypeError(f"{flag.key}: a switch needs a bool field, not {hint}")
        if flag.switch == "both":
            positive = flag.name
            return click.option(f"{positive}/--no-{positive[2:]}", flag.param, default=None, help=text)
        return click.option(flag.name, flag.param, flag_value=flag.switch == "on", default=None, help=text)
    if flag.type is not None:
        kind = flag.type
    elif len(members) == 1 and typing.get_origin(members[0]) is Literal:
        kind = click.Choice(typing.get_args(members[0]))
    elif len(members) == 1 and members[0] in (int, float, str):
        kind = members[0]
    else:
        raise TypeError(f"{flag.key}: no flag type for {hint}; give Flag(type=...) or list it in FILE_ONLY")
    return click.option(flag.name, flag.param, type=kind, help=text)


def add_flags(flags: list[Flag]):
    """A decorator adding ``flags`` to a click command, in the listed order in --help."""
    def decorate(fn):
        for flag in reversed(flags):  # decorators apply bottom-up
            fn = click_option(flag)(fn)
        return fn
    return decorate


def overrides(options: dict[str, Any], flags: list[Flag]) -> dict[str, Any]:
    """{dotted key: value} of the flags the user gave (unset flags are None and keep the config's)."""
    params = {f.param: f.key for f in flags}
    return {params[name]: value for name, value in options.items() if name in params and value is not None}


def flag_names(flags: list[Flag]) -> dict[str, str]:
    """{dotted key: flag}, so that a bad value is reported under the flag the user typed."""
    return {f.key: f.name for f in flags}


def config_keys() -> set[str]:
    """Every dotted key of the configuration."""
    return {f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
            for f in dataclasses.fields(getattr(Config(), section.name))}
