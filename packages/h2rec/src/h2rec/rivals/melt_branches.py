"""MELT's bilateral branches and their curriculum (Kim et al., SIGIR 2023, arXiv:2304.08382), (M1)-(M8)
of docs/model.md, section "MELT".

- The user branch (M2) teaches ``G^U`` to rebuild a head user's representation from the one of the
  user's few most recent items: what a tail user looks like. At inference, tail users get
  ``G^U(p) + p`` (M3, in :class:`.melt.MELT`).
- The item branch (M5) teaches ``G^I`` to rebuild a head item's embedding from the mean
  representation of a few of the histories it closes (each passed through ``G^U`` first: the user
  branch helps the item branch). At the start of every epoch, each tail item's embedding becomes
  ``G^I`` of the mean over all of its histories (M6): the item branch helps the users' sequences.
- Each head user's and head item's loss is weighted by a curriculum (M7) that moves, over
  ``curriculum_epochs`` epochs, from those farthest above the head threshold to those just above it.

Everything here reads the users' TRAINING items only (``Dataset.train``, ``Dataset.popularity``):
the head/tail thresholds, the histories, the item contexts. No validation or test item enters, so
moving one changes nothing that training sees (a test checks it). All random draws come from the
run's generator, so a resumed run draws what an uninterrupted one does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import semid
import torch
from torch import Tensor

from ..checkpoint import best_weights_path, read_tensors
from ..config import Config
from ..data import Dataset
from ..errors import H2RecError
from ..evaluate import model_inputs
from ..model import at_last
from ..runfolder import check_data, read_run_config
from .melt import MELT

logger = logging.getLogger(__name__)

# (M6): q_i <- G^I(r_i) + γ q_i. The authors' code overwrites the tail item's row (γ = 0); the paper's
# algorithm figure writes γ without a value.
GAMMA = 0.0


# ----------------------------------------------------------------------------- (M1), (M7)
def pareto_threshold(counts: np.ndarray, head_share: float) -> int:
    """(M1) T: the count above which a user (training length) or an item (training count) is head, the
    floor of the counts' (1 - a) quantile (linear interpolation, numpy's default, as the authors'
    ``np.quantile``). For integer counts, ``count > T`` splits as ``count > quantile`` does."""
    return int(math.floor(np.quantile(np.asarray(counts, dtype=np.float64), 1.0 - head_share)))


def curriculum_weight(counts: Tensor, threshold: int, cap: int, progress: float) -> Tensor:
    """(M7) w = |sin(π/2 · ρ + π/2 · (min(c, L) - T - 1) / (L - T - 1))| for head counts c > T, with ρ
    the training progress in [0, 1] and L the cap. At ρ = 0 the weight is 1 at the cap and 0 just
    above the threshold; at ρ = 1 the other way round."""
    span = cap - threshold - 1
    if span < 1:
        raise ValueError(f"the cap {cap} must exceed the threshold {threshold} + 1")
    offset = (counts.clamp(max=cap).double() - threshold - 1) / span
    return torch.sin(math.pi / 2 * progress + math.pi / 2 * offset).abs().float()


# ----------------------------------------------------------------------------- (M4): item contexts
class ItemContexts:
    """(M4) C_i, the histories that item i closes, for every item at once: for each training
    occurrence of i, the items up to and including it (the prefix), and the items from it onwards in
    reverse order (the authors' code adds these; both end at i). Each is cut to its last ``max_len``
    items. Held as (user, position, reversed) triples grouped by item, not as padded rows."""

    def __init__(self, train: Sequence[np.ndarray], n_items: int, max_len: int):
        self.train, self.max_len = train, max_len
        lengths = np.fromiter((len(s) for s in train), dtype=np.int64, count=len(train))
        owner = np.repeat(np.arange(len(train)), lengths)
        position = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        item = np.concatenate([np.asarray(s, dtype=np.int64) for s in train]) if len(owner) else owner
        several = lengths[owner] >= 2  # a one-item history has no suffix apart from its prefix
        user = np.concatenate([owner, owner[several]])
        pos = np.concatenate([position, position[several]])
        backwards = np.concatenate([np.zeros(len(owner), bool), np.ones(int(several.sum()), bool)])
        of_item = np.concatenate([item, item[several]])
        order = np.argsort(of_item, kind="stable")
        self.user, self.position, self.backwards = user[order], pos[order], backwards[order]
        ahead = lengths[self.user] - self.position  # items from the position to the history's end
        self.length = np.minimum(np.where(self.backwards, ahead, self.position + 1), max_len)  # each row's length
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(of_item, minlength=n_items + 1))])

    def count(self, items: np.ndarray) -> np.ndarray:
        """|C_i| of each of ``items``."""
        return self.offsets[items + 1] - self.offsets[items]

    def of(self, item: int) -> np.ndarray:
        """Context ids of ``item``."""
        return np.arange(self.offsets[item], self.offsets[item + 1])

    def rows(self, ids: np.ndarray) -> list[np.ndarray]:
        """The item sequences of contexts ``ids``, oldest first, each ending at its item."""
        out = []
        for u, p, back in zip(self.user[ids].tolist(), self.position[ids].tolist(), self.backwards[ids].tolist()):
            seq = self.train[u]
            out.append(seq[p : p + self.max_len][::-1] if back else seq[max(0, p + 1 - self.max_len) : p + 1])
        return out


def next_item_representations(model: MELT, sequences: list[np.ndarray], max_len: int) -> Tensor:
    """f_θ(S) for each of ``sequences``: the encoder's state that predicts the item after S (the last
    position; BERT4Rec: a mask token appended), without (M3)'s enhancement. (B, d), with gradient."""
    encoded, _ = model(model_inputs(model, sequences, max_len))
    return at_last(encoded.p, encoded.padding_mask)


