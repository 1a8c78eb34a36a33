"""Sharing a trained model the Hugging Face way.

``save_pretrained(run_dir, folder)`` writes what a model needs without its training data:

- ``model.safetensors``: the best checkpoint's weights;
- ``config.json``: the run's resolved configuration (data paths reduced to names: ``data.semid`` is
  the subfolder ``semid``);
- ``semid/``: the semantic IDs it was trained with (``semid``'s own save_pretrained);
- ``items.json``: item index i -> ``item_ids[i - 1]``, and fingerprints of the training data;
- ``results.json``, ``data_stats.json``: the run's metrics and data statistics (local paths reduced to names);
- ``README.md``: a generated model card.

The training interactions and user ids are not part of it: ``from_pretrained(path_or_repo)`` gives a
:class:`PretrainedRecommender`, which recommends for a history of item ids. It also opens a run
folder directly. Written under the folder's lock and committed together, as ``semid encode`` writes
(semid.io.one_writer, StagedOutput); nothing here touches the network except ``push_to_hub`` and
``from_pretrained`` of a Hub repo id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import semid
import torch
from semid import hub as semid_hub
from semid.io import COMMIT_MARKER, StagedOutput, one_writer, remove_stale_temps

from . import runfolder
from .assemble import build_model, load_semid, resolve_device
from .checkpoint import best_weights_path, check_run_folder, load_weights, read_json
from .config import SECTIONS, Config, build_config
from .errors import H2RecError
from .evaluate import model_inputs, recommend_items
from .model import H2Rec
from .runfolder import read_run_config
from .version import __version__

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ITEMS = "items.json"
RESULTS = "results.json"
DATA_STATS = "data_stats.json"
MODEL_CARD = "README.md"
SEMID = "semid"
HUB_FILES = (WEIGHTS, CONFIG, ITEMS, RESULTS, DATA_STATS, MODEL_CARD)
ITEMS_FORMAT = "h2rec-items/1"
CARD_METRICS = ("HR@10", "NDCG@10", "MRR@10")


# ----------------------------------------------------------------------------- save
def save_pretrained(run_dir: str | Path, save_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write the shareable folder of the run in ``run_dir`` into ``save_dir`` (see the module docstring).
    ``repo_id`` only fills the model card's loading example."""
    run_dir, save_dir = Path(run_dir), Path(save_dir)
    if save_dir.resolve() == run_dir.resolve() or (save_dir / "checkpoints").exists():
        raise H2RecError(f"{save_dir}: is a run folder; save_pretrained writes a new folder, choose another")
    meta = check_run_folder(run_dir)
    config = read_run_config(run_dir)
    sids = load_semid(config.data.semid)
    item_ids = _trained_item_ids(run_dir, sids)
    weights = best_weights_path(run_dir).read_bytes()
    results, stats = _optional_json(run_dir / RESULTS), _optional_json(run_dir / DATA_STATS)
    files = {
        WEIGHTS: weights,
        CONFIG: _json_bytes(_public_config(meta, config)),
        ITEMS: _json_bytes(_items_record(run_dir, config, sids, item_ids)),
        **({RESULTS: _json_bytes(results)} if results is not None else {}),
        **({DATA_STATS: _json_bytes(stats)} if stats is not None else {}),
    }
    with one_writer(save_dir, "h2rec save_pretrained"):
        remove_stale_temps(save_dir, HUB_FILES)
        try:
            semid_hub.save_pretrained(sids, save_dir / SEMID, repo_id=repo_id)
        except semid.SemidError as err:
            raise H2RecError(f"{config.data.semid}: {err}") from None
        with StagedOutput(save_dir) as out:
            for name, data in files.items():
                out.add(name, data)
            out.add(MODEL_CARD, model_card(config, sids, results, stats, repo_id).encode("utf-8"))
            out.commit(known=HUB_FILES)
    log.info("saved the best checkpoint of %s to %s", run_dir, save_dir)
    return save_dir


def _trained_item_ids(run_dir: Path, sids: semid.SemanticIDs) -> list[str]:
    """The item ids of the model's item indices, after checking that the semid folder is the one the
    run trained with (data.json's fingerprint; an older run folder without it is trusted, with a warning)."""
    path = run_dir / runfolder.DATA_FILE
    if not path.is_file():
        log.warning("%s: no %s (an older run folder): the semantic IDs cannot be checked", run_dir, path.name)
        return list(sids.ids)
    record = read_json(path)
    now = runfolder.semid_digest(sids)
    if now != {k: record["semid"][k] for k in now} or record["item_ids"] != sids.ids:
        raise H2RecError(f"{record['semid']['path']}: the semantic IDs are no longer those the run in {run_dir} "
                         "trained with (re-encoded?); save from a run trained on them")
    return list(record["item_ids"])


def _items_record(run_dir: Path, config: Config, sids: semid.SemanticIDs, item_ids: list[str]) -> dict[str, Any]:
    path = run_dir / runfolder.DATA_FILE
    record = read_json(path) if path.is_file() else {}
    interactions = record.get("interactions", {"path": config.data.interactions})
    return {
        "format": ITEMS_FORMAT,
        "interactions": {**interactions, "path": Path(interactions["path"]).name},
        "semid": runfolder.semid_digest(sids),
        "item_ids": item_ids,  # item index i is item_ids[i - 1]; index 0 is padding
    }


