"""Bit-true IMC MVM (imckit.imc.mvm) vs one fp32 ``torch.matmul`` of the same shape.

Work (issue 4): A = 1152 x 256 stored 4-bit signed weights (one 1152-row array height, 1024
physical columns), X = 256 input vectors of 1152 4-bit unsigned activations; 8-bit ADC, capacitor
mismatch and kT/C noise on (16 nm preset [JIA22]). Baseline: ``X.float() @ A.float()``.

Floor: the simulator multiplies 4 input planes by 4 stored bit planes, so its one large matmul
per tile is 16x the baseline's multiply-adds; target <= 24x. Also printed: radix-4 inputs (up to
14 planes: 7 exponents x 2 signs, only non-empty ones run), the ideal mode, and the bare plane
matmul (the floor, measured). Each row: median wall time over ``--repeat`` runs, all rows
interleaved so machine load hits them alike. Run: ``python benchmarks/bench_imc.py``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from imckit import imc


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    N, M, B = 1152, 256, 256
    A = torch.randint(-8, 8, (N, M), generator=g).to(dev)
    X = torch.randint(0, 16, (B, N), generator=g).to(dev)
    # gradient-like radix-4 inputs: magnitudes spread over the 7 exponent levels, 20 % zeros
    k = torch.randint(0, 7, (B, N), generator=g)
    sign = torch.where(torch.rand(B, N, generator=g) < 0.5, -1.0, 1.0)
    D = torch.where(torch.rand(B, N, generator=g) < 0.2, 0.0, sign * 4.0 ** -k.float()).to(dev)
    Af, Xf = A.float(), X.float()
    cfg = imc.IMCConfig.jia22_16nm()
    ideal = imc.IMCConfig.ideal()
    noise = torch.Generator(device=dev).manual_seed(1)
    planes = torch.randint(0, 2, (16 * B // 4, N), generator=g).float().to(dev)   # 4 x B rows
    bits = torch.randint(0, 2, (N, 4 * M), generator=g).float().to(dev)
    rows = {
        "fp32 torch.matmul (baseline)": lambda: Xf @ Af,
        "plane matmul alone (the 16x floor)": lambda: planes @ bits,
        "imc.mvm 4b x 4b, 8-bit ADC, mismatch + kT/C": lambda: imc.mvm(A, X, cfg, generator=noise),
        "imc.mvm radix-4 inputs, same array": lambda: imc.mvm(A, D, cfg, x_kind="radix4",
                                                              generator=noise),
        "imc.mvm ideal mode (exact)": lambda: imc.mvm(A, X, ideal),
    }
    times = {name: [] for name in rows}
    for fn in rows.values():                                       # warm-up (caches, allocator)
        fn()
    for _ in range(args.repeat):
        for name, fn in rows.items():
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times[name].append(time.perf_counter() - t0)
    _, w = imc.mvm(A, D, cfg, x_kind="radix4", report=True)
    base = statistics.median(times["fp32 torch.matmul (baseline)"])
    print(f"A {N}x{M} 4-bit, X {B}x{N}; {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat}")
    print(f"radix-4 run: {w.cycles / B:.1f} non-empty planes per input vector (of 14)")
    print(f"{'work':46s} {'ms':>8s} {'ratio':>8s}  target")
    targets = {"imc.mvm 4b x 4b, 8-bit ADC, mismatch + kT/C": "<= 24x"}
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:46s} {t * 1e3:8.2f} {t / base:7.1f}x  {targets.get(name, '')}")


if __name__ == "__main__":
    main()
