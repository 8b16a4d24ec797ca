"""One prepared check of the CUDA path (run on a machine with a GPU; never part of the tests).

Checks that the pure model and training glue run on CUDA and agree with the CPU where they
should, and times GPU runs as ratios against plain torch on the same GPU:

1. formats: radix-4 fake-quantization on CUDA equals the CPU result bit for bit (nearest), and
   its time vs ``x.to(torch.float8_e4m3fn).float()`` on a 16M tensor.
2. imc: an ideal IMC MVM on CUDA equals the integer product exactly; a noisy 16 nm MVM
   (1152x256 4-bit, batch 1152) vs one fp32 matmul of the same shape on the GPU.
3. nn + train: MNIST-5k MLP, one epoch with all three MVMs on simulated IMC vs fp32, on the GPU;
   the IMC run's test accuracy on CUDA next to the same run on the CPU.
4. ResNet-20 on random CIFAR-sized data: training steps on simulated IMC (full) and digital
   radix-4 vs fp32, on the GPU, with the IMC step's peak GPU memory and the CIFAR-10 epoch
   (50,000 samples) extrapolated from the measured steps.
5. The one mapping on CUDA (issue 10): an ideal-IMC stride-2 conv (the transposed-convolution
   backward) equals the digital placement exactly on the GPU, the digital placement on the GPU
   equals the CPU bit for bit (TF32 is off inside imckit), the one-cycle sign mode is exact,
   and one recorded steady-state step equals the analytic energy with its occupancy.

Usage: ``python benchmarks/gpu_check.py`` (prints a table; exits 1 if a check fails).
"""
from __future__ import annotations

import math
import os
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
    rdig = inn.convert(models.resnet20(), placement="digital").to(dev)
    rimc = inn.convert(models.resnet20(), placement="imc", adaptability="full", imc=cfg).to(dev)
    t_r32 = timed(step_fn(r32), reps=3)
    t_rdig = timed(step_fn(rdig), reps=3)
    if not dry:
        torch.cuda.reset_peak_memory_stats()
    n_imc = 2 if dry else int(os.environ.get("GPU_CHECK_IMC_STEPS", "5"))
    t_rimc = timed(step_fn(rimc), reps=n_imc)
    peak = 0.0 if dry else torch.cuda.max_memory_allocated() / 2**30
    epoch_min = t_rimc * math.ceil(50_000 / r_b) / 60
    rows += [(f"ResNet-20 step B={r_b}, fp32", True, t_r32, 1.0, ""),
             (f"ResNet-20 step B={r_b}, digital radix-4", True, t_rdig, t_rdig / t_r32, ""),
             (f"ResNet-20 step B={r_b}, all MVMs on IMC", True, t_rimc, t_rimc / t_r32,
              f"{n_imc} steps; peak GPU memory {peak:.1f} GiB; CIFAR-10 epoch ~{epoch_min:.1f} min"
              " (target <= 10)")]

    # 5. the one mapping on CUDA
    import copy

    from imckit import energy
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 10))
    xc = torch.rand(16, 3, 16, 16)
    yc = torch.randint(0, 10, (16,))

    Gc = torch.randn(16, 10, generator=torch.Generator().manual_seed(5))

    def grads(model, device):
        # a fixed upstream gradient (the loss's own backward differs between devices in the
        # last bits, and radix-4 rounding can amplify that): the same MVM operands everywhere
        model = model.to(device)
        x = xc.to(device).clone().requires_grad_(True)
        out = model(x)
        (out * Gc.to(device)).sum().backward()
        return ([out.detach().cpu(), x.grad.detach().cpu()]
                + [p.grad.detach().cpu() for p in model.parameters()])

    dig_gpu = grads(inn.convert(copy.deepcopy(base), placement="digital"), dev)
    dig_cpu = grads(inn.convert(copy.deepcopy(base), placement="digital"), torch.device("cpu"))
    ide_gpu = grads(inn.convert(copy.deepcopy(base), imc=imc.IMCConfig.ideal(),
                                adc_percentile=100), dev)
    def rel(a_list, b_list):
        """Largest difference relative to each tensor's magnitude (bias gradients excluded:
        they are torch's own float sums, whose order differs between devices)."""
        return max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
                   for i, (a, b) in enumerate(zip(a_list, b_list)) if i not in (3, 5))

    # Bit for bit on the CPU (tests/test_nn.py); on a GPU the integer sums are exact too (TF32
    # and cuDNN off) but the final float32 scalings may round differently: one float32 ulp.
    d_dev, d_ide = rel(dig_gpu, dig_cpu), rel(dig_gpu, ide_gpu)
    same_dev, ideal_eq = d_dev < 1e-6, d_ide < 1e-6
    gs = torch.Generator().manual_seed(3)
    Xr = formats.quantize(torch.randn(64, 1152, generator=gs), formats.Radix4(), scale=4.0)
    Ar = torch.randint(-7, 8, (1152, 64), generator=gs).float()
    one = imc.IMCConfig(**{**imc.IMCConfig.ideal().__dict__, "sign_mode": "one-cycle"})
    y1 = imc.mvm(Ar.to(dev), Xr.to(dev), one, x_kind="radix4", x_scale=4.0)
    one_ok = torch.allclose(y1.double().cpu(), Xr.double() @ Ar.double(), rtol=0, atol=1e-9)
    net = inn.convert(copy.deepcopy(base)).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for i in range(3):
        if i == 2:
            inn.reset_work(net)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xc.to(dev)), yc.to(dev)).backward()
        opt.step()
        inn.after_step(net)
    rec = inn.collect_work(net)
    e_rec = energy.energy_from_work(rec)
    e_ana = energy.training_step_energy(net, 16, input_shape=(3, 16, 16), occupancy=rec)
    contract = abs(e_ana.total_j / e_rec.total_j - 1) < 0.01
    ok &= same_dev and ideal_eq and one_ok and contract
    rows += [("digital conv path, CUDA vs CPU", same_dev, None, None,
              f"max rel. diff {d_dev:.1e} (TF32, cuDNN off)"),
             ("ideal IMC conv (stride 2) vs digital, CUDA", ideal_eq, None, None,
              f"max rel. diff {d_ide:.1e}; transposed-conv backward"),
             ("one-cycle signed radix-4 MVM exact, CUDA", one_ok, None, None, ""),
             ("recorded step == analytic energy, CUDA", contract, None, None,
              f"ratio {e_ana.total_j / e_rec.total_j:.4f}")]

    print(f"\n{'check':<44} {'ok':>4} {'time s':>9} {'ratio':>8}  note")
    for name, good, t, r, note in rows:
        ts = f"{t:9.4f}" if t is not None else f"{'':>9}"
        rs = f"{r:8.1f}" if r is not None else f"{'':>8}"
        print(f"{name:<44} {'yes' if good else 'NO':>4} {ts} {rs}  {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
