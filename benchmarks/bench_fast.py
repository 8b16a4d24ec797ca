"""The three training MVMs of a 1152 -> 256 layer: bit-true IMC vs fast IMC vs plain torch.

Issue 14: ``imc.mvm_fast`` (one matmul plus one fitted error draw per output) against the
bit-true ``imc.mvm`` and an fp32 ``torch.matmul`` of the same shapes, in one process. Operands
as training quantizes them (``imc.training_operands`` statistics, batch 64): forward
``(64 x 1152) @ (1152 x 256)`` INT4 x INT4; backward ``(64 x 256) @ (256 x 1152)`` radix-4
phase 0 x INT4; weight gradient ``(256 x 64) @ (64 x 1152)`` radix-4 phase 1 x unsigned INT4.
16 nm preset, ADC ranges calibrated once (as the layers do) and passed in. Target: the three
fast MVMs together <= 4x the three torch matmuls. Each row: median over ``--repeat`` runs,
interleaved. Run: ``python benchmarks/bench_fast.py --threads 2``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from imckit import imc


def operands(kind, n_in=1152, n_out=256, batch=64, seed=0):
    """(A, X, kw) of one MVM of the layer, shaped as the layer runs it."""
    g = torch.Generator().manual_seed(seed)
    if kind == "forward":                    # reduction n_in, outputs n_out, vectors batch
        A, X, kw, _, _ = imc.training_operands("forward", n_in, outputs=n_out, vectors=batch,
                                               generator=g)
    elif kind == "backward":                 # reduction n_out, outputs n_in
        A, X, kw, _, _ = imc.training_operands("backward", n_out, outputs=n_in, vectors=batch,
                                               generator=g)
    else:                                    # reduction batch, outputs n_in, vectors n_out
        A, X, kw, _, _ = imc.training_operands("weight_grad", batch, outputs=n_in,
                                               vectors=n_out, generator=g)
    return A, X, kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = imc.IMCConfig.jia22_16nm()
    rows = {}
    for kind in ("forward", "backward", "weight_grad"):
        A, X, kw = operands(kind)
        r = imc.calibrate_adc_range(imc.column_counts(A, X, cfg, **kw), cfg.rows,
                                    floor=cfg.adc_range_floor())
        Af, Xf = A.float(), X.float()
        gen = torch.Generator().manual_seed(1)
        rows[("torch", kind)] = lambda Xf=Xf, Af=Af: Xf @ Af
        rows[("fast", kind)] = lambda A=A, X=X, kw=kw, r=r: imc.mvm_fast(
            A, X, cfg, adc_range=r, generator=gen, report=True, **kw)
        rows[("bit-true", kind)] = lambda A=A, X=X, kw=kw, r=r: imc.mvm(
            A, X, cfg, adc_range=r, generator=gen, report=True, **kw)
    times = {k: [] for k in rows}
    for fn in rows.values():                                       # warm-up (caches, tables)
        fn()
    for _ in range(args.repeat):
        for k, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"1152 -> 256 layer, batch 64; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, median of {args.repeat}")
    print(f"{'MVM':12s} {'torch ms':>9s} {'fast ms':>9s} {'bit-true ms':>12s} {'fast/torch':>11s} "
          f"{'bit-true/torch':>15s}")
    tot = {m: 0.0 for m in ("torch", "fast", "bit-true")}
    for kind in ("forward", "backward", "weight_grad"):
        t = {m: med[(m, kind)] for m in tot}
        for m in tot:
            tot[m] += t[m]
        print(f"{kind:12s} {t['torch'] * 1e3:9.2f} {t['fast'] * 1e3:9.2f} "
              f"{t['bit-true'] * 1e3:12.2f} {t['fast'] / t['torch']:10.1f}x "
              f"{t['bit-true'] / t['torch']:14.1f}x")
    print(f"{'all three':12s} {tot['torch'] * 1e3:9.2f} {tot['fast'] * 1e3:9.2f} "
          f"{tot['bit-true'] * 1e3:12.2f} {tot['fast'] / tot['torch']:10.1f}x "
          f"{tot['bit-true'] / tot['torch']:14.1f}x   target fast <= 4x")


if __name__ == "__main__":
    main()
