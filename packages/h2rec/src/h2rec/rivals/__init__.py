"""Rival methods, each a model kind of ``h2rec train --model`` on the same data, losses and evaluation.

- ``llmesr``: LLM-ESR (Liu et al., NeurIPS 2024, arXiv:2405.20646): :mod:`.llmesr` (dual-view
  modelling), :mod:`.llmesr_distill` (retrieval-augmented self-distillation). docs/model.md, "LLM-ESR".
- ``melt``: MELT (Kim et al., SIGIR 2023, arXiv:2304.08382): :mod:`.melt` (the model, with its tail-user
  enhancement), :mod:`.melt_branches` (the user and item branches, their curriculum, the tail items'
  refresh). docs/model.md, "MELT".
- ``pcrca``: PCR-CA (Tan et al., 2025, arXiv:2508.18166): :mod:`.pcrca` (parallel-codebook semantic and
  hash-ID representations, one encoder each, their scores), :mod:`.pcrca_align` (the item- and user-level
  contrastive alignment). docs/model.md, "PCR-CA".
- ``ccfrec``: CCFRec (Liu et al., KDD 2025, arXiv:2503.12183): :mod:`.ccfrec` (text views, the
  code-guided semantic-fusion module, the model), :mod:`.ccfrec_masking` (code masking, masked code
  modeling, masked sequence alignment). docs/model.md, "CCFRec".
"""
