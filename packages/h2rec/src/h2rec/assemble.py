"""A run's parts from its configuration: the device, the semantic IDs, the choices left to the data,
the dataset, the model and the seeded random state. Training and inference both stand on this.
"""

from __future__ import annotations

import dataclasses
import logging
import random

import numpy as np
import semid
import semid.devices
import torch

from .config import CODE_FREE_KINDS, DEFAULT_LABEL_SMOOTHING, Config, TrainConfig
from .data import Dataset, build_dataset
from .errors import H2RecError
from .model import H2Rec
from .rivals.ccfrec import CCFRec
from .rivals.llmesr import LLMESR
from .rivals.melt import MELT
from .rivals.pcrca import PCRCA

log = logging.getLogger(__name__)

def resolve_device(name: str) -> torch.device:
    """semid's device rule (auto, cpu, cuda, cuda:N, mps), its errors as h2rec's."""
    try:
        return semid.devices.resolve_device(name)
    except semid.SemidError as err:
        raise H2RecError(str(err)) from None


def load_semid(path: str) -> semid.SemanticIDs:
    if not path:
        raise H2RecError("data.semid is not set: pass the folder written by `semid encode`")
    try:
        return semid.load(path)
    except (OSError, ValueError) as err:
        raise H2RecError(f"{path}: cannot read the semantic IDs folder: {err}") from err


def resolve_config(config: Config, sids: semid.SemanticIDs) -> Config:
    """Fills the choices left to the data: PCA initialisation when text embeddings exist, the sampled
    softmax instead of the full one above ``train.ce_max_items`` items, and the label smoothing of the loss
    that results."""
    model = config.model
    if model.kind == "llmesr" and sids.embeddings is None:
        raise H2RecError(f"{config.data.semid}: model.kind 'llmesr' reads the items' text embeddings (its semantic "
                         "view), and this folder has none; encode the items' texts with `semid encode`")
    if model.kind == "ccfrec":
        check_ccfrec_text(config, sids)
    if model.pca_init is None:
        model = dataclasses.replace(model, pca_init=default_pca_init(model.kind, sids.embeddings is not None))
    if model.pca_init and sids.embeddings is None:
        raise H2RecError(f"{config.data.semid}: model.pca_init needs text embeddings, and this folder has none")
    train = catalogue_sized_loss(config.train, len(sids.ids))
    if train.sparse_ids and train.loss == "ce":  # what the loss is becomes known here, with the catalogue's size
        raise H2RecError(f"train.sparse_ids needs a sampled loss, and this run trains the full softmax (train.loss "
                         f"'ce', {len(sids.ids)} items <= train.ce_max_items), which reads every row of the table at "
                         "every step; choose train.loss sampled_softmax, bpr, bce or gbce")
    return dataclasses.replace(config, model=model, train=train)


def default_pca_init(kind: str, has_text: bool) -> bool:
    """model.pca_init left unset: the ID table starts from the text embeddings' principal components for
    H2Rec (Algorithm 1 line 6) and LLM-ESR, where the semantic-ID folder holds embeddings."""
    return kind in ("h2rec", "llmesr") and has_text


def check_ccfrec_text(config: Config, sids: semid.SemanticIDs) -> None:
    """CCFRec's text views (C1) are slices of the items' text embeddings: the folder must have them, and
    at least one dimension per view."""
    if sids.embeddings is None:
        raise H2RecError(f"{config.data.semid}: model.kind 'ccfrec' reads the items' text embeddings (its text "
                         "views), and this folder has none; encode the items' texts with `semid encode`")
    width = sids.embeddings.shape[1]
    if config.model.ccfrec_views > width:
        raise H2RecError(f"model.ccfrec_views (--ccfrec-views) is {config.model.ccfrec_views}, but the views are "
                         f"slices of the {width}-dimensional text embeddings of {config.data.semid}: at most {width}")


def catalogue_sized_loss(train: TrainConfig, n_items: int) -> TrainConfig:
    """``ce`` above ``ce_max_items`` items becomes ``sampled_softmax`` (with its logQ correction), unless
    a ce-only option is set: the full softmax's cost grows with the catalogue, the sampled one's does
    not. Then the default label smoothing (None) becomes a number: DEFAULT_LABEL_SMOOTHING under ce
    without exclude_seen, else 0. The resolved loss and smoothing are what config.json records."""
    switch = train.loss == "ce" and train.ce_max_items and n_items > train.ce_max_items
    if switch and (train.label_smoothing or train.exclude_seen):
        log.info("%d items > train.ce_max_items = %d, but label smoothing / exclude_seen are ce-only: keeping ce",
                 n_items, train.ce_max_items)
    elif switch:
        log.info("%d items > train.ce_max_items = %d: training with sampled_softmax (%d shared negatives, logQ) "
                 "instead of the full softmax; set train.ce_max_items: 0 to keep ce", n_items, train.ce_max_items,
                 train.sampled_negatives)
        train = dataclasses.replace(train, loss="sampled_softmax")
    if train.label_smoothing is None:
        smoothing = DEFAULT_LABEL_SMOOTHING if train.loss == "ce" and not train.exclude_seen else 0.0
        train = dataclasses.replace(train, label_smoothing=smoothing)
    return train


