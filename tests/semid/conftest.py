"""Generated fixtures for the semid tests: a structured item catalogue, clustered embeddings, and a
tiny random BERT saved as a local model folder (so the text path runs without the 90 MB MiniLM)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

BRANDS = ["OPI", "L'Oreal", "Dove", "Nivea", "Maybelline", "Clinique", "Revlon", "Neutrogena"]
KINDS = ["lipstick", "shampoo", "perfume", "nail polish", "sunscreen", "mascara", "conditioner", "face cream"]
SHADES = ["red", "nude", "pink", "coral", "plum", "clear"]


@pytest.fixture(scope="session")
def item_records() -> list[dict]:
    """240 items with structured text: brand, product kind, shade, size, categories list."""
    rng = random.Random(7)
    records = []
    for i in range(240):
        brand, kind, shade = rng.choice(BRANDS), rng.choice(KINDS), rng.choice(SHADES)
        records.append({
            "id": f"B{i:05d}",
            "title": f"{brand} {kind} &amp; care, {shade} {rng.randint(1, 9)} oz",
            "categories": ["Beauty", kind.title()],
            "brand": brand,
        })
    return records


@pytest.fixture(scope="session")
def clustered() -> torch.Tensor:
    """300 x 48 unit vectors around 12 centres: a stand-in for text embeddings in quantizer tests."""
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(12, 48, generator=generator)
    labels = torch.arange(300) % 12
    x = centres[labels] + 0.3 * torch.randn(300, 48, generator=generator)
    return torch.nn.functional.normalize(x, dim=-1)


@pytest.fixture()
def write_jsonl(tmp_path):
    def write(records: list[dict], name: str = "items.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 1-layer, 32-d random BERT with a word-level vocabulary, saved like a hub checkpoint."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w.lower() for w in " ".join(BRANDS + KINDS + SHADES).replace("'", " ").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz0123456789:.,&"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder
