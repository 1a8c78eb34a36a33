"""How a committed benchmark record's configuration reads when it predates a setting.

A record keeps the config.json of its run. A setting added to the toolkit later is absent from it,
and rebuilding that config today would give it today's default, which is not always what the run
trained: the weight average, for one, came later and then became a default. Here each such setting
has the value that trains as the older records did.
"""

from __future__ import annotations

ADDED_LATER = {("train", "label_smoothing"): 0.0, ("train", "ema_epochs"): 0.0, ("train", "ema_decay"): 0.0,
               ("train", "ema_warmup"): False, ("train", "sparse_ids"): False}


def as_trained(sections: dict) -> dict:
    """A record's config sections with every setting of ADDED_LATER it lacks set to its older value."""
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in sections.items()}
    for (section, key), value in ADDED_LATER.items():
        out.setdefault(section, {}).setdefault(key, value)
    return out
