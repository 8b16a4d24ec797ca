"""Plane products of a conv layer: per-plane ``conv2d`` vs one im2col and int8 matmuls (issue 12).

Issue 12 proposed running IMCConv2d's plane products as one ``conv2d`` per (input plane, stored
bit plane) instead of im2col. This measures both on ResNet-20's three conv shapes (3x3, padding
1, batch 32, 4-bit unsigned activations as 4 binary planes, 4-bit weights as 4 bit columns per
output channel), computing the same column counts:

* ``conv2d``: per input plane, one float32 ``conv2d`` against all 4C stored bit planes;
* ``im2col + int8``: the simulator's scheme, one im2col of the int8 levels (the layers' own
  ``imckit.nn.layers.im2col``), then per plane an exact ``torch._int_mm`` (int8 x int8 ->
  int32) of its bits against the stored bits.

Both outputs are checked equal. Run: ``python benchmarks/bench_conv_planes.py --threads 2``.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from imckit.nn.layers import im2col as im2col_rows


def _cpu_ms(fn, k=5):
    fn()
    t0 = time.process_time()
    for _ in range(k):
        fn()
    return (time.process_time() - t0) / k * 1e3


def case(C, H, batch=32):
    g = torch.Generator().manual_seed(C)
    x = torch.randint(0, 16, (batch, C, H, H), generator=g)
    w = torch.randint(-8, 8, (C, C, 3, 3), generator=g)
    wb = torch.cat([((w.to(torch.uint8) >> k) & 1) for k in range(4)]).float()  # (4C, C, 3, 3)
    planes = [((x >> k) & 1).float() for k in range(4)]
    W8 = wb.view(4 * C, -1).t().contiguous().to(torch.int8)                    # (9C, 4C)

    def conv():
        return [F.conv2d(p, wb, padding=1) for p in planes]

    x8 = x.to(torch.int8)                       # the layers hand int8 levels to the simulator

    def im2col():
        cols = im2col_rows(x8, (3, 3), (1, 1), (1, 1), (1, 1))          # the layers' im2col
        return [torch._int_mm((cols >> k) & 1, W8) for k in range(4)]

    a = conv()[1].permute(0, 2, 3, 1).reshape(-1, 4 * C)
    b = im2col()[1].float()
    assert torch.equal(a, b), "the two schemes disagree"
    return _cpu_ms(conv), _cpu_ms(im2col)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"bench_conv_planes: torch {torch.__version__}, {args.threads} thread(s), CPU time per "
          "forward plane-product pass (4 planes), batch 32")
    print(f"{'layer':24s} {'conv2d ms':>10s} {'im2col+int8 ms':>15s} {'conv2d / im2col':>16s}")
    for C, H in [(16, 32), (32, 16), (64, 8)]:
        c, i = case(C, H)
        print(f"{f'{C}->{C} 3x3 at {H}x{H}':24s} {c:10.1f} {i:15.1f} {c / i:16.2f}")


if __name__ == "__main__":
    main()