def _public_config(meta: dict[str, Any], config: Config) -> dict[str, Any]:
    """config.json without local paths: the semid folder is the subfolder ``semid``."""
    data = dataclasses.replace(config.data, semid=SEMID, interactions=Path(config.data.interactions).name)
    return {"h2rec_version": meta.get("h2rec_version", __version__), "format_version": meta["format_version"],
            **dataclasses.replace(config, data=data).to_dict()}


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """results.json / data_stats.json with the interactions file's path reduced to its name."""
    out = dict(record)
    if isinstance(out.get("interactions_file"), str):
        out["interactions_file"] = Path(out["interactions_file"]).name
    if isinstance(out.get("data"), dict):
        out["data"] = _public(out["data"])
    return out


def _optional_json(path: Path) -> dict[str, Any] | None:
    """results.json or data_stats.json, local paths reduced to names; None (and a warning) when absent."""
    if not path.is_file():
        log.warning("%s: not found; the shared folder goes without it", path)
        return None
    return _public(read_json(path))


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


# ----------------------------------------------------------------------------- model card
def model_card(config: Config, sids: semid.SemanticIDs, results: dict[str, Any] | None,
               stats: dict[str, Any] | None, repo_id: str | None = None) -> str:
    """README.md: the model, its data, the test metrics of results.json with each protocol named, how to load."""
    m, head = config.model, f"{config.data.head_share:.0%}"
    kind = {"h2rec": "H2Rec (semantic IDs and hash IDs)", "hid": "hash IDs only (SASRec-style baseline)",
            "sid": "semantic IDs only", "llmesr": "LLM-ESR (text embeddings and IDs, a rival of H2Rec)",
            "melt": "MELT (item IDs with long-tail user and item branches, a rival of H2Rec)",
            "ccfrec": "CCFRec (semantic codes fused with text views, no item IDs; a rival of H2Rec)",
            "pcrca": "PCR-CA (parallel-codebook semantic IDs and hash IDs, a rival of H2Rec)"}[m.kind]
    levels = "x".join(str(k) for k in sids.codebook_sizes)
    lines = [
        "---", "library_name: h2rec", "pipeline_tag: other", "tags:", "- recommendation",
        "- sequential-recommendation", "- semantic-ids", "---", "",
        f"# {m.kind} / {m.backbone}", "",
        f"A sequential recommender written by h2rec {__version__}: {kind} on a {m.backbone} backbone "
        f"({m.num_layers} layers, dimension {m.dim}), over a catalogue of {len(sids):,} items with "
        f"semantic IDs of {sids.n_columns} levels ({levels} codes) in `semid/`. It scores every item "
        f"of the catalogue as the next one after a history of up to {config.data.max_len} items.", "",
        *_data_lines(stats), *_metric_lines(results, head),
        "## Load", "", "```python", "import h2rec",
        f'model = h2rec.from_pretrained("{repo_id or "user/repo"}")   # or a local folder',
        f"model.recommend({sids.ids[:3]!r}, k=10)   # a history of item ids, oldest first",
        "```", "",
        "`semid/` loads on its own with `semid.from_pretrained`. `config.json` is the training configuration, "
        "`items.json` maps the model's item indices to item ids.", "",
    ]
    return "\n".join(lines)


