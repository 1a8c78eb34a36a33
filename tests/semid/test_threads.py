"""--threads: the one-line warning when the cores are already busy, and files that do not depend on it."""

from __future__ import annotations

import json
import os

import pytest
import semid
import torch
from semid.devices import cpu_vendor, mkl_strict, set_threads, threads_for_rows


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    threads = torch.get_num_threads()
    yield lambda load: monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    torch.set_num_threads(threads)


def test_busy_cores_give_a_warning_that_names_the_flag(two_cores):
    two_cores(3.4)
    warning = set_threads(2)
    assert warning is not None and "load average 3.4 on 2 cores" in warning and "--threads 1" in warning
    assert torch.get_num_threads() == 2


def test_no_warning_on_idle_cores_or_when_the_threads_fit(two_cores):
    two_cores(0.1)
    assert set_threads(2) is None
    two_cores(1.0)
    assert set_threads(1) is None  # one other job, one thread: nothing to gain
    two_cores(3.4)
    assert set_threads(1) is None  # already the least it can use



# The thread-count independence below was measured with MKL on an AMD EPYC (the row cap alone) and on an
# Intel Xeon (AVX-512; the row cap and MKL's strict mode, which semid asks for on Intel): docs/semid.md 3.4.
REPRODUCIBLE_HERE = torch.backends.mkl.is_available() and (
    cpu_vendor() == "AuthenticAMD" or (cpu_vendor() == "GenuineIntel" and mkl_strict()))
MEASURED = pytest.mark.skipif(not REPRODUCIBLE_HERE,
                              reason="measured with MKL on AMD CPUs, and on Intel CPUs in MKL's strict mode only")


@pytest.fixture
def threads():
    """torch's thread count, restored after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_for_rows_caps_short_products_at_one_thread_per_8_rows_and_restores(threads):
    torch.set_num_threads(4)
    for rows, inside in ((10, 1), (16, 2), (31, 3), (32, 4), (100_000, 4)):
        with threads_for_rows(rows):
            assert torch.get_num_threads() == inside, rows
        assert torch.get_num_threads() == 4
    with pytest.raises(RuntimeError), threads_for_rows(5):
        raise RuntimeError("the count comes back on an error too")
    assert torch.get_num_threads() == 4
    torch.set_num_threads(1)  # one thread: nothing to cap, so files made at one thread before the cap are unchanged
    with threads_for_rows(1):
        assert torch.get_num_threads() == 1


# Beauty's case, twice over: 1,029 items are 16 encoder batches of 64 and a last one of the 5 empty titles
# (10 token rows), and an rqvae batch of 1,024 items and one of 5. Without threads_for_rows the embeddings,
# quantizer weights, codebooks and codes differ at 2 threads (torch 2.13, MKL 2024.2, AMD EPYC; docs/semid.md 3.4).
@MEASURED
def test_the_files_do_not_depend_on_the_thread_count(tmp_path, write_jsonl, item_records, tiny_bert, threads):
    titles = [{"id": f"i{n}", "title": f"{item_records[n % 240]['title']} {n}"} for n in range(1024)]
    items = write_jsonl(titles + [{"id": f"empty{n}", "title": ""} for n in range(5)])
    for count in (1, 2):
        torch.set_num_threads(count)
        semid.encode_catalogue(items, tmp_path / f"threads-{count}", read=semid.ReadConfig(template="{title}"),
                               embed=semid.EmbedConfig(model=str(tiny_bert)), cache_dir=None,
                               quantizer=semid.QuantizerConfig(levels=2, codebook_size=16, epochs=3))
    one, two = tmp_path / "threads-1", tmp_path / "threads-2"
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and "embeddings.safetensors" in names
    for name in names:
        if name == "stats.json":  # its timings_s record the run
            stats_one, stats_two = (json.loads((folder / name).read_bytes()) for folder in (one, two))
            stats_one.pop("timings_s"), stats_two.pop("timings_s")
            assert stats_one == stats_two
        else:
            assert (one / name).read_bytes() == (two / name).read_bytes(), name


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="the rows-per-thread bound was measured on MKL")
@pytest.mark.parametrize("kind", ["rqvae", "rq", "pq", "vq", "rqkmeans"])
def test_every_quantizer_fits_the_same_weights_and_codes_at_1_and_2_threads(kind, threads):
    x = torch.nn.functional.normalize(torch.randn(1029, 48, generator=torch.Generator().manual_seed(5)), dim=-1)
    config = semid.QuantizerConfig(kind=kind, levels=2, codebook_size=16, epochs=3, kmeans_backend="torch")
    fitted = []
    for count in (1, 2):
        torch.set_num_threads(count)
        quantizer = semid.build_quantizer(config).fit(x)
        fitted.append((quantizer.module.state_dict(), quantizer.encode(x)))
    (weights_one, codes_one), (weights_two, codes_two) = fitted
    assert torch.equal(codes_one, codes_two)
    if REPRODUCIBLE_HERE:  # see MEASURED
        assert all(torch.equal(weights_one[name], weights_two[name]) for name in weights_one)


def test_strict_mkl_is_asked_for_on_intel_only_and_never_over_the_users_setting(monkeypatch):
    import semid.devices as devices
    for vendor, preset, expected in (("GenuineIntel", None, devices.MKL_STRICT), ("AuthenticAMD", None, None),
                                     ("GenuineIntel", "", ""), ("GenuineIntel", "COMPATIBLE", "COMPATIBLE")):
        monkeypatch.setattr(devices, "cpu_vendor", lambda vendor=vendor: vendor)
        if preset is None:
            monkeypatch.delenv("MKL_CBWR", raising=False)
        else:
            monkeypatch.setenv("MKL_CBWR", preset)
        devices.request_strict_mkl()
        assert os.environ.get("MKL_CBWR") == expected, (vendor, preset)


def test_the_embedding_cache_key_tells_strict_mkl_vectors_apart(monkeypatch):
    # vectors rounded in MKL's strict mode are not reused for another mode, nor resumed shards mixed
    import semid.embed as embed
    from semid.config import EmbedConfig
    monkeypatch.setattr(embed, "model_fingerprint", lambda model: "a model")
    texts = ["a lamp", "a chair"]
    keys = {}
    for strict in (True, False, None):
        monkeypatch.setattr(embed, "mkl_strict", lambda strict=strict: strict)
        keys[strict] = embed.cache_key(texts, EmbedConfig(device="cpu"))
    assert keys[True] != keys[False] == keys[None]  # off or unknown: the key made before the mode existed


@pytest.mark.skipif(not torch.backends.mkl.is_available() or cpu_vendor() != "GenuineIntel",
                    reason="semid asks MKL for its strict mode on Intel CPUs only")
def test_on_intel_importing_semid_first_turns_strict_mode_on_and_a_late_import_warns_at_the_fit_unless_the_user_chose():
    import subprocess
    import sys
    fit = ("semid.build_quantizer(semid.QuantizerConfig(kind='rq', levels=1, codebook_size=4, epochs=1))"
           ".fit(torch.randn(64, 8)); print(semid.devices.mkl_strict())")
    first = "import torch, semid, semid.devices; torch.set_num_threads(2); " + fit
    late = "import torch; torch.randn(64, 64) @ torch.randn(64, 64); " + first
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    runs = [subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                           timeout=120)
            for code, extra in ((first, {}), (late, {}), (late, {"MKL_CBWR": ""}))]  # the last: the user's choice
    assert [run.stdout.split()[-1] for run in runs] == ["True", "False", "False"], [run.stderr for run in runs]
    assert ["strict reproducible mode" in run.stderr for run in runs] == [False, True, False]
