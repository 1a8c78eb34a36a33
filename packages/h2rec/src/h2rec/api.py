"""A trained run as an object: ``h2rec.load(RUN_DIR).recommend(user, k=10)``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import runfolder
from .assemble import build_model, prepare, resolve_device
from .checkpoint import best_weights_path, load_weights, read_json
from .errors import H2RecError
from .evaluate import final_results, recommend_items
from .export import export_vectors
from .recommend_all import write_recommendations
from .runfolder import read_run_config


class Recommender:
    """The best checkpoint of a run folder, with the data and semantic IDs it was trained on."""

    def __init__(self, run_dir: str | Path, device: str = "auto", cache: bool | None = None):
        self.run_dir = Path(run_dir)
        config = read_run_config(self.run_dir)
        if cache is not None:  # whether the interactions come through the dataset cache (same data either way)
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache=cache))
        self.config, self.sids, self.dataset = prepare(config)
        runfolder.check_data(self.run_dir, self.config, self.sids, self.dataset)
        self.device = resolve_device(device)
        self.model = build_model(self.config, self.sids).to(self.device).eval()
        self.weights = best_weights_path(self.run_dir)
        load_weights(self.model, self.weights)
        self._user_row = {u: i for i, u in enumerate(self.dataset.user_ids)}

    def history(self, user: str) -> list[dict]:
        """The user's items, oldest first, with their text: what ``recommend`` reads."""
        row = self._row(user)
        texts = self.sids.texts
        return [{"item_id": self.dataset.item_ids[i - 1], "text": texts[i - 1] if texts else None}
                for i in self.dataset.sequences[row].tolist()]

    def _row(self, user: str) -> int:
        if user not in self._user_row:
            raise H2RecError(f"user {user!r} is not in {self.config.data.interactions}")
        return self._user_row[user]

    def recommend(self, user: str, k: int = 10, exclude_history: bool = True) -> list[dict]:
        """Top-``k`` next items for ``user`` given everything they interacted with."""
        history = self.dataset.sequences[self._row(user)]
        return recommend_items(self.model, history.tolist(), self.config.data.max_len, self.dataset.item_ids,
                               self.sids.texts, k, exclude_history)

    def recommend_all(self, path: str | Path, k: int = 10, exclude_history: bool = True,
                      batch_size: int | None = None, overwrite: bool = False, progress: bool = False) -> int:
        """Every user's top-``k`` as ``recommend`` gives it, into a table file (.parquet, .csv, .jsonl by
        suffix; columns user_id, rank, item_id, score), ``batch_size`` users at a time (default the
        run's eval.batch_size). Returns the rows written."""
        return write_recommendations(self.model, self.dataset, self.config.data.max_len, path, k, exclude_history,
                                     batch_size or self.config.eval.batch_size, overwrite, progress)

    def export(self, out_dir: str | Path, batch_size: int | None = None, overwrite: bool = False,
               progress: bool = False) -> dict:
        """User and item vectors whose inner product is the model's score, with their ids, a manifest
        and (faiss installed) an inner-product index, into ``out_dir`` (see h2rec.export). Returns the manifest."""
        # the checkpoint loaded, named by its file (best-E: the weights of epoch E)
        record = {"run": str(self.run_dir.resolve()), "checkpoint": self.weights.name,
                  "data": runfolder.data_fingerprint(self.run_dir)}
        return export_vectors(self.model, self.dataset, self.config.data.max_len, out_dir, record,
                              batch_size or self.config.eval.batch_size, overwrite, progress)

    def evaluate(self, negatives: int | None = None, exclude_history: bool | None = None,
                 progress: bool = False) -> dict:
        """Validation and test metrics under full ranking and, with ``negatives``, the sampled protocol.
        ``progress`` shows a bar per split and protocol on stderr."""
        eval_cfg = self.config.eval
        if negatives is not None:
            eval_cfg = dataclasses.replace(eval_cfg, negatives=negatives)
        if exclude_history is not None:
            eval_cfg = dataclasses.replace(eval_cfg, exclude_history=exclude_history)
        config = dataclasses.replace(self.config, eval=eval_cfg)
        state = read_json(self.run_dir / "checkpoints" / "last.json")
        return final_results(self.model, self.dataset, config, state, self.device, progress=progress)

    def save_pretrained(self, save_dir: str | Path, repo_id: str | None = None) -> Path:
        """The shareable folder of this run (best weights, config, semid/, item ids, model card):
        ``h2rec.from_pretrained(save_dir)`` loads it without the training data (see h2rec.hub)."""
        from .hub import save_pretrained

        return save_pretrained(self.run_dir, save_dir, repo_id=repo_id)

    def push_to_hub(self, repo_id: str, token: str | None = None, private: bool | None = None) -> str:
        """Upload save_pretrained's folder to the Hugging Face Hub repo ``repo_id``; returns the commit's URL."""
        from .hub import push_to_hub

        return push_to_hub(self.run_dir, repo_id, token=token, private=private)


def load(run_dir: str | Path, device: str = "auto", cache: bool | None = None) -> Recommender:
    """A run folder's best model. ``cache``: read the interactions through the dataset cache (True),
    from the file (False), or as the run was trained (None)."""
    return Recommender(run_dir, device, cache)