def _data_lines(stats: dict[str, Any] | None) -> list[str]:
    if not stats:
        return []
    rows = [("interactions file", stats.get("interactions_file")), ("users", stats.get("users")),
            ("items in the catalogue", stats.get("catalogue_items")),
            ("items with interactions", stats.get("items_interacted")),
            ("interactions", stats.get("interactions")), ("mean history length", stats.get("mean_length"))]
    rows = [(name, f"{value:,}" if isinstance(value, int) else str(value)) for name, value in rows if value is not None]
    return ["## Training data", "", "| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]


def _metric_lines(results: dict[str, Any] | None, head: str) -> list[str]:
    if not results or "test" not in results:
        return ["## Results", "", "No test metrics: the run's results.json is missing or holds validation only.", ""]
    protocols = results.get("protocols", {})
    header = ["protocol", "users", *CARD_METRICS, "Head NDCG@10", "Tail NDCG@10"]
    selection = results.get("selection", "validation")
    lines = ["## Test results", "",
             f"Leave-one-out (last item of each user), checkpoint selected on {selection}, "
             f"seed {results.get('seed')}, best epoch {results.get('best_epoch')} of {results.get('epochs_run')}. "
             f"Head: the {head} most interacted items of the training split; Tail: the others.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, groups in results["test"].items():
        overall, head, tail = groups.get("overall", {}), groups.get("head", {}), groups.get("tail", {})
        cells = [f"`{name}`", str(overall.get("n", "")), *(_metric(overall, key) for key in CARD_METRICS),
                 _metric(head, "NDCG@10"), _metric(tail, "NDCG@10")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"- `{name}`: {text}" for name, text in protocols.items()), ""]
    return lines


def _metric(group: dict[str, Any], key: str) -> str:
    return f"{group[key]:.4f}" if key in group else ""


# ----------------------------------------------------------------------------- load
class PretrainedRecommender:
    """A trained model without its training data: recommends for a history of item ids."""

    def __init__(self, config: Config, sids: semid.SemanticIDs, item_ids: list[str], weights: Path,
                 device: str = "auto"):
        if list(item_ids) != list(sids.ids):
            raise H2RecError(f"{sids.out_dir}: its item ids are not those the model was trained with")
        self.config, self.sids, self.item_ids = config, sids, list(item_ids)
        self.device = resolve_device(device)
        # PCA initialisation only sets starting values, which the weights replace
        built = dataclasses.replace(config, model=dataclasses.replace(config.model, pca_init=False))
        self.model: H2Rec = build_model(built, sids).to(self.device).eval()
        load_weights(self.model, weights)
        self._index = {item: i + 1 for i, item in enumerate(self.item_ids)}

    def indices(self, history: Sequence[str]) -> np.ndarray:
        """The model's item indices of a history of item ids."""
        if isinstance(history, str) or not len(history):
            raise H2RecError("history must be a non-empty list of item ids, oldest first")
        unknown = [item for item in history if item not in self._index]
        if unknown:
            raise H2RecError(f"item id(s) {unknown[:5]} not in the model's catalogue "
                             f"({self.sids.out_dir}, {len(self.item_ids)} items)")
        return np.asarray([self._index[item] for item in history], dtype=np.int64)

    @torch.no_grad()
    def scores(self, history: Sequence[str]) -> torch.Tensor:
        """Scores (n_items + 1,) of every item as the next one; entry i is item index i, entry 0 is -inf."""
        encoded, _ = self.model(model_inputs(self.model, [self.indices(history)], self.config.data.max_len))
        return self.model.score_all(encoded.last())[0]

    def recommend(self, history: Sequence[str], k: int = 10, exclude_history: bool = True) -> list[dict]:
        """Top-``k`` next items after ``history`` (item ids, oldest first), with their text when known."""
        return recommend_items(self.model, self.indices(history), self.config.data.max_len, self.item_ids,
                               self.sids.texts, k, exclude_history)


def from_pretrained(path_or_repo: str | Path, revision: str | None = None, token: str | None = None,
                    device: str = "auto") -> PretrainedRecommender:
    """A model saved by ``save_pretrained`` (a local folder or a Hugging Face Hub repo id), or a run folder."""
    try:
        folder = semid_hub.local_folder(path_or_repo, revision, token)
    except semid.SemidError as err:
        raise H2RecError(str(err)) from None
    if (folder / "checkpoints").is_dir():
        return _from_run_folder(folder, device)
    return _from_saved(folder, device)


def _from_run_folder(run_dir: Path, device: str) -> PretrainedRecommender:
    config = read_run_config(run_dir)
    sids = load_semid(config.data.semid)
    return PretrainedRecommender(config, sids, _trained_item_ids(run_dir, sids), best_weights_path(run_dir), device)


def _from_saved(folder: Path, device: str) -> PretrainedRecommender:
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise H2RecError(f"{folder}: holds no {CONFIG} and {WEIGHTS}: not a folder of h2rec's save_pretrained "
                         "or a run folder")
    if (folder / COMMIT_MARKER).exists():
        raise H2RecError(f"{folder}: a save_pretrained into it was interrupted (it holds {COMMIT_MARKER}); save again")
    meta = check_run_folder(folder)
    config = build_config({k: meta[k] for k in SECTIONS if k in meta}, source=str(folder / CONFIG))
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, semid=str(folder / SEMID)))
    sids = load_semid(config.data.semid)
    record = read_json(folder / ITEMS)
    if record.get("format") != ITEMS_FORMAT or not isinstance(record.get("item_ids"), list):
        raise H2RecError(f"{folder / ITEMS}: field 'format' is {record.get('format')!r}, expected {ITEMS_FORMAT!r}")
    if runfolder.semid_digest(sids) != record.get("semid"):
        raise H2RecError(f"{folder / SEMID}: the semantic IDs do not match {ITEMS}'s fingerprint (a mix of two saves?)")
    return PretrainedRecommender(config, sids, record["item_ids"], folder / WEIGHTS, device)


# ----------------------------------------------------------------------------- push
def push_to_hub(run_dir: str | Path, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str = "h2rec: upload model") -> str:
    """save_pretrained into a temporary folder and upload it to ``repo_id`` (created if needed;
    ``private`` applies to a new repo). Returns the commit's URL."""
    try:
        semid_hub.check_repo_id(repo_id)
        token = semid_hub.hub_token(token)
        with tempfile.TemporaryDirectory(prefix="h2rec-push-") as temp:
            folder = save_pretrained(run_dir, Path(temp) / "model", repo_id=repo_id)
            log.info("uploading the best checkpoint of %s to the Hugging Face Hub repo %s", run_dir, repo_id)
            return semid_hub.upload(folder, repo_id, token, private, commit_message)
    except semid.SemidError as err:
        raise H2RecError(str(err)) from None
