"""Device and precision resolution shared by the encoder and the quantizers (CPU and CUDA, same code)."""

from __future__ import annotations

import contextlib
import os

import torch

from semid.errors import fail


def set_threads(threads: int | None) -> str | None:
    """Sets torch's CPU threads (None: torch's choice, all cores) and returns a one-line warning when
    the load average says the cores are already busy: oversubscribed threads can make CPU work ten
    or more times slower (a fit of 24 s took 633 s on a shared 2-core machine). None when all is well."""
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return None
    cores = os.cpu_count() or 1
    wanted = torch.get_num_threads()
    free = max(1, int(cores - load + 0.5))  # cores the other jobs leave idle
    if wanted <= free:
        return None
    return (f"the CPU is busy (load average {load:.1f} on {cores} cores) and torch will use {wanted} thread(s); "
            f"if this runs slowly, pass --threads {free}")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; a name torch does not know, or CUDA without a CUDA
    device, is a user error. The one device rule of semid and h2rec."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise fail(None, None, "device", f"is {name!r}; expected auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise fail(None, None, "device", f"is {name!r} but torch sees no CUDA device; use cpu or auto")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA when supported, else fp16 on CUDA, fp32 on CPU. Half precision needs CUDA."""
    if device.type != "cuda":
        if name in ("fp16", "bf16"):
            raise fail(None, None, "precision", f"is {name!r}, which semid only uses on CUDA; use fp32 or auto")
        return "fp32"
    if name == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for fp16/bf16 on CUDA; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
