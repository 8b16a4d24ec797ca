"""Radix-4 quantization speed against torch's own float8 round trip, on the same tensor.

Work: fake-quantize a 16M-element fp32 tensor. Baseline: ``x.to(torch.float8_e4m3fn).float()``
(torch's native cast and back). Targets (issue 3): radix-4 nearest <= 4x the baseline,
stochastic <= 6x. Ratios are printed, never asserted. Run: ``python benchmarks/bench_formats.py``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from imckit import formats


def timeit(fn, repeat: int) -> float:
    fn()                                                   # warm-up (allocator, threads)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16 * 2 ** 20, help="elements (default 16M)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    g = torch.Generator(device=args.device).manual_seed(0)
    x = torch.randn(args.n, generator=g, device=args.device) * 1e-3    # gradient-like scale
    fmt = formats.Radix4()
    scale = formats.clip_scale(x, fmt)
    rows = [
        ("torch float8_e4m3fn round trip", lambda: x.to(torch.float8_e4m3fn).float()),
        ("radix-4 nearest", lambda: formats.quantize(x, fmt, scale=scale)),
        ("radix-4 stochastic", lambda: formats.quantize(x, fmt, scale=scale,
                                                        rounding="stochastic", generator=g)),
        ("INT4 nearest (info)", lambda: formats.quantize(x, formats.Int(4), scale=0.004)),
    ]
    base = None
    print(f"{args.n / 2**20:.0f}M fp32 elements on {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat}")
    print(f"{'work':34s} {'ms':>8s} {'ratio':>7s}  target")
    targets = {"radix-4 nearest": "<= 4x", "radix-4 stochastic": "<= 6x"}
    for name, fn in rows:
        t = timeit(fn, args.repeat)
        base = base or t
        print(f"{name:34s} {t * 1e3:8.3g} {t / base:6.2f}x  {targets.get(name, '')}")


if __name__ == "__main__":
    main()
