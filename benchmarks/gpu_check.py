"""One prepared check of the CUDA path (run on a machine with a GPU; never part of the tests).

Checks that the pure model and training glue run on CUDA and agree with the CPU where they
should, and times GPU runs as ratios against plain torch on the same GPU:

1. formats: radix-4 fake-quantization on CUDA equals the CPU result bit for bit (nearest), and
   its time vs ``x.to(torch.float8_e4m3fn).float()`` on a 16M tensor.
2. imc: an ideal IMC MVM on CUDA equals the integer product exactly; a noisy 16 nm MVM
   (1152x256 4-bit, batch 1152) vs one fp32 matmul of the same shape on the GPU.
3. nn + train: MNIST-5k MLP, one epoch with all three MVMs on simulated IMC vs fp32, on the GPU;
   the IMC run's test accuracy on CUDA next to the same run on the CPU.
4. ResNet-20 on random CIFAR-sized data: one training step on simulated IMC vs fp32, on the GPU.

Usage: ``python benchmarks/gpu_check.py`` (prints a table; exits 1 if a check fails).
"""
from __future__ import annotations

import sys
import time

import torch


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps=5):
    fn()
    _sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync()
    return (time.perf_counter() - t0) / reps


def main(argv=None) -> int:
    dry = "--dry-run" in (argv if argv is not None else sys.argv[1:])
    if not torch.cuda.is_available() and not dry:
        print("gpu_check: no CUDA device; nothing to check (--dry-run runs the CPU path, small)")
        return 0
    from imckit import data, formats, imc, models, train
    from imckit import nn as inn

    dev = torch.device("cpu" if dry else "cuda")
    n_q, n_b, r_b = (1 << 16, 64, 8) if dry else (1 << 24, 1152, 128)
    name = "CPU dry run" if dry else torch.cuda.get_device_name(0)
    print(f"gpu_check: {name}, torch {torch.__version__}")
    ok = True
    rows = []

    # 1. formats
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n_q, generator=g) * 1e-3
    q_cpu = formats.quantize(x, formats.Radix4(), scale=2.0 ** -5)
    xg = x.to(dev)
    q_gpu = formats.quantize(xg, formats.Radix4(), scale=2.0 ** -5)
    same = torch.equal(q_cpu, q_gpu.cpu())
    ok &= same
    t_q = timed(lambda: formats.quantize(xg, formats.Radix4(), scale=2.0 ** -5))
    t_sr = timed(lambda: formats.quantize(xg, formats.Radix4(), scale=2.0 ** -5,
                                          rounding="stochastic",
                                          generator=torch.Generator(device=dev).manual_seed(1)))
    t_f8 = timed(lambda: xg.to(torch.float8_e4m3fn).float())
    rows += [("radix-4 nearest, 16M, CUDA == CPU", same, t_q, t_q / t_f8, "vs float8 round trip"),
             ("radix-4 stochastic, 16M", True, t_sr, t_sr / t_f8, "vs float8 round trip")]

    # 2. imc
    gi = torch.Generator(device="cpu").manual_seed(0)
    A = torch.randint(-7, 8, (1152, 256), generator=gi).float()
    X = torch.randint(0, 16, (n_b, 1152), generator=gi).float()
    Ag, Xg = A.to(dev), X.to(dev)
    y = imc.mvm(Ag, Xg, imc.IMCConfig.ideal())
    exact = torch.equal(y.cpu(), (X.double() @ A.double()).float())
    ok &= exact
    cfg = imc.IMCConfig.jia22_16nm()
    t_imc = timed(lambda: imc.mvm(Ag, Xg, cfg))
    t_mm = timed(lambda: Xg @ Ag)
    rows += [("IMC MVM ideal, CUDA == integer product", exact, None, None, ""),
             (f"IMC MVM 16nm noisy 1152x256, B={n_b}", True, t_imc, t_imc / t_mm, "vs fp32 matmul")]

    # 3. nn + train on MNIST-5k
    ds = data.mnist5k()

    def run(placement, device, epochs=1):
        torch.manual_seed(0)
        m = models.mlp(784, (128,), 10, seed=0)
        if placement != "fp32":
            m = inn.convert(m, placement=placement, adaptability="full", imc=cfg)
        m = m.to(device)
        t0 = time.perf_counter()
        h = train.fit(m, ds, epochs=epochs, batch_size=64, lr=0.05, seed=0, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, h.test_accuracy[-1]

    if dry:
        import dataclasses
        ds = dataclasses.replace(ds, x_train=ds.x_train[:512], y_train=ds.y_train[:512])
    run("fp32", dev)  # warm-up
    t32, a32 = run("fp32", dev)
    timc, aimc = run("imc", dev)
    _, aimc_cpu = run("imc", torch.device("cpu"))
    close = abs(aimc - aimc_cpu) < 0.05
    ok &= close
    rows += [("MNIST-5k MLP epoch, fp32", True, t32, 1.0, f"acc {a32:.3f}"),
             ("MNIST-5k MLP epoch, all MVMs on IMC", close, timc, timc / t32,
              f"acc {aimc:.3f} (CPU {aimc_cpu:.3f})")]

    # 4. ResNet-20 step
    xb = torch.randn(r_b, 3, 32, 32, device=dev)
    yb = torch.randint(0, 10, (r_b,), device=dev)

    def step_fn(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        return step

    r32 = models.resnet20().to(dev)
    rimc = inn.convert(models.resnet20(), placement="imc", adaptability="full", imc=cfg).to(dev)
    t_r32 = timed(step_fn(r32), reps=3)
    t_rimc = timed(step_fn(rimc), reps=2)
    rows += [(f"ResNet-20 step B={r_b}, fp32", True, t_r32, 1.0, ""),
             (f"ResNet-20 step B={r_b}, all MVMs on IMC", True, t_rimc, t_rimc / t_r32, "")]

    print(f"\n{'check':<44} {'ok':>4} {'time s':>9} {'ratio':>8}  note")
    for name, good, t, r, note in rows:
        ts = f"{t:9.4f}" if t is not None else f"{'':>9}"
        rs = f"{r:8.1f}" if r is not None else f"{'':>8}"
        print(f"{name:<44} {'yes' if good else 'NO':>4} {ts} {rs}  {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