# ----------------------------------------------------------------------------- the branches of one run
class BilateralBranches:
    """(M1)-(M8) for one run: the head and tail sets, the contexts, the epoch's plan and the losses."""

    def __init__(self, train: Sequence[np.ndarray], popularity: np.ndarray, max_len: int, user_weight: float,
                 item_weight: float, head_share: float, curriculum_epochs: int, batch_size: int = 512):
        self.train, self.max_len, self.batch_size = train, max_len, batch_size
        self.user_weight, self.item_weight, self.curriculum_epochs = user_weight, item_weight, curriculum_epochs
        # (M1) from training interactions only: user lengths of Dataset.train, item counts of Dataset.popularity
        self.lengths = np.fromiter((len(s) for s in train), dtype=np.int64, count=len(train))
        self.popularity = np.asarray(popularity, dtype=np.int64)
        self.user_threshold = pareto_threshold(self.lengths, head_share)  # T_U
        seen = self.popularity[1:][self.popularity[1:] > 0]  # the authors' quantile: items with training interactions
        self.item_threshold = pareto_threshold(seen, head_share) if len(seen) else 0  # T_I
        if self.user_threshold + 2 > max_len:
            raise H2RecError(f"melt: the tail-user threshold T_U = {self.user_threshold} training items (the "
                             f"{1 - head_share:.0%} quantile of the users' training lengths) needs data.max_len >= "
                             f"T_U + 2 = {self.user_threshold + 2}, so that a head user's history fits the window; "
                             f"data.max_len is {max_len}")
        self.head_users = torch.from_numpy(np.flatnonzero(self.lengths > self.user_threshold))
        self.head_items = torch.from_numpy(np.flatnonzero(self.popularity > self.item_threshold))
        self.head_items = self.head_items[self.head_items > 0]
        self.contexts = ItemContexts(train, len(self.popularity) - 1, max_len)
        tail = np.flatnonzero(self.popularity <= self.item_threshold)
        tail = tail[tail > 0]
        self.tail_items = tail[self.contexts.count(tail) > 0]  # (M6) refreshes those that have a context
        self.plan: list[tuple[Tensor, Tensor]] = []
        self.step, self.progress = 0, 0.0
        logger.info("melt: T_U = %d training items (%d head users of %d), T_I = %d training interactions "
                    "(%d head items, %d tail items with a context)", self.user_threshold, len(self.head_users),
                    len(train), self.item_threshold, len(self.head_items), len(self.tail_items))
        for name, weight, head in (("user", user_weight, self.head_users), ("item", item_weight, self.head_items)):
            if weight > 0 and not len(head):
                logger.warning("melt: no head %s above the threshold: the %s branch's loss stays 0", name, name)

    # ------------------------------------------------------------------------- once per epoch
    def start_epoch(self, model: MELT, epoch: int, n_batches: int, gen: torch.Generator) -> None:
        """Before epoch ``epoch`` (1-based) of ``n_batches`` batches: the curriculum's progress, the
        tail items' refresh (M6), and the plan: every head user and head item once, in random order,
        split over the epoch's batches (the authors' loaders)."""
        self.progress = min((epoch - 1) / self.curriculum_epochs, 1.0)  # ρ of (M7); the authors count from 0
        if self.item_weight > 0:
            self.refresh_tail_items(model)
        users = self.head_users[torch.randperm(len(self.head_users), generator=gen)] if self.user_weight > 0 \
            else self.head_users[:0]
        items = self.head_items[torch.randperm(len(self.head_items), generator=gen)] if self.item_weight > 0 \
            else self.head_items[:0]
        self.plan = list(zip(torch.tensor_split(users, n_batches), torch.tensor_split(items, n_batches)))
        self.step = 0

    @torch.no_grad()
    def refresh_tail_items(self, model: MELT) -> None:
        """(M6) q_i <- G^I(r_i) + γ q_i for every tail item with a context, r_i = the mean of f_θ over
        all of C_i; in evaluation mode (no dropout), as the authors' code."""
        if not len(self.tail_items):
            return
        was_training = model.training
        model.eval()
        counts = self.contexts.count(self.tail_items)
        ids = np.concatenate([self.contexts.of(i) for i in self.tail_items.tolist()])
        slot = np.repeat(np.arange(len(self.tail_items)), counts)
        by_length = np.argsort(self.contexts.length[ids], kind="stable")  # batches of similar length: little padding
        ids, slot = ids[by_length], torch.from_numpy(slot[by_length]).to(model.device)
        sums = torch.zeros(len(self.tail_items), model.cfg.dim, device=model.device)
        for start in range(0, len(ids), self.batch_size):
            reps = next_item_representations(model, self.contexts.rows(ids[start : start + self.batch_size]),
                                             self.max_len)
            sums.index_add_(0, slot[start : start + self.batch_size], reps)
        r = sums / torch.from_numpy(counts).to(sums)[:, None]
        rows = torch.from_numpy(self.tail_items).to(model.device)
        model.item.weight[rows] = model.g_item(r) + GAMMA * model.item.weight[rows]
        model.train(was_training)

    # ------------------------------------------------------------------------- every step
    def losses(self, model: MELT, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(L_u, L_i) of the next batch of the epoch's plan (:meth:`start_epoch`)."""
        if self.step >= len(self.plan):
            raise RuntimeError("melt: more training steps than the epoch's plan (call start_epoch first)")
        users, items = self.plan[self.step]
        self.step += 1
        zero = model.item.weight.new_zeros(())
        return (self.user_loss(model, users, gen) if len(users) else zero,
                self.item_loss(model, items, gen) if len(items) else zero)

    def draw_recent(self, histories: list[np.ndarray], gen: torch.Generator) -> list[np.ndarray]:
        """(M2) S̄_u: the R most recent items of each history, R uniform in 1..T_U (a tail user's length)."""
        lengths = torch.randint(1, self.user_threshold + 1, (len(histories),), generator=gen).tolist()
        return [h[-r:] for h, r in zip(histories, lengths)]

    def user_loss(self, model: MELT, users: Tensor, gen: torch.Generator) -> Tensor:
        """(M2) L_u = mean over the head ``users`` and the d dimensions of w_u (p_u - G^U(r̄_u))², with
        p_u = f_θ(S_u) and r̄_u = f_θ(S̄_u) (:meth:`draw_recent`)."""
        histories = [self.train[u] for u in users.tolist()]
        recent = self.draw_recent(histories, gen)
        p, r_bar = next_item_representations(model, histories + recent, self.max_len).split(len(users))
        w = curriculum_weight(torch.from_numpy(self.lengths[users.numpy()]), self.user_threshold, self.max_len,
                              self.progress).to(p)
        return (w[:, None] * (p - model.g_user(r_bar)) ** 2).mean()

    def draw_contexts(self, items: Tensor, gen: torch.Generator) -> list[np.ndarray]:
        """(M5) C̃_i: K context ids of each item drawn from C_i without replacement, K uniform in
        1..min(|C_i|, T_I) (a tail item's count)."""
        counts = self.contexts.count(items.numpy())
        most = torch.from_numpy(np.minimum(counts, self.item_threshold).clip(min=1))
        k = (torch.rand(len(items), generator=gen, dtype=torch.float64) * most).long() + 1  # uniform in 1..most
        return [self.contexts.of(i)[torch.randperm(int(c), generator=gen)[:n].numpy()]
                for i, c, n in zip(items.tolist(), counts.tolist(), k.tolist())]

    def item_loss(self, model: MELT, items: Tensor, gen: torch.Generator) -> Tensor:
        """(M5) L_i = mean over the head ``items`` and the d dimensions of w_i (q_i - G^I(r̄_i))², with
        r̄_i the mean of G^U(f_θ(s)) + β f_θ(s) over the contexts s of :meth:`draw_contexts`."""
        picked = self.draw_contexts(items, gen)
        k = torch.tensor([len(p) for p in picked])
        reps = model.enhance(next_item_representations(model, self.contexts.rows(np.concatenate(picked)),
                                                       self.max_len))  # r̃⁺ (Eq. 12): the user branch's help
        slot = torch.repeat_interleave(torch.arange(len(items)), k).to(reps.device)
        r_bar = reps.new_zeros(len(items), reps.shape[1]).index_add(0, slot, reps) / k.to(reps)[:, None]
        w = curriculum_weight(torch.from_numpy(self.popularity[items.numpy()]), self.item_threshold,
                              self.item_threshold + self.max_len, self.progress).to(reps)
        q = model.item(items.to(reps.device))
        return (w[:, None] * (q - model.g_item(r_bar)) ** 2).mean()


def build_branches(config: Config, ds: Dataset, model: torch.nn.Module) -> BilateralBranches | None:
    """MELT's branches for a run, or None (other models). Sets the model's T_U (M3): -1, no tail-user
    enhancement, when the user branch is off (``train.user_branch_weight`` 0)."""
    if config.model.kind != "melt":
        return None
    tc = config.train
    branches = BilateralBranches(ds.train, ds.popularity, config.data.max_len, tc.user_branch_weight,
                                 tc.item_branch_weight, tc.melt_head_share, tc.curriculum_epochs or tc.epochs,
                                 config.eval.batch_size)
    model.user_threshold.fill_(branches.user_threshold if tc.user_branch_weight > 0 else -1)
    return branches


# ----------------------------------------------------------------------------- the authors' pretrained start
def warm_start(model: MELT, config: Config, sids: semid.SemanticIDs, ds: Dataset) -> None:
    """Starts ``model`` from the best weights of the finished ``hid`` run ``train.melt_init`` (the
    authors train SASRec first and start MELT from it): its item table and encoder; G^U and G^I start
    as built. Refuses a run of another kind, shape or data."""
    folder = Path(config.train.melt_init)
    where = f"train.melt_init {folder}"
    if not (folder / "config.json").is_file() or not (folder / "results.json").is_file():
        raise H2RecError(f"{where}: not a finished run folder (config.json and results.json); train the "
                         "hid run to start from first")
    init = read_run_config(folder)
    same = {"model.kind": "hid", **{f"model.{k}": getattr(config.model, k)
                                    for k in ("backbone", "dim", "num_layers", "num_heads", "backbone_options")},
            "data.max_len": config.data.max_len}
    differ = [f"{key} {getattr(getattr(init, key.split('.')[0]), key.split('.')[1])!r} (needed: {value!r})"
              for key, value in same.items() if getattr(getattr(init, key.split(".")[0]), key.split(".")[1]) != value]
    if differ:
        raise H2RecError(f"{where}: the run does not fit this model: " + "; ".join(differ))
    check_data(folder, config, sids, ds)
    weights = read_tensors(best_weights_path(folder))
    start = {"item.weight": weights["hid.weight"],
             **{"encoder." + key[len("f_hid."):]: value for key, value in weights.items() if key.startswith("f_hid.")}}
    missing, unexpected = model.load_state_dict(start, strict=False)
    assert not unexpected and all(k.split(".")[0] in ("g_user", "g_item", "user_threshold") for k in missing), \
        (missing, unexpected)
    logger.info("melt: encoder and item table start from %s", best_weights_path(folder))