def build_model(config: Config, sids: semid.SemanticIDs) -> H2Rec | LLMESR | MELT | CCFRec | PCRCA:
    m = config.model
    if m.kind == "pcrca":  # a rival: parallel-codebook semantic IDs and hash IDs (h2rec.rivals)
        return build_pcrca(config, sids)
    codes = None if m.kind in CODE_FREE_KINDS else sids.embedding(
        dim=m.dim, combine="levels", padding_idx0=True, init_std=m.init_std)
    try:
        if m.kind == "ccfrec":  # a rival: semantic codes fused with text views, no item IDs (h2rec.rivals)
            return CCFRec(m, len(sids.ids), config.data.max_len, codes, sids.embeddings)
        if m.kind == "llmesr":  # a rival: text embeddings and IDs, no semantic IDs (h2rec.rivals)
            return LLMESR(m, len(sids.ids), config.data.max_len, sids.embeddings)
        if m.kind == "melt":  # a rival: item IDs with long-tail branches (h2rec.rivals)
            return MELT(m, len(sids.ids), config.data.max_len, sids.embeddings if m.pca_init else None)
        return H2Rec(m, len(sids.ids), config.data.max_len, codes, sids.embeddings if m.pca_init else None)
    except ValueError as err:  # e.g. an encoder option srs_backbones does not know
        raise H2RecError(f"model configuration: {err}") from err


def build_pcrca(config: Config, sids: semid.SemanticIDs) -> PCRCA:
    """PCR-CA on the folder's codes, one table per codebook (docs/model.md "PCR-CA", (P1))."""
    m = config.model
    kind = sids.stats.get("quantizer", {}).get("kind")
    if kind not in ("pq", "vq"):  # PCR-CA's codebooks are parallel; a residual folder still works
        log.warning("%s: the codes come from the %s quantizer; PCR-CA's codebooks are parallel (`semid encode "
                    "--quantizer pq` or vq), not residual", config.data.semid, kind or "an unrecorded")
    codes = sids.embedding(dim=m.dim, combine="concat", padding_idx0=True, init_std=m.init_std)
    try:
        return PCRCA(m, len(sids.ids), config.data.max_len, codes, sids.embeddings if m.pca_init else None)
    except ValueError as err:
        raise H2RecError(f"model configuration: {err}") from err


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def prepare(config: Config) -> tuple[Config, semid.SemanticIDs, Dataset]:
    """The semantic IDs, the configuration resolved against them and the data, and the leave-one-out
    dataset."""
    sids = load_semid(config.data.semid)
    config = resolve_config(config, sids)
    ds = build_dataset(config.data, sids.ids)
    return resolve_selection(config, ds), sids, ds


def resolve_selection(config: Config, ds: Dataset) -> Config:
    """``eval.exclude_history`` None becomes True when no user's training sequence holds an item twice,
    else False. On such data a seen item is not the next one, and ranking seen items makes the
    validation curve flatten early: on Beauty (SASRec under the defaults, seeds 42-44) it stopped runs
    at epochs 37 / 40 / 46, which test 1.7% lower on average with seen items ranked (3.0% without) than
    the epochs 63 / 87 / 71 the curve without them picks (benchmarks/results/selection_protocol.md).
    Only training items are read."""
    if config.eval.exclude_history is not None:
        return config
    repeats = has_repeats(ds.train)
    log.info("eval.exclude_history: %s (%s)", not repeats, "a training sequence repeats an item" if repeats
             else "no training sequence repeats an item: checkpoints are selected with seen items left out")
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval, exclude_history=not repeats))


def has_repeats(sequences) -> bool:
    """Whether some row of a :class:`~h2rec.ragged.Ragged` holds a value twice: one sort of all values
    keyed by row (no Python loop over users: 10^6 of them are common)."""
    lengths = sequences.lengths
    total = int(lengths.sum())
    if total == 0:
        return False
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    # each value's index in the shared array: its row's start plus its offset within the row
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = sequences.values[np.repeat(sequences.starts, lengths) + offsets].astype(np.int64)
    keys = rows * (int(items.max()) + 1) + items
    return len(np.unique(keys)) < total
