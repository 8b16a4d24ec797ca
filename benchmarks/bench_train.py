"""Benchmark: training on simulated IMC hardware vs plain fp32 torch, same model, same data.

1. One epoch of the MNIST-5k MLP (784-128-10, batch 64) with all three MVMs of every layer on
   simulated IMC (16 nm preset, full adaptability) vs the same epoch in fp32, and the ratio
   next to its floor: the binary plane products alone cost ~16x the fp32 matmul for the forward
   MVM (4 weight bit planes x 4 activation bit planes) and ~4 x (non-empty radix-4 planes) for
   the backward and weight-gradient MVMs; the plane counts are read from the run's work record.
   Target: ratio <= 60x.
2. A full digits run (64-64-10 MLP, 10 epochs, batch 64) with all three MVMs on IMC: wall time
   (target <= 5 s on a 2-core machine), next to the fp32 run.

Usage: ``python benchmarks/bench_train.py [--threads N]`` (default: torch's thread count).
Prints a table; never asserted in tests.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from imckit import data, imc, models, train
from imckit import nn as inn


def _epoch_s(model, ds, epochs=1):
    t0 = time.perf_counter()
    h = train.fit(model, ds, epochs=epochs, batch_size=64, lr=0.05, seed=0, progress=False)
    return time.perf_counter() - t0, h


def _planes(work, rows, w_bits=4):
    """Plane-count floor of the simulator vs fp32 on the same MVMs, from a run's work record.

    Per (layer, MVM): non-empty input planes per input vector = cycles / (vectors x row tiles);
    each is multiplied against ``w_bits`` stored bit planes (the weight-gradient MVM stores the
    4-bit activations). Floor = MAC-weighted mean of ``w_bits x planes`` over the MVMs that ran
    (the first layer has no backward MVM, in fp32 autograd neither).
    """
    tot_mac = tot_floor = 0.0
    per: dict[str, list[float]] = {"forward": [], "backward": [], "weight_grad": []}
    steps = max(work["steps"], 1)
    for layer in work["layers"]:
        n, m = layer["shape"]
        mv = layer["mvms"]
        vectors = mv["forward"]["macs"] / (n * m)            # input vectors over the run (B*pos)
        if not vectors:
            continue
        shapes = {"forward": (vectors, n), "backward": (vectors, m),
                  "weight_grad": (m * steps, vectors / steps)}   # D1 columns, batch reduction
        for k, (vec, red) in shapes.items():
            if not mv[k]["macs"]:
                continue
            p = mv[k]["cycles"] / max(vec * math.ceil(red / rows), 1)
            per[k].append(p)
            tot_mac += mv[k]["macs"]
            tot_floor += mv[k]["macs"] * w_bits * p
    return tot_floor / max(tot_mac, 1), per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = imc.IMCConfig.jia22_16nm()
    print(f"bench_train: torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"IMC preset jia22_16nm ({cfg.rows} rows, {cfg.adc_bits}-bit ADC)")

    mnist = data.mnist5k()
    fp32_s = min(_epoch_s(models.mlp(784, (128,), 10, seed=0), mnist)[0] for _ in range(3))
    imc_model = inn.convert(models.mlp(784, (128,), 10, seed=0), placement="imc",
                            adaptability="full", imc=cfg)
    imc_s, h = _epoch_s(imc_model, mnist)
    floor, per = _planes(h.work, cfg.rows)
    dig_model = inn.convert(models.mlp(784, (128,), 10, seed=0), placement="digital")
    dig_s, _ = _epoch_s(dig_model, mnist)

    digits = data.digits()
    d32_s, d32 = _epoch_s(models.mlp(64, (64,), 10, seed=0), digits, epochs=10)
    dimc_s, dimc = _epoch_s(inn.convert(models.mlp(64, (64,), 10, seed=0), placement="imc",
                                        adaptability="full", imc=cfg), digits, epochs=10)

    def fmt(p):
        return "/".join(f"{v:.1f}" for v in p)

    print()
    print(f"{'case':<44} {'wall s':>8} {'ratio':>8} {'floor':>7}  note")
    print(f"{'MNIST-5k MLP 784-128-10, 1 epoch, fp32':<44} {fp32_s:8.3f} {1.0:8.1f} {'':>7}  "
          f"test acc {h.test_accuracy[-1]:.3f} (imc)")
    print(f"{'  same, all three MVMs digital (quantized)':<44} {dig_s:8.3f} {dig_s / fp32_s:8.1f}")
    print(f"{'  same, all three MVMs on IMC (full)':<44} {imc_s:8.3f} {imc_s / fp32_s:8.1f} "
          f"{floor:7.1f}  target <= 60x; input planes/vector per layer: forward "
          f"{fmt(per['forward'])}, backward {fmt(per['backward'])}, weight-grad "
          f"{fmt(per['weight_grad'])}")
    print(f"{'digits MLP 64-64-10, 10 epochs, fp32':<44} {d32_s:8.3f} {1.0:8.1f} {'':>7}  "
          f"test acc {d32.test_accuracy[-1]:.3f}")
    print(f"{'  same, all three MVMs on IMC (full)':<44} {dimc_s:8.3f} {dimc_s / d32_s:8.1f} "
          f"{'':>7}  target <= 5 s; test acc {dimc.test_accuracy[-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
