"""Run folders and checkpoints: safetensors for tensors, JSON for the rest, every file written atomically.

The last checkpoint is ``last-E.safetensors`` (model weights after epoch E),
``last-E.state.safetensors`` (optimizer moments and RNG states), ``average-E.safetensors`` (the
weights' moving average, when ``train.ema_decay`` > 0), ``best-B.safetensors`` (the weights
validation chose at epoch B: the average's, when there is one) and ``last.json`` (epoch,
early-stopping state, history, optimizer hyper-parameters, and the names of those files).
``last.json`` is written last: it is the commit point, so a run killed mid-write resumes from the
previous complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from semid.errors import SemidError
from semid.io import atomic_write
from semid.io import read_json as semid_read_json

from .errors import H2RecError
from .version import __version__

FORMAT_VERSION = 4  # bump when the run-folder layout, the state-dict names or a config default change


def _from_format_2(meta: dict) -> None:
    # format 3: model.llmesr_cross's default became "off". An LLM-ESR run of format 2 either names its
    # form or predates the setting, when the only form was the authors' "replace"; any other model
    # wrote the then default "replace" for a setting it never read, which today reads as set by hand
    model = meta.get("model")
    if isinstance(model, dict) and model.get("kind") == "llmesr":
        model.setdefault("llmesr_cross", "replace")
    elif isinstance(model, dict):
        model.pop("llmesr_cross", None)


def _from_format_3(meta: dict) -> None:
    # format 4: a moving average of the weights by default (train.ema_epochs 10, with its warm-up). A
    # format-3 folder without the keys trained without one, or with train.ema_decay and no warm-up
    train = meta.get("train")
    if isinstance(train, dict):
        train.setdefault("ema_epochs", 0.0)
        train.setdefault("ema_warmup", False)


# format -> what reading a folder of that format as the next one takes: the settings whose default has
# changed since, set to what the folder was trained with (a missing key would otherwise read as today's default)
UPGRADES = {2: _from_format_2, 3: _from_format_3}


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """semid's JSON reader (errors name the file and line), its errors as h2rec's."""
    try:
        return semid_read_json(path)
    except SemidError as err:
        raise H2RecError(str(err)) from None


def check_run_folder(run_dir: Path) -> dict:
    """The run's config.json, after checking that this version of h2rec can read the folder."""
    meta = read_json(run_dir / "config.json")
    found = meta.get("format_version")
    while found in UPGRADES:
        UPGRADES[found](meta)
        found += 1
        meta["format_version"] = found  # what the meta now is (e.g. for save_pretrained's copy)
    if found != FORMAT_VERSION:
        raise H2RecError(
            f"{run_dir}: run folder format {found!r} (h2rec {meta.get('h2rec_version', '?')}); "
            f"this h2rec {__version__} reads format {FORMAT_VERSION}. Retrain, or use the h2rec version that wrote it."
        )
    return meta


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    # save_model (not save_file) copes with shared tensors, e.g. share_encoders=True
    atomic_write(path, lambda tmp: save_model(model, str(tmp), metadata=metadata))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise H2RecError(f"{path}: checkpoint not found")
    try:
        missing, unexpected = load_model(model, path, strict=False, device=str(next(model.parameters()).device))
    except SafetensorError as err:  # truncated or not a safetensors file
        raise H2RecError(f"{path}: cannot be read as a checkpoint ({err}); the file is damaged") from None
    except RuntimeError as err:  # a tensor of another shape: weights of another configuration
        raise H2RecError(f"{path}: does not fit this model ({str(err).splitlines()[-1].strip()}); "
                         "was it written by another configuration?") from None
    if missing or unexpected:
        raise H2RecError(f"{path}: does not fit this model (missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}); was it written by another configuration?")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise H2RecError(f"{path}: checkpoint not found") from None
    except SafetensorError as err:
        raise H2RecError(f"{path}: cannot be read as a checkpoint ({err}); the file is damaged") from None


def remove_leftovers(run_dir: Path, files: dict[str, str | None]) -> None:
    """Removes what a killed run can leave: temp files of interrupted writes, and checkpoint files
    the committed ``last.json`` does not name (``files``). Called with the folder's lock held."""
    named = {name for name in files.values() if name}
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    for stale in (run_dir / "checkpoints").glob("*.safetensors"):
        if stale.name not in named:
            stale.unlink(missing_ok=True)


def _rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"rng.torch": torch.get_rng_state(), "rng.sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["rng.cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, state: dict, best_model: torch.nn.Module | None = None,
                    average: torch.nn.Module | None = None) -> None:
    """Writes epoch-stamped tensor files, then ``last.json`` naming them (the commit point), then
    removes files no longer named. ``best_model`` (when the epoch improved) becomes the best weights;
    ``average``: the weights' moving average (h2rec.optim.make_average), saved to resume."""
    folder = run_dir / "checkpoints"
    epoch = state["epoch"]
    previous = read_json(folder / "last.json") if (folder / "last.json").is_file() else {}
    files = {"weights": f"last-{epoch}.safetensors", "state": f"last-{epoch}.state.safetensors",
             "best": previous.get("files", {}).get("best")}
    save_weights(model, folder / files["weights"], {"epoch": str(epoch)})
    if average is not None:
        files["average"] = f"average-{epoch}.safetensors"
        save_weights(average, folder / files["average"], {"epoch": str(epoch)})
    if best_model is not None:
        files["best"] = f"best-{epoch}.safetensors"
        save_weights(best_model, folder / files["best"], {"epoch": str(epoch)})
    opt = optimizer.state_dict()
    tensors = _rng_tensors(generator)
    for index, moments in opt["state"].items():
        for key, value in moments.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{index}.{key}"] = value.detach().cpu().contiguous()
    atomic_write(folder / files["state"], lambda tmp: save_file(tensors, str(tmp), metadata={"epoch": str(epoch)}))
    write_json(folder / "last.json", {**state, "files": files, "param_groups": opt["param_groups"]})
    for stale in folder.glob("*.safetensors"):
        if stale.name not in files.values():
            stale.unlink()


def best_weights_path(run_dir: Path) -> Path:
    state = read_json(run_dir / "checkpoints" / "last.json")
    if not state["files"].get("best"):
        raise H2RecError(f"{run_dir}: no best checkpoint yet (no validation has run)")
    return run_dir / "checkpoints" / state["files"]["best"]


def load_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, average: torch.nn.Module | None = None) -> dict:
    """Restores model, optimizer and RNG states (and the weights' ``average``) from the last
    checkpoint; returns its JSON state."""
    folder = run_dir / "checkpoints"
    state = read_json(folder / "last.json")
    load_weights(model, folder / state["files"]["weights"])
    if average is not None:
        load_weights(average, folder / state["files"]["average"])
    tensors = read_tensors(folder / state["files"]["state"])
    device = next(model.parameters()).device
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, field = key.split(".", 2)
            moments.setdefault(int(index), {})[field] = value if field == "step" else value.to(device)
    optimizer.load_state_dict({"state": moments, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.sampler"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state
