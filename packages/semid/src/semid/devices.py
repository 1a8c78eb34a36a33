"""Device, precision and CPU-thread rules shared by the encoder and the quantizers (CPU and CUDA, same code)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import logging
import os
from collections.abc import Iterator

import torch

from semid.errors import fail

log = logging.getLogger(__name__)

# A matrix product of M rows comes out with other bits at t threads than at one only when MKL has fewer
# than 8 rows per thread to share out (measured: at most 5.5 rows per thread, 2 to 256 threads; docs/semid.md 3.4).
ROWS_PER_THREAD = 8


# MKL's strict conditional numerical reproducibility: Intel documents ?gemm's bits as independent of the
# thread count in this mode on its own CPUs. There the row cap below is not enough (a fit's EMA codebook
# sums and weight gradients, products of long reductions, still rounded otherwise at 2 threads); on the
# AMD EPYC the mode did not help and the cap alone does (docs/semid.md 3.4), so it is asked for on Intel only.
MKL_STRICT = "AUTO,STRICT"
_MKL_CBWR_ALL, _MKL_CBWR_STRICT = -1, 0x10000  # mkl_service.h


def cpu_vendor() -> str:
    """The CPU's vendor id ('GenuineIntel', 'AuthenticAMD', ...), '' where /proc/cpuinfo does not say."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":")[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def request_strict_mkl() -> None:
    """Sets MKL_CBWR=AUTO,STRICT on Intel CPUs unless the environment already sets MKL_CBWR (to anything,
    even '': MKL's own default). MKL reads it once, at its first call, so semid does this on import;
    a process that multiplied matrices before importing semid keeps MKL's mode (mkl_strict says so)."""
    if cpu_vendor() == "GenuineIntel":
        os.environ.setdefault("MKL_CBWR", MKL_STRICT)


@functools.cache
def _mkl_service() -> ctypes.CDLL | None:
    """torch's own MKL (linked into libtorch_cpu), whose service functions answer which mode is in use."""
    if not torch.backends.mkl.is_available():
        return None
    for path in glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.*")):
        try:
            library = ctypes.CDLL(path)
            library.mkl_serv_cbwr_get.argtypes, library.mkl_serv_cbwr_get.restype = [ctypes.c_int], ctypes.c_int
            return library
        except (OSError, AttributeError):
            continue
    return None


def mkl_strict() -> bool | None:
    """Whether MKL runs in strict reproducible mode in this process; None where torch has no MKL or its
    service functions cannot be found (then nothing is known)."""
    library = _mkl_service()
    if library is None:
        return None
    mode = library.mkl_serv_cbwr_get(_MKL_CBWR_ALL)
    return mode >= 0 and bool(mode & _MKL_CBWR_STRICT)


@functools.cache
def warn_unless_reproducible() -> None:
    """Logs once when a multi-threaded CPU fit on Intel runs without the strict mode that MKL_CBWR asks for
    (MKL had started before semid set it): its weights, and possibly its codes, may then differ from a fit
    at another thread count. Another MKL_CBWR is the user's choice and goes unremarked."""
    if cpu_vendor() == "GenuineIntel" and os.environ.get("MKL_CBWR") == MKL_STRICT and mkl_strict() is False:
        log.warning("MKL started before semid asked for its strict reproducible mode: on this Intel CPU a fit at "
                    "%d threads may round otherwise than at 1; import semid before any matrix product, or set "
                    "MKL_CBWR=%s before starting Python (docs/semid.md 3.4)", torch.get_num_threads(), MKL_STRICT)


@contextlib.contextmanager
def threads_for_rows(rows: int) -> Iterator[None]:
    """At most rows // ROWS_PER_THREAD torch threads (at least one) inside the block, whose matrix products
    have `rows` rows: they then give the bits they give on one thread, so the files do not depend on the
    thread count. Without it Beauty's last encoder batch, five empty titles (10 token rows), gave one
    vector 2.1e-7 off at 2 threads, and the quantizer turned that into other codes for every item.
    Larger blocks run as they are (nothing to cap); the thread count is restored on the way out."""
    threads = torch.get_num_threads()
    cap = max(1, rows // ROWS_PER_THREAD)
    if cap >= threads:
        yield
        return
    torch.set_num_threads(cap)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
