"""Training (Algorithm 1): Adam on Eq. 11, early stopping on validation NDCG@10, exact resume.

All randomness of the data side (shuffling, negatives, cloze masks, L_MSG levels, L_CA samples)
comes from one CPU ``torch.Generator`` seeded with ``train.seed``; dropout uses torch's global
RNG, seeded the same way. Both are saved in every checkpoint, so ``resume=True`` after a crash
continues exactly where the run stopped and ends with the same numbers as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import semid
import torch
from srs_backbones import cloze_mask
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import (
    FORMAT_VERSION,
    best_weights_path,
    load_checkpoint,
    load_weights,
    read_run_config,
    save_checkpoint,
    write_json,
    write_text,
)
from .config import Config, TrainConfig
from .data import Dataset, build_dataset, training_matrix
from .errors import H2RecError
from .evaluate import evaluate_split, protocol_name
from .losses import (
    alignment_positives,
    bce,
    bpr,
    code_guided_alignment,
    full_cross_entropy,
    masked_granularity,
    reduce_positions,
    sampled_softmax,
)
from .model import H2Rec, at_last


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise H2RecError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def load_semid(path: str) -> semid.SemanticIDs:
    if not path:
        raise H2RecError("data.semid is not set: pass the folder written by `semid encode`")
    try:
        return semid.load(path)
    except (OSError, ValueError) as err:
        raise H2RecError(f"{path}: cannot read the semantic IDs folder: {err}") from err


def resolve_config(config: Config, sids: semid.SemanticIDs) -> Config:
    """Fills the choices left to the data: PCA initialisation when text embeddings exist."""
    model = config.model
    if model.pca_init is None:
        model = dataclasses.replace(model, pca_init=model.kind == "h2rec" and sids.embeddings is not None)
    if model.pca_init and sids.embeddings is None:
        raise H2RecError(f"{config.data.semid}: model.pca_init needs text embeddings, and this folder has none")
    return dataclasses.replace(config, model=model)


def build_model(config: Config, sids: semid.SemanticIDs) -> H2Rec:
    m = config.model
    codes = None if m.kind == "hid" else sids.embedding(dim=m.dim, combine="levels", padding_idx0=True,
                                                       init_std=m.init_std)
    try:
        return H2Rec(m, len(sids.ids), config.data.max_len, codes, sids.embeddings if m.pca_init else None)
    except ValueError as err:  # e.g. an encoder option srs_backbones does not know
        raise H2RecError(f"model configuration: {err}") from err


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- one step
def epoch_batches(lengths: torch.Tensor, batch_size: int, bucket_batches: int,
                  gen: torch.Generator) -> list[torch.Tensor]:
    """Row indices of each batch, in random order. With ``bucket_batches`` > 1, rows are shuffled,
    cut into chunks of that many batches, sorted by length within a chunk, then batched: batches
    hold sequences of similar length, so little compute goes to padding (sequences are short on
    average and a few are long)."""
    order = torch.randperm(len(lengths), generator=gen)
    if bucket_batches <= 1:
        return list(order.split(batch_size))
    batches = []
    for chunk in order.split(batch_size * bucket_batches):
        batches += list(chunk[torch.argsort(lengths[chunk], stable=True)].split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen)]



def sample_negatives(gen: torch.Generator, n_items: int, exclude: torch.Tensor, k: int) -> torch.Tensor:
    """(P, k) items uniform over 1..n, re-drawn (a few rounds) where they hit ``exclude`` (P, W),
    the user's own items."""
    neg = torch.randint(1, n_items + 1, (len(exclude), k), generator=gen)
    for _ in range(5):
        hit = (neg[:, :, None] == exclude[:, None, :]).any(-1)
        if not hit.any():
            break
        neg[hit] = torch.randint(1, n_items + 1, (int(hit.sum()),), generator=gen)
    return neg


