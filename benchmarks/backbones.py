"""Forward+backward throughput of the three encoders against ``torch.nn.TransformerEncoder``.

    python -m benchmarks.backbones                      # CPU, writes benchmarks/results/backbones_cpu.json
    python -m benchmarks.backbones --device cuda        # also reports which SDPA backend ran

Sizes follow the issue: d=64, 2 layers, batch 256, N in {50, 200}. Sequences are full length
(no padding), so every encoder does the same work. The reference is PyTorch's own encoder with the
same width, heads, feed-forward size and a causal mask.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from srs_backbones import build_encoder
from torch import nn
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).parent


class TorchReference(nn.Module):
    """nn.TransformerEncoder with SASRec's sizes, as a reference point."""

    causal = True

    def __init__(self, dim: int, layers: int, heads: int, inner: int, max_len: int):
        super().__init__()
        self.positions = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, inner, dropout=0.2, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x, padding_mask):
        n = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=x.device)
        h = x + self.positions(torch.arange(n, device=x.device))
        return self.encoder(h, mask=mask, is_causal=True)


def models(dim: int, layers: int, max_len: int) -> dict[str, nn.Module]:
    return {
        "sasrec": build_encoder("sasrec", dim=dim, num_layers=layers, num_heads=1, max_len=max_len),
        "gru4rec": build_encoder("gru4rec", dim=dim, num_layers=1, max_len=max_len),
        "bert4rec": build_encoder("bert4rec", dim=dim, num_layers=layers, num_heads=2, max_len=max_len),
        "torch.nn.TransformerEncoder": TorchReference(dim, layers, 1, dim, max_len),
    }


def sdpa_backends(model: nn.Module, x: torch.Tensor, pad: torch.Tensor) -> list[str]:
    """Names of the SDPA kernels the profiler saw during one forward pass."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=activities) as prof, torch.no_grad():
        model(x, pad)
    return sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key and e.key.startswith("aten::_")})


def time_step(model: nn.Module, x: torch.Tensor, pad: torch.Tensor, steps: int, amp: bool) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(x, pad).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: allocator, kernels, autotuning
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA), which the Flash kernel needs")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    rows = []
    for n in args.lengths:
        for name, model in models(args.dim, args.layers, n).items():
            model = model.to(args.device).train()
            x = torch.randn(args.batch, n, args.dim, device=args.device)
            pad = torch.zeros(args.batch, n, dtype=torch.bool, device=args.device)
            seconds = time_step(model, x, pad, args.steps, args.amp)
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.amp):
                backends = sdpa_backends(model.eval(), x, pad)
            row = {"encoder": name, "N": n, "seq_per_s": round(args.batch / seconds, 1),
                   "ms_per_step": round(seconds * 1e3, 2), "sdpa_kernels": backends}
            print(json.dumps(row))
            rows.append(row)

    result = {
        "machine": machine(args.device), "device": args.device, "torch": torch.__version__,
        "batch": args.batch, "dim": args.dim, "layers": args.layers, "amp_bf16": args.amp,
        "rows": rows,
    }
    out = args.out or HERE / "results" / f"backbones_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
