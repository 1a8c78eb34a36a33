"""Rival methods, each a model kind of ``h2rec train --model`` on the same data, losses and evaluation.

- ``llmesr``: LLM-ESR (Liu et al., NeurIPS 2024, arXiv:2405.20646): :mod:`.llmesr` (dual-view
  modelling), :mod:`.llmesr_distill` (retrieval-augmented self-distillation). docs/model.md, "LLM-ESR".
"""
