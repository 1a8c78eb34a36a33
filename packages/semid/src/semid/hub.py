"""Sharing an OUT_DIR the Hugging Face way.

- `save_pretrained(sids, folder)`: a self-contained copy of the OUT_DIR a SemanticIDs was loaded
  from (codes and ids, quantizer weights and config, stats, texts and embeddings when present) plus
  a generated model card, README.md. Written like `semid encode` writes: under the folder's lock,
  staged and committed together (semid.io.one_writer, StagedOutput).
- `from_pretrained(path_or_repo_id)`: a local folder is `semid.load`ed; anything else is taken for a
  Hugging Face Hub repo id, downloaded with `huggingface_hub.snapshot_download`, then loaded.
- `push_to_hub(sids, repo_id)`: save_pretrained into a temporary folder, then `create_repo` and
  `upload_folder`. Nothing in semid touches the network unless one of the last two is called.
"""

from __future__ import annotations

import json
import logging
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load

from semid.errors import SemidError, fail
from semid.io import (
    CODES,
    EMBEDDINGS,
    OUTPUT_FILES,
    QUANTIZER_CONFIG,
    QUANTIZER_WEIGHTS,
    RECBOLE_ITEM,
    SEMANTIC_IDS,
    STATS,
    TEXTS,
    StagedOutput,
    check_complete,
    json_bytes,
    one_writer,
    remove_stale_temps,
)
from semid.semantic_ids import SemanticIDs, load
from semid.version import __version__

log = logging.getLogger(__name__)

MODEL_CARD = "README.md"
HUB_FILES = (*OUTPUT_FILES, MODEL_CARD)
# never uploaded: the folder's .lock, a commit marker, staging files (in the folder or a subfolder)
HUB_IGNORE = [".*", "*/.*"]
FILE_NOTES = {
    CODES: "codes [items, levels], item ids and codebooks (safetensors)",
    SEMANTIC_IDS: "one {\"id\", \"sid\"} per item",
    QUANTIZER_WEIGHTS: "the fitted quantizer's weights (safetensors)",
    QUANTIZER_CONFIG: "the quantizer's configuration",
    STATS: "collision statistics, source, quantizer settings, timings",
    EMBEDDINGS: "the text embeddings the codes were made from (safetensors)",
    TEXTS: "the item texts that were embedded",
    RECBOLE_ITEM: "RecBole atomic .item file with a sid:token_seq column",
}


# ----------------------------------------------------------------------------- save
def save_pretrained(sids: SemanticIDs, save_dir: str | PathLike, repo_id: str | None = None) -> Path:
    """Write a self-contained copy of `sids`'s OUT_DIR and a model card into `save_dir` (created if
    needed; earlier semid files there are replaced). `repo_id` only fills the card's loading example."""
    save_dir = Path(save_dir)
    with one_writer(save_dir, "semid save_pretrained"):
        remove_stale_temps(save_dir, HUB_FILES)
        files = _read_out_dir(sids)
        with StagedOutput(save_dir) as out:
            for name, data in files.items():
                out.add(name, data)
            out.add(MODEL_CARD, model_card(sids, sorted(files), repo_id).encode("utf-8"))
            out.commit(known=HUB_FILES)
    log.info("saved %d items' semantic IDs to %s", len(sids), save_dir)
    return save_dir


def _read_out_dir(sids: SemanticIDs) -> dict[str, bytes]:
    """The bytes of every semid file in `sids.out_dir`, refused if the folder no longer holds the codes
    `sids` was loaded with (re-encoded since) or a commit overlaps the read."""
    source = sids.out_dir
    check_complete(source)
    files = {name: (source / name).read_bytes() for name in OUTPUT_FILES if (source / name).is_file()}
    check_complete(source)
    if CODES not in files:
        raise fail(source / CODES, None, None, "no such file: the folder changed since it was loaded")
    if not _same_codes(files[CODES], sids):
        raise fail(source / CODES, None, None, "changed since it was loaded (re-encoded?); load it again, then save")
    if STATS in files:
        files[STATS] = _public_stats(files[STATS])
    return files


def _public_stats(data: bytes) -> bytes:
    """stats.json with the input files' local paths (source.items, source.embeddings) reduced to names."""
    stats = json.loads(data)
    source = stats.get("source") if isinstance(stats, dict) else None
    if not isinstance(source, dict):
        return data
    for key in ("items", "embeddings"):
        if isinstance(source.get(key), str):
            source[key] = Path(source[key]).name
    return json_bytes(stats)


def _same_codes(data: bytes, sids: SemanticIDs) -> bool:
    size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + size]).get("__metadata__") or {}
    codes = safetensors_load(data).get("codes")
    return (json.loads(metadata.get("ids", "null")) == sids.ids and codes is not None
            and torch.equal(codes.long(), sids.codes))