def ranking_loss(model: H2Rec, state, targets: torch.Tensor, exclude: torch.Tensor, cfg: TrainConfig,
                 gen: torch.Generator) -> torch.Tensor:
    """Per-position ranking losses (P,) of the positive ``targets`` (P,) against sampled negatives
    (not in ``exclude`` (P, W), the user's items) or the whole catalogue (``ce``)."""
    device = model.device
    if cfg.loss == "ce":
        return full_cross_entropy(model.score_all(state), targets.to(device))
    negatives = sample_negatives(gen, model.n_items, exclude, cfg.num_negatives)
    scores = model.score(state, torch.cat([targets[:, None], negatives], 1).to(device))  # (P, 1 + K)
    pos, neg = scores[:, 0], scores[:, 1:]
    if cfg.loss == "bpr":
        return bpr(pos, neg)
    if cfg.loss == "bce":
        return bce(pos, neg)
    return sampled_softmax(pos, neg, (negatives == targets[:, None]).to(device))


def training_step(model: H2Rec, rows: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Eq. 11 on one batch of right-padded training rows (CPU); returns the loss parts."""
    if model.causal:  # next-item targets at every position
        items = rows[:, :-1] * (rows[:, 1:] != 0)
        targets = rows[:, 1:]
    else:  # BERT4Rec's cloze task, in both branches
        items, targets = cloze_mask(rows, mask_token=model.mask_token, mask_prob=cfg.mask_prob, generator=gen)
    use_ca = model.cfg.kind == "h2rec" and cfg.beta > 0
    use_msg = model.cfg.kind == "h2rec" and cfg.gamma > 0
    msg_level = torch.randint(0, model.n_levels, (len(rows),), generator=gen) if use_msg else None

    device = model.device
    encoded, masked = model(items.to(device), None if msg_level is None else msg_level.to(device))
    where = targets > 0
    row_of = torch.arange(len(rows))[:, None].expand_as(targets)[where]
    losses = ranking_loss(model, encoded.select(where.to(device)), targets[where], rows[row_of], cfg, gen)
    parts = {"rec": reduce_positions(losses, row_of.to(device), cfg.rec_reduction)}  # Eq. 10
    total = parts["rec"]

    if use_ca:
        real = (items > 0) & (items != model.mask_token)
        b, t = real.nonzero(as_tuple=True)
        if len(b) > cfg.ca_max_items:
            keep = torch.randperm(len(b), generator=gen)[: cfg.ca_max_items]
            b, t = b[keep], t[keep]
        picked = items[b, t].to(device)
        b, t = b.to(device), t.to(device)
        positives = alignment_positives(picked, model.codes.item_codes(picked), b, t, cfg.code_match, cfg.window)
        parts["ca"] = code_guided_alignment(encoded.e_sid[b, t], encoded.e_hid[b, t], positives, cfg.tau)
        total = total + cfg.beta * parts["ca"]  # Eq. 11
    if use_msg:
        parts["msg"] = masked_granularity(encoded.last().u_sid, at_last(masked, encoded.padding_mask), cfg.tau)
        total = total + cfg.gamma * parts["msg"]  # Eq. 11
    parts["total"] = total
    return parts


# ----------------------------------------------------------------------------- the run
def peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def selection_protocol(config: Config) -> int:
    """Negatives of the protocol that selects the checkpoint: 0 (full ranking) or eval.negatives."""
    if config.eval.select_on == "full":
        return 0
    if not config.eval.negatives:
        raise H2RecError("eval.select_on='sampled' needs eval.negatives > 0")
    return config.eval.negatives


def prepare(config: Config) -> tuple[Config, semid.SemanticIDs, Dataset]:
    sids = load_semid(config.data.semid)
    config = resolve_config(config, sids)
    ds = build_dataset(config.data, sids.ids)
    return config, sids, ds


def _start_run_folder(run_dir: Path, config: Config, resume: bool) -> Config:
    meta_path = run_dir / "config.json"
    if resume:
        saved = read_run_config(run_dir)
        # only where to run may change on resume; everything else must be what the run started with
        return dataclasses.replace(saved, train=dataclasses.replace(saved.train, device=config.train.device))
    if meta_path.exists():
        raise H2RecError(f"{run_dir}: already holds a run; pass resume=True (--resume) or choose another folder")
    return config


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Trains ``config`` into ``run_dir``; returns the results (also written to ``results.json``)."""
    run_dir = Path(run_dir)
    config = _start_run_folder(run_dir, config, resume)
    config, sids, ds = prepare(config)
    device = resolve_device(config.train.device)
    tc = config.train
    gen = seed_everything(tc.seed)
    model = build_model(config, sids).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    matrix = training_matrix(ds, config.data.max_len, model.causal)
    if not len(matrix):
        raise H2RecError(f"{config.data.interactions}: no user has enough items to train on")
    lengths = (matrix != 0).sum(1)

    state = {"epoch": 0, "best_ndcg10": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "stopped": False}
    if resume and (run_dir / "checkpoints" / "last.json").is_file():
        state = load_checkpoint(run_dir, model, optimizer, gen)
        state.pop("files", None)
    else:
        meta = {"h2rec_version": __version__, "format_version": FORMAT_VERSION, **config.to_dict()}
        write_json(run_dir / "config.json", meta)
        write_json(run_dir / "data_stats.json", ds.stats)

    selection_negatives = selection_protocol(config)
    protocol = protocol_name(selection_negatives)
    log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    log(f"[h2rec] {config.model.kind}/{config.model.backbone} on {device}: {len(matrix)} training rows, "
        f"{ds.n_items} items, {len(ds.valid)} evaluated users; selecting on valid NDCG@10 ({protocol})")
    while state["epoch"] < tc.epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        model.train()
        start = time.perf_counter()
        sums: dict[str, float] = {}
        batches = epoch_batches(lengths, tc.batch_size, tc.bucket_batches, gen)
        n_batches = len(batches)
        # disable=None: a bar on a terminal only; logs get the one line per epoch below
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=None if progress else True, file=sys.stderr)
        for index in bar:
            rows = matrix[index, : int(lengths[index].max())]  # right padding: drop all-padding columns
            parts = training_step(model, rows, tc, gen)
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimizer.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(parts['total'].detach()):.4f}")
        train_seconds = time.perf_counter() - start
        record = {"epoch": epoch, "train_seconds": round(train_seconds, 2),
                  **{f"loss_{k}": round(v / n_batches, 5) for k, v in sums.items()}}

        improved = False
        if epoch % tc.eval_every == 0 or epoch == tc.epochs:
            start = time.perf_counter()
            valid = evaluate_split(model, ds, "valid", config.eval, config.data.max_len, selection_negatives)["overall"]
            record.update({"eval_seconds": round(time.perf_counter() - start, 2),
                           **{f"valid_{k}": round(v, 5) for k, v in valid.items() if k != "n"}})
            if valid["NDCG@10"] > state["best_ndcg10"]:
                state.update(best_ndcg10=valid["NDCG@10"], best_epoch=epoch, bad_epochs=0)
                improved = True
            else:
                state["bad_epochs"] += tc.eval_every
                state["stopped"] = state["bad_epochs"] >= tc.patience
        state["epoch"] = epoch
        state["history"].append(record)
        save_checkpoint(run_dir, model, optimizer, gen, state, best_model=model if improved else None)
        write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state["history"]))
        log(f"[h2rec] epoch {epoch}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "epoch"))

    load_weights(model, best_weights_path(run_dir))
    results = final_results(model, ds, config, state, device)
    write_json(run_dir / "results.json", results)
    return results


def final_results(model: H2Rec, ds: Dataset, config: Config, state: dict, device: torch.device) -> dict:
    """Validation and test metrics of the best checkpoint, under full ranking and, when
    configured, the sampled protocol too; with the run's cost."""
    protocols = [0] + ([config.eval.negatives] if config.eval.negatives else [])
    splits = {}
    for split in ("valid", "test"):
        splits[split] = {protocol_name(k): evaluate_split(model, ds, split, config.eval, config.data.max_len, k)
                         for k in protocols}
    epochs = state["history"]
    train_seconds = [r["train_seconds"] for r in epochs]
    return {
        "model": config.model.kind, "backbone": config.model.backbone, "seed": config.train.seed,
        "selection": f"valid NDCG@10 ({protocol_name(selection_protocol(config))})",
        "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "seconds_per_epoch": round(float(np.mean(train_seconds)), 2) if train_seconds else None,
        "device": str(device), **peak_memory_mb(device),
        "exclude_history": config.eval.exclude_history,
        "data": ds.stats, **splits,
    }
