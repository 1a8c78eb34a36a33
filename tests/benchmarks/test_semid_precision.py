"""benchmarks/semid_precision.py's comparisons (the GPU figures come from the script itself)."""

from __future__ import annotations

import torch
from semid import QuantizerConfig

from benchmarks.semid_precision import agreement, compare_codes


def test_agreement_counts_levels_and_whole_codes():
    reference = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 1]])
    other = torch.tensor([[1, 2, 3], [4, 0, 6], [0, 8, 0], [1, 1, 1]])
    assert agreement(reference, other) == {"per_level": [0.75, 0.75, 0.75], "whole": 0.5}


def test_fp32_against_itself_keeps_every_code_and_rounded_vectors_are_compared_to_it():
    x = torch.nn.functional.normalize(torch.randn(300, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    rows = compare_codes({"fp32": x, "bf16": x.bfloat16().float()},
                         QuantizerConfig(kind="rq", levels=2, codebook_size=8, device="cpu"))
    fp32, bf16 = rows
    assert fp32["max_abs_difference"] == 0 and fp32["same_quantizer"]["whole"] == 1.0
    assert fp32["own_fit"]["same_whole_code"] == 1.0
    assert 0 < bf16["max_abs_difference"] < 1e-2 and bf16["min_cosine"] > 0.999
    assert 0.5 < bf16["same_quantizer"]["whole"] <= 1.0  # bf16 rounding moves few items across a border