# ----------------------------------------------------------------------------- model card
def model_card(sids: SemanticIDs, files: list[str], repo_id: str | None = None) -> str:
    """README.md of a shared folder: what it is, its numbers (from stats.json) and how to load it."""
    stats = sids.stats
    rows = [("items", f"{len(sids):,}"), ("levels x codebook size", _shape(sids)),
            ("quantizer", str(stats.get("quantizer", {}).get("kind", "not recorded"))),
            ("collision rate", _collisions(stats.get("collisions")))]
    if sids.dedup:
        rows.append(("collision rate after the dedup level", _collisions(stats.get("collisions_after_dedup"))))
    rows += [("text encoder", _encoder(stats.get("source") or {})),
             ("embedding dimension", str(stats.get("embedding_dim", "not recorded"))),
             ("reconstruction error", _number(stats.get("reconstruction_error")))]
    where = repo_id or "user/repo"
    example = sids.ids[0]
    lines = [
        "---", "library_name: semid", "tags:", "- semantic-ids", "- recommendation", "---", "",
        "# Semantic IDs", "",
        f"Semantic IDs of a catalogue of {len(sids):,} items, written by semid {__version__}: each item id maps to "
        f"a tuple of {sids.n_columns} codes. Collision rate = 1 - unique tuples / items.", "",
        "| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), "",
        "## Load", "", "```python", "import semid",
        f's = semid.from_pretrained("{where}")   # or semid.load("path/to/this/folder")',
        f"s.sid({example!r})   # {sids.sid(example)}",
        "s.codes   # LongTensor [items, levels]; row i is item s.ids[i]",
        "```", "",
        "## Files", "", *(f"- `{name}`: {FILE_NOTES.get(name, '')}" for name in files), "",
    ]
    return "\n".join(lines)


def _shape(sids: SemanticIDs) -> str:
    sizes = sids.codebook_sizes[:-1] if sids.dedup else sids.codebook_sizes
    if len(set(sizes)) == 1:
        shape = f"{len(sizes)} x {sizes[0]}"
    else:
        shape = f"{len(sizes)} levels of {', '.join(map(str, sizes))}"
    return shape + (f" + a dedup level (up to {sids.codebook_sizes[-1]})" if sids.dedup else "")


def _collisions(collisions: dict[str, Any] | None) -> str:
    if not collisions:
        return "not recorded"
    return (f"{100 * collisions['collision_rate']:.2f}% ({collisions['unique_tuples']:,} unique tuples, "
            f"largest group {collisions['largest_group']})")


def _encoder(source: dict[str, Any]) -> str:
    model = source.get("model", "not recorded")
    settings = [f"{source['pooling']} pooling"] if "pooling" in source else []
    if "normalize" in source:
        settings.append("L2-normalised" if source["normalize"] else "not normalised")
    if "max_length" in source:
        settings.append(f"max {source['max_length']} tokens")
    return f"{model} ({', '.join(settings)})" if settings else str(model)


def _number(value: Any) -> str:
    return "not recorded" if value is None else f"{float(value):.4f}"


# ----------------------------------------------------------------------------- load
def from_pretrained(path_or_repo_id: str | PathLike, revision: str | None = None,
                    token: str | None = None) -> SemanticIDs:
    """`semid.load` a local folder, or a Hugging Face Hub repo (downloaded into the Hub's cache)."""
    return load(local_folder(path_or_repo_id, revision, token))


def local_folder(path_or_repo_id: str | PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """`path_or_repo_id` when it is a local folder, else the folder `snapshot_download` fetches it into."""
    local = Path(path_or_repo_id).expanduser()
    if local.exists():
        if not local.is_dir():
            raise fail(local, None, None, "is a file; give a folder or a Hugging Face Hub repo id (user/name)")
        return local
    import huggingface_hub
    from huggingface_hub.utils import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    repo_id = str(path_or_repo_id)
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, token=token))
    except HFValidationError:
        raise SemidError(f"{repo_id}: no such folder, and not a Hugging Face Hub repo id (user/name)") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise SemidError(f"{repo_id}: no such folder, and it cannot be downloaded from the Hugging Face Hub "
                         f"({_first_line(error)})") from None


# ----------------------------------------------------------------------------- push
def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise SemidError(f"repo id {repo_id!r} is not valid: {_first_line(error)}") from None


def hub_token(token: str | None) -> str:
    """`token`, else the one `hf auth login` stored or $HF_TOKEN; a SemidError when there is none."""
    import huggingface_hub

    token = token or huggingface_hub.get_token()
    if not token:
        raise SemidError("no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass a token")
    return token


def upload(folder: Path, repo_id: str, token: str, private: bool | None, commit_message: str) -> str:
    """create_repo (if needed) and upload_folder; returns the commit's URL. Hub errors become SemidErrors."""
    import huggingface_hub
    from huggingface_hub.utils import HfHubHTTPError

    try:
        huggingface_hub.create_repo(repo_id, token=token, private=private, exist_ok=True)
        info = huggingface_hub.upload_folder(repo_id=repo_id, folder_path=folder, token=token,
                                             commit_message=commit_message, ignore_patterns=HUB_IGNORE)
    except (HfHubHTTPError, OSError) as error:
        raise SemidError(f"{repo_id}: upload to the Hugging Face Hub failed ({_first_line(error)})") from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def push_to_hub(sids: SemanticIDs, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str = "semid: upload semantic IDs") -> str:
    """save_pretrained into a temporary folder and upload it to `repo_id` (created if needed;
    `private` applies to a new repo). Returns the commit's URL."""
    check_repo_id(repo_id)
    token = hub_token(token)
    with tempfile.TemporaryDirectory(prefix="semid-push-") as temp:
        folder = save_pretrained(sids, Path(temp) / "semid", repo_id=repo_id)
        log.info("uploading %s to the Hugging Face Hub repo %s", sids.out_dir, repo_id)
        return upload(folder, repo_id, token, private, commit_message)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
