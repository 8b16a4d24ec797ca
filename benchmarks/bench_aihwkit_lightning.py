"""Optional side by side: IBM's aihwkit-lightning vs imckit (fast and bit-true) vs plain torch.

Issue 14's comparison, kept runnable: the same workloads in one process, CPU time per step as a
ratio to plain torch.

1. One 1152 -> 256 linear layer at batch 64, forward + backward (input and weight gradients).
2. One MNIST-5k epoch of an MLP 784-256-10 (batch 64, SGD).

What each simulates differs, and the ratios must be read with that in mind:

* **aihwkit-lightning** (``TorchInferenceRPUConfig``): statistical, the forward MVM only, around
  one float matmul: 8-bit input DAC, 8-bit output ADC with a bound, Gaussian output noise, and
  Gaussian weight noise injected during training; "backward and update passes are ideal".
* **imckit fast** (``fidelity="fast"``): all three MVMs analog, one matmul each plus an error
  model fitted to the bit-true physics (per-conversion ADC error given the column count, kT/C and
  comparator noise, the chip's mismatch folded into the weights), INT4 operands, radix-4
  gradients, and the full work record (conversions, cycles) for the energy model.
* **imckit bit-true**: every column conversion simulated.

aihwkit-lightning is not a dependency: install it yourself (``pip install aihwkit-lightning``;
it pins the torch version it was built for). Without it the script measures imckit and torch
only. Run: ``python benchmarks/bench_aihwkit_lightning.py --threads 2``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from imckit import data
from imckit import nn as inn


def _aihwkit():
    try:
        from aihwkit_lightning.nn.conversion import convert_to_analog
        from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig
        from aihwkit_lightning.simulator.parameters.enums import WeightNoiseInjectionType
    except ImportError:
        return None
    cfg = TorchInferenceRPUConfig()
    cfg.pre_post.input_range.enable = True      # learned input range (needed for the ADC)
    cfg.forward.inp_res = 2**8 - 2              # 8-bit input DAC
    cfg.forward.out_res = 2**8 - 2              # 8-bit ADC
    cfg.forward.out_bound = 10.0                # ADC range, in units of the normalized MVM
    cfg.forward.out_noise = 0.04                # output noise (fraction of the range)
    cfg.modifier.noise_type = WeightNoiseInjectionType.ADD_NORMAL
    cfg.modifier.std_dev = 0.02                 # weight noise injected during training
    return lambda model: convert_to_analog(model, cfg)


def _cpu_s(fn, n):
    fn()
    ts = []
    for _ in range(n):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return statistics.median(ts)


def layer_case(make, repeat):
    torch.manual_seed(0)
    x = torch.randn(64, 1152, requires_grad=True)
    model = make(nn.Sequential(nn.Linear(1152, 256)))
    model.train()

    def step():
        x.grad = None
        model.zero_grad()
        model(x).square().mean().backward()
    return _cpu_s(step, repeat)


def mlp_epoch(make, ds):
    torch.manual_seed(0)
    model = make(nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    X, Y = ds.x_train.float(), ds.y_train
    g = torch.Generator().manual_seed(0)
    on_imc = any(isinstance(m, inn.IMCModule) for m in model.modules())

    def epoch():
        model.train()
        for idx in torch.randperm(len(X), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), Y[idx]).backward()
            opt.step()
            if on_imc:
                inn.after_step(model)
    return _cpu_s(epoch, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=11)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    makers = {"plain torch": lambda m: m}
    aihw = _aihwkit()
    if aihw is not None:
        import aihwkit_lightning
        makers[f"aihwkit-lightning {aihwkit_lightning.__version__}"] = aihw
    makers["imckit fast"] = lambda m: inn.convert(m, recipe="strict", adaptability="full",
                                                  fidelity="fast")
    makers["imckit bit-true"] = lambda m: inn.convert(m, recipe="strict", adaptability="full")
    print(f"bench_aihwkit_lightning: torch {torch.__version__}, {args.threads} thread(s), CPU "
          "time (median), ratio to plain torch"
          + ("" if aihw is not None else "; aihwkit-lightning not installed: skipped"))
    ds = data.mnist5k()
    res = {name: (layer_case(make, args.repeat if "bit-true" not in name else 3),
                  mlp_epoch(make, ds)) for name, make in makers.items()}
    t_layer, t_epoch = res["plain torch"]
    print(f"\n{'simulator':32s} {'layer fwd+bwd ms':>17s} {'ratio':>7s} {'MLP epoch s':>12s} {'ratio':>7s}")
    for name, (a, b) in res.items():
        print(f"{name:32s} {a * 1e3:17.2f} {a / t_layer:7.1f} {b:12.3f} {b / t_epoch:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
