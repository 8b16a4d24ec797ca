"""Charge-domain in-memory-computing (IMC) MVM, simulated bit-true (SPEC §3).

An array of ``rows x columns`` SRAM bit cells, each with a capacitor. A column computes a binary
dot product by charge sharing: every row whose input digit and stored bit are both 1 charges its
capacitor, then all capacitors of the column are shorted and the shared voltage is the fraction
of charged capacitors [JIA20]. An ADC per column digitizes that voltage. Multi-bit operands use
bit-parallel / bit-serial (BPBS) operation [JIA20]: bit ``k`` of every stored entry lives in its
own physical column, inputs are applied one binary plane per cycle, and a digital back end
combines the column readings with shifts and adds.

Non-idealities, each switchable:

* capacitor mismatch ``C_ij = C_u (1 + eps_ij)``, ``eps_ij ~ N(0, cap_mismatch^2)`` drawn once per
  simulated chip from ``cfg.seed`` and the array (tile) index, then fixed;
* kT/C thermal noise, fresh every conversion, ``sigma = sqrt(kT / C_col) / V_DD`` of full swing;
* the ADC: ``adc_bits`` over ``[0, adc_range]`` of the swing, clipping above, optional noise.

Longer reductions than ``rows`` are split into row tiles whose partial sums add digitally.
Everything is one matmul per row tile over all planes of a batch (no loops over bits, rows,
columns or batch elements). CPU and CUDA: the device follows the inputs.

>>> import torch
>>> A = torch.tensor([[1, -2], [3, 4], [-5, 6]])          # N=3 stored 4-bit signed ints, M=2
>>> X = torch.tensor([[1, 2, 3], [15, 0, 7]])              # B=2 unsigned 4-bit inputs
>>> mvm(A, X, IMCConfig.ideal()).tolist() == (X @ A).tolist()
True
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from ._validate import check_choice, check_range
from .work import Work

__all__ = ["IMCConfig", "mvm", "column_counts", "calibrate_adc_range", "sqnr_split", "SQNRSplit",
           "X_KINDS", "BOLTZMANN"]

BOLTZMANN = 1.380649e-23
"""Boltzmann constant k in J/K (SI exact)."""

X_KINDS = ("unsigned", "signed", "radix4", "multilevel")
"""How the inputs X are turned into planes applied one per cycle (see :func:`mvm`)."""


@dataclass(frozen=True)
class IMCConfig:
    """One charge-domain IMC array and its converters. Defaults are the 16 nm preset [JIA22].

    Tags after each source key: S stated, D derived, I our assumption (ENERGY-SOURCES.md).
    """

    rows: int = 1152
    """Rows (capacitors) per column of one array; a longer reduction is row-tiled. 1152 [JIA22, S2]."""
    columns: int = 256
    """Physical columns (each with its own ADC) per array. 256 [JIA22, S2]."""
    adc_bits: int | None = 8
    """ADC resolution in bits, 1..16 (8-bit SAR [JIA22, S2]); ``None`` = no quantization at all
    (an infinitely fine converter, for analysis only)."""
    adc_range: float = 1.0
    """Top of the ADC input range as a fraction of full column swing, in (0, 1]. 1.0 [I]."""
    adc_calibration: str = "fixed"
    """``"fixed"``: use ``adc_range``; ``"percentile"``: recalibrate per call to the power of two
    covering ``adc_percentile`` % of this call's column values (a programmable reference) [I]."""
    adc_percentile: float = 99.9
    """Percentile used by ``adc_calibration="percentile"``, in (0, 100]. 99.9 [I]."""
    adc_noise_lsb: float = 0.0
    """Input-referred ADC noise, rms in LSB, fresh per conversion. 0 [I]."""
    round_counts: bool = False
    """Digital back end rounds each count estimate to the nearest integer (exact when one ADC
    LSB is at most one count and the range covers all counts). False [I]."""
    cap_unit_ff: float = 1.0
    """Unit bit-cell capacitance C_u in fF. 1 fF [I], guided by JIA20's 1.2 fF MOM cap [S]."""
    col_parasitic_ff: float = 0.0
    """Extra column capacitance in fF, only lowering kT/C noise (its gain error is assumed
    calibrated out by the ADC reference). 0 [I], the pessimistic choice."""
    cap_mismatch: float = 0.002
    """Relative sigma of each bit-cell capacitor, 0..0.5. 0.2 % [I] (fF MOM caps match to
    ~0.1-1 %; JIA22 does not state a number we can cite)."""
    thermal_noise: bool = True
    """Add kT/C noise of the shared column capacitance to every conversion."""
    temperature_k: float = 300.0
    """Temperature in kelvin for kT/C noise. 300 K [I]."""
    v_dd: float = 0.8
    """Supply voltage in volts = full column swing. 0.8 V [JIA22, S2]."""
    input_levels: int = 2
    """Levels of the input DAC: 2 = binary planes; L > 2 applies base-L digits (multi-level inputs
    [LEE21], as in GRIMM24); the column value range grows by (L - 1). 2 [JIA22]."""
    seed: int = 0
    """Chip seed: fixes the capacitor mismatch pattern (and the default noise generator)."""

    def __post_init__(self):
        check_range("rows", self.rows, 1, None, integer=True)
        check_range("columns", self.columns, 1, None, integer=True)
        if self.adc_bits is not None:
            check_range("adc_bits", self.adc_bits, 1, 16, integer=True)
        check_range("adc_range", self.adc_range, 0, 1, lo_open=True)
        check_choice("adc_calibration", self.adc_calibration, ["fixed", "percentile"])
        check_range("adc_percentile", self.adc_percentile, 0, 100, lo_open=True)
        check_range("adc_noise_lsb", self.adc_noise_lsb, 0, None)
        check_choice("round_counts", self.round_counts, [True, False])
        check_range("cap_unit_ff", self.cap_unit_ff, 0, None, lo_open=True)
        check_range("col_parasitic_ff", self.col_parasitic_ff, 0, None)
        check_range("cap_mismatch", self.cap_mismatch, 0, 0.5)
        check_choice("thermal_noise", self.thermal_noise, [True, False])
        check_range("temperature_k", self.temperature_k, 0, None, lo_open=True)
        check_range("v_dd", self.v_dd, 0, None, lo_open=True)
        check_range("input_levels", self.input_levels, 2, 256, integer=True)
        check_range("seed", self.seed, 0, 2**62, integer=True)

    @property
    def sigma_thermal(self) -> float:
        """kT/C noise rms as a fraction of full column swing (0 when ``thermal_noise`` is off).

        >>> round(IMCConfig.jia22_16nm().sigma_thermal * 1e5, 1)   # ~7.5e-5 of 0.8 V
        7.5
        """
        if not self.thermal_noise:
            return 0.0
        c_col = (self.rows * self.cap_unit_ff + self.col_parasitic_ff) * 1e-15
        return math.sqrt(BOLTZMANN * self.temperature_k / c_col) / self.v_dd

    @property
    def full_scale(self) -> int:
        """Ideal count of a fully charged column: ``rows * (input_levels - 1)``."""
        return self.rows * (self.input_levels - 1)

    @classmethod
    def ideal(cls, rows: int = 1152, columns: int = 256, input_levels: int = 2) -> "IMCConfig":
        """No mismatch, no noise, an ADC fine enough for every count plus a rounding back end:
        :func:`mvm` equals the integer product exactly. Uses a 16-bit ADC over the full swing
        when ``rows * (input_levels - 1) <= 2**16 - 1`` (one LSB < 1 count), else no ADC.

        >>> IMCConfig.ideal().adc_bits, IMCConfig.ideal(rows=100_000).adc_bits
        (16, None)
        """
        bits = 16 if rows * (input_levels - 1) <= 2**16 - 1 else None
        return cls(rows=rows, columns=columns, adc_bits=bits, adc_range=1.0, round_counts=True,
                   cap_mismatch=0.0, thermal_noise=False, adc_noise_lsb=0.0,
                   input_levels=input_levels)

    @classmethod
    def jia22_16nm(cls, **changes) -> "IMCConfig":
        """The 16 nm prototype [JIA22]: 1152 x 256 per core, 8-bit SAR ADC per column, 0.8 V (S2).
        C_u = 1 fF, 0.2 % mismatch, 300 K are ours [I]."""
        return dataclasses.replace(cls(rows=1152, columns=256, adc_bits=8, v_dd=0.8), **changes)

    @classmethod
    def jia20_65nm(cls, **changes) -> "IMCConfig":
        """The 65 nm predecessor [JIA20]: 2304 x 256, 8-bit ADC, 1.2 fF MOM caps, 0.85 V (S).
        Mismatch and temperature as in :meth:`jia22_16nm` [I]."""
        return dataclasses.replace(cls(rows=2304, columns=256, adc_bits=8, v_dd=0.85,
                                       cap_unit_ff=1.2), **changes)


# --------------------------------------------------------------------------- operand planes

def _as_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t)
        except Exception:
            raise ValueError(f"{name}={type(t).__name__} is not allowed: pass a tensor or array") from None
    if t.dim() != 2:
        raise ValueError(f"{name}.shape={tuple(t.shape)} is not allowed: {name} must be 2-D")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}.dtype={t.dtype} is not allowed: use an integer or float dtype")
    return t


def _check_ints(name, t, lo, hi, what):
    """All entries finite integers in lo..hi, else ValueError naming the first offender."""
    if t.numel() == 0:
        return
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != torch.round(t))
        if bool(bad.any()):
            v = t[bad][0].item()
            raise ValueError(f"{name} contains {v!r}, not an integer: allowed {lo}..{hi} ({what})")
    tmin, tmax = t.min().item(), t.max().item()
    for v in (tmin, tmax):
        if v < lo or v > hi:
            raise ValueError(f"{name} contains {v:g}, out of range: allowed {lo}..{hi} ({what})")


def _stored_planes(A, a_bits, a_signed):
    """Bit matrix (N, M*a_bits) in column order m*a_bits + k, and plane weights (a_bits,)."""
    lo, hi = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if a_signed else (0, 2**a_bits - 1)
    _check_ints("A", A, lo, hi, f"a_bits={a_bits}, a_signed={a_signed}")
    ai = A.to(torch.int64) & (2**a_bits - 1)                      # two's complement pattern
    k = torch.arange(a_bits, device=A.device)
    bits = ((ai.unsqueeze(-1) >> k) & 1).to(torch.float32).reshape(A.shape[0], -1)
    wa = 2.0 ** k.to(torch.float64)
    if a_signed:
        wa[-1] = -wa[-1]
    return bits, wa


def _input_planes(X, kind, x_bits, levels, x_scale, phase):
    """Digit planes (P, B, N) float32 in 0..L-1 (L = 2 except multilevel) and weights (P,)."""
    dev = X.device
    if kind == "radix4":
        if not X.is_floating_point():
            X = X.to(torch.float64)
        base = x_scale * (0.5 if phase else 1.0)
        mag = X.abs().to(torch.float64)
        nz = mag > 0
        e = torch.where(nz, 7 + torch.round(torch.log2(torch.where(nz, mag, 1.0) / base) / 2),
                        torch.zeros_like(mag))
        grid = base * torch.pow(4.0, e - 7)
        bad = nz & ((e < 1) | (e > 7) | ((mag - grid).abs() > 1e-6 * grid)) | ~torch.isfinite(mag)
        if bool(bad.any()):
            v = X[bad][0].item()
            raise ValueError(f"X contains {v!r}, not on the radix-4 grid: allowed 0 and "
                             f"+-{base:g}*4^-k, k=0..6 (x_scale={x_scale:g}, phase={phase})")
        lev = torch.arange(1, 8, device=dev, dtype=torch.float64)   # exponent field e = 1..7
        sgn = torch.sign(X).to(torch.float64)
        hit = e.unsqueeze(0) == lev.view(-1, 1, 1)                  # (7, B, N)
        pos = (hit & (sgn > 0)).to(torch.float32)
        neg = (hit & (sgn < 0)).to(torch.float32)
        w = base * torch.pow(4.0, lev - 7)
        return torch.cat([pos, neg]), torch.cat([w, -w])
    if x_scale != 1.0:
        raise ValueError(f"x_scale={x_scale!r} is not allowed for x_kind={kind!r}: allowed 1.0 "
                         "(x_scale only places the radix-4 grid)")
    if kind == "signed":
        m = 2 ** (x_bits - 1) - 1
        _check_ints("X", X, -m, m, f"x_kind='signed', x_bits={x_bits}")
        xi = X.to(torch.int32)
        t = torch.arange(x_bits - 1, device=dev, dtype=torch.int32)
        pos = (xi.clamp(min=0).unsqueeze(0) >> t.view(-1, 1, 1)) & 1
        neg = ((-xi).clamp(min=0).unsqueeze(0) >> t.view(-1, 1, 1)) & 1
        w = 2.0 ** t.to(torch.float64)
        return torch.cat([pos, neg]).to(torch.float32), torch.cat([w, -w])
    _check_ints("X", X, 0, 2**x_bits - 1, f"x_kind={kind!r}, x_bits={x_bits}")
    L = levels if kind == "multilevel" else 2
    ndig = max(1, math.ceil(x_bits / math.log2(L) - 1e-9))
    t = torch.arange(ndig, device=dev, dtype=torch.int32)
    xi = X.to(torch.int32).unsqueeze(0)
    if L & (L - 1) == 0:                                            # power of two: shifts
        digits = (xi >> (t * int(math.log2(L))).view(-1, 1, 1)) & (L - 1)
    else:
        digits = (xi // (L ** t).view(-1, 1, 1)) % L
    return digits.to(torch.float32), float(L) ** t.to(torch.float64)


# --------------------------------------------------------------------------- the chip

@functools.lru_cache(maxsize=8)
def _chip_z(seed, rows, cols, n_row_tiles, n_col_tiles, device):
    """Unit-normal mismatch z for tiles (t, c), each from its own generator seeded by
    (seed, t, c): a tile's pattern does not depend on how many tiles a call uses."""
    z = torch.empty(n_row_tiles * rows, n_col_tiles * cols)
    for t in range(n_row_tiles):
        for c in range(n_col_tiles):
            g = torch.Generator().manual_seed((seed * 1_000_003 + t * 7919 + c * 104_729) % 2**63)
            z[t * rows:(t + 1) * rows, c * cols:(c + 1) * cols] = torch.randn(rows, cols, generator=g)
    zsum = z.view(n_row_tiles, rows, -1).sum(1)                    # (T, Ct*cols): sum over ALL rows
    return z.to(device), zsum.to(device)


def _prepare(A, X, cfg, a_bits, a_signed, x_kind, x_bits, x_scale, phase):
    if not isinstance(cfg, IMCConfig):
        raise ValueError(f"cfg={type(cfg).__name__} is not allowed: pass an imc.IMCConfig")
    check_range("a_bits", a_bits, 1, 16, integer=True)
    check_choice("a_signed", a_signed, [True, False])
    check_choice("x_kind", x_kind, X_KINDS)
    check_range("x_bits", x_bits, 2 if x_kind == "signed" else 1, 16, integer=True)
    check_range("x_scale", x_scale, 0, None, lo_open=True)
    check_choice("phase", phase, [0, 1])
    A, X = _as_tensor("A", A), _as_tensor("X", X)
    if X.shape[1] != A.shape[0]:
        raise ValueError(f"X.shape={tuple(X.shape)} does not match A.shape={tuple(A.shape)}: "
                         f"X must be (B, {A.shape[0]})")
    if A.device != X.device:
        raise ValueError(f"A.device={A.device} differs from X.device={X.device}: use one device")
    bits, wa = _stored_planes(A, a_bits, a_signed)
    digits, wx = _input_planes(X, x_kind, x_bits, cfg.input_levels, x_scale, phase)
    used = digits.flatten(1).any(1)                 # planes empty for the whole batch never run
    if not bool(used.all()):
        digits, wx = digits[used], wx[used]
    L = cfg.input_levels if x_kind == "multilevel" else 2
    return A, X, bits, wa, digits, wx, L


def _tiles(n, rows):
    return [(s, min(s + rows, n)) for s in range(0, n, rows)]


def mvm(A, X, cfg: IMCConfig, *, report: bool = False, a_bits: int = 4, a_signed: bool = True,
        x_kind: str = "unsigned", x_bits: int = 4, x_scale: float = 1.0, phase: int = 0,
        adc_range: float | None = None, generator: torch.Generator | None = None,
        count_write: bool = True):
    """``X @ A`` on simulated charge-domain IMC arrays (BPBS, row-tiled, noisy, quantized).

    Args:
        A: (N, M) stored integers, ``a_bits`` wide; two's complement planes if ``a_signed``
            (MSB weight ``-2^(a_bits-1)``), plain binary planes otherwise. Float or int dtype.
        X: (B, N) inputs. ``x_kind`` says how they become planes, one applied per cycle:
            ``"unsigned"`` ints 0..2^x_bits-1, binary planes of weight 2^t;
            ``"signed"`` ints with ``|x| <= 2^(x_bits-1)-1``, positive and negative parts applied
            separately; ``"radix4"`` float values 0 or ``+-x_scale*4^(e-7)`` (``*1/2`` for
            ``phase=1``), e = 1..7: one binary plane per (sign, exponent); ``"multilevel"`` ints
            0..2^x_bits-1 as base-L digits, L = ``cfg.input_levels`` [LEE21]. A plane that is
            empty for a batch row within a row tile costs no cycle and no conversion.
        cfg: the array (:class:`IMCConfig`).
        report: also return the :class:`~imckit.work.Work` of this call.
        adc_range: overrides ``cfg.adc_range`` (fraction of the column swing, (0, 1]).
        generator: ``torch.Generator`` (on X's device) for the fresh thermal and ADC noise. None:
            one seeded from ``cfg.seed``, so repeating a call repeats its noise; pass a generator
            to draw fresh noise per call (training does). Mismatch always comes from ``cfg.seed``.
        count_write: report ``N * M * a_bits`` bits written for loading A (False when A is
            already resident in the arrays).

    Returns:
        (B, M) float tensor (X's float dtype, else float32), and the Work if ``report``.

    Different layers live on different arrays: give them different ``cfg.seed`` values.

    >>> A = torch.tensor([[3], [-1]]); X = torch.tensor([[0.25, -1.0]])
    >>> mvm(A, X, IMCConfig.ideal(), x_kind="radix4").tolist()
    [[1.75]]
    >>> y, w = mvm(A, torch.tensor([[5, 0]]), IMCConfig.ideal(), report=True)
    >>> y.tolist(), w.cycles, w.conversions        # 5 = planes 1 and 4: two cycles x 4 columns
    ([[15.0]], 2, 8)
    """
    A, X, bits, wa, digits, wx, L = _prepare(A, X, cfg, a_bits, a_signed, x_kind, x_bits,
                                             x_scale, phase)
    r = cfg.adc_range if adc_range is None else adc_range
    check_range("adc_range", r, 0, 1, lo_open=True)
    B, N = X.shape
    M = A.shape[1]
    out_dtype = X.dtype if X.is_floating_point() else torch.float32
    work = Work(macs=B * N * M, write_bits=N * M * a_bits if count_write else 0)
    if B == 0 or M == 0 or N == 0 or digits.shape[0] == 0:
        y = torch.zeros(B, M, dtype=out_dtype, device=X.device)
        return (y, work) if report else y
    dev, R, P, Mb = X.device, cfg.rows, digits.shape[0], bits.shape[1]
    tiles = _tiles(N, R)
    noisy = cfg.thermal_noise or (cfg.adc_noise_lsb > 0 and cfg.adc_bits is not None)
    if cfg.cap_mismatch > 0:
        Ct = -(-Mb // cfg.columns)
        z, zsum = _chip_z(cfg.seed, R, cfg.columns, len(tiles), Ct, dev)
        W = bits * (1.0 + cfg.cap_mismatch * z[:N, :Mb])          # mismatch folded into the bits
        den = R + cfg.cap_mismatch * zsum[:, :Mb]                  # (T, Mb): all R caps share
    else:
        W, den = bits, None
    # column values (in units of one unit-cap charge), one matmul per row tile
    drives = int(digits.sum() if L == 2 else (digits > 0).sum())
    nums, masks, cycles = [], [], 0
    for t, (s, e) in enumerate(tiles):
        d = digits[:, :, s:e]
        act = d.amax(-1) > 0                                       # (P, B) cycles that run
        cycles += int(act.sum())
        masks.append(act.reshape(-1, 1))
        num = d.reshape(P * B, e - s) @ W[s:e]
        nums.append(num if den is None else num * (R / den[t]))    # count scale, ratio to ideal
    work = work + Work(conversions=cycles * Mb, cycles=cycles, row_drives=drives)
    if cfg.adc_calibration == "percentile" and adc_range is None:
        vals = torch.cat([n[m.view(-1)] for n, m in zip(nums, masks)])
        r = calibrate_adc_range(vals, R, percentile=cfg.adc_percentile, levels=L)
    fs = R * (L - 1)                                               # full-scale count
    if cfg.adc_bits is None:
        gain, step, sig = 1.0, 1.0, cfg.sigma_thermal * fs         # no quantizer: counts direct
    else:
        q = 2**cfg.adc_bits - 1
        gain, step = q / (r * fs), r * fs / q                      # count -> code -> count
        sig = math.hypot(cfg.sigma_thermal * fs * gain, cfg.adc_noise_lsb)
    if generator is None and noisy:
        generator = torch.Generator(device=dev).manual_seed(cfg.seed + 0x5EED)
    acc = None
    for num, mask in zip(nums, masks):
        v = num.mul_(gain) if gain != 1.0 else num
        if noisy:
            v.add_(torch.randn(v.shape, generator=generator, device=dev).mul_(sig)).mul_(mask)  # idle: no cycle
        if cfg.adc_bits is not None:
            v.round_().clamp_(0, q)
        if cfg.round_counts:
            v = v.mul_(step).round_()
        acc = v if acc is None else acc.add_(v)
    scale = 1.0 if (cfg.round_counts or cfg.adc_bits is None) else step
    y = acc.view(P, B, M, a_bits).to(torch.float64) @ (wa * scale)         # (P, B, M)
    y = torch.tensordot(wx.to(dev), y, dims=1).to(out_dtype)
    return (y, work) if report else y


def column_counts(A, X, cfg: IMCConfig, *, a_bits: int = 4, a_signed: bool = True,
                  x_kind: str = "unsigned", x_bits: int = 4, x_scale: float = 1.0,
                  phase: int = 0, **_ignored) -> torch.Tensor:
    """Ideal column counts of every conversion :func:`mvm` would run (1-D float tensor).

    One entry per (row tile, active input plane, batch row, physical column), in counts
    ``0..rows*(L-1)``: what the ADCs must digitize. Feed to :func:`calibrate_adc_range` or a
    histogram. Accepts (and ignores) mvm's other keywords, so one kwargs dict serves both.

    >>> A = torch.tensor([[1], [1], [0]]); X = torch.tensor([[1, 1, 1], [0, 0, 0]])
    >>> column_counts(A, X, IMCConfig.ideal(rows=2), a_bits=2, a_signed=False).tolist()
    [2.0, 0.0, 0.0, 0.0]
    """
    A, X, bits, _, digits, _, _ = _prepare(A, X, cfg, a_bits, a_signed, x_kind, x_bits,
                                           x_scale, phase)
    out = [torch.zeros(0, device=X.device)]
    P, B = digits.shape[:2]
    for s, e in _tiles(X.shape[1], cfg.rows):
        d = digits[:, :, s:e]
        act = (d.amax(-1) > 0).reshape(-1)
        out.append((d.reshape(P * B, e - s)[act] @ bits[s:e]).reshape(-1))
    return torch.cat(out)


def calibrate_adc_range(counts, rows: int, *, percentile: float = 99.9, levels: int = 2) -> float:
    """Smallest power-of-two ADC range covering ``percentile`` % of column counts.

    Returns r in (0, 1] as a fraction of the full swing ``rows * (levels - 1)``: a programmable
    reference set by a shift, as SPEC §2.1 assumes [I]. Never below one count.

    >>> calibrate_adc_range(torch.tensor([10.0, 100.0, 280.0]), 1152, percentile=100)
    0.25
    """
    check_range("rows", rows, 1, None, integer=True)
    check_range("percentile", percentile, 0, 100, lo_open=True)
    check_range("levels", levels, 2, 256, integer=True)
    c = torch.as_tensor(counts).reshape(-1).to(torch.float32)
    fs = rows * (levels - 1)
    if c.numel() == 0:
        return 1.0
    k = max(1, min(c.numel(), math.ceil(percentile / 100 * c.numel() - 1e-9)))
    top = max(float(c.kthvalue(k).values), 1.0)
    return min(1.0, 2.0 ** math.ceil(math.log2(top / fs) - 1e-12))


@dataclass(frozen=True)
class SQNRSplit:
    """Error of an IMC MVM vs the exact product, one effect at a time (powers are mean squares
    over outputs; SQNR in dB = 10 log10(signal / error), inf when the error is zero)."""

    signal_power: float
    error_power: dict
    """Mean squared error for ``"adc"`` (quantization, clipping and ADC noise as configured),
    ``"mismatch"``, ``"thermal"`` (each alone: the others off and the ADC ideal) and ``"all"``
    (cfg as is)."""

    @property
    def sqnr_db(self) -> dict:
        s = self.signal_power
        return {k: (math.inf if e == 0 else 10 * math.log10(s / e) if s > 0 else -math.inf)
                for k, e in self.error_power.items()}

    def __str__(self):
        return "  ".join(f"{k} {v:.1f} dB" for k, v in self.sqnr_db.items())


def sqnr_split(A, X, cfg: IMCConfig, *, generator: torch.Generator | None = None,
               **kwargs) -> SQNRSplit:
    """Split the error of :func:`mvm` vs the exact product ``X @ A`` into its causes.

    Each effect is simulated alone (others off, ADC unquantized unless the effect is the ADC):
    ``adc`` = quantization, clipping and ADC noise with ``cfg``'s bits and range; ``mismatch``;
    ``thermal`` (kT/C); ``all`` = ``cfg`` unchanged. kwargs go to :func:`mvm`.

    >>> A = torch.randint(-8, 8, (256, 16), generator=torch.Generator().manual_seed(0))
    >>> X = torch.randint(0, 16, (8, 256), generator=torch.Generator().manual_seed(1))
    >>> s = sqnr_split(A, X, IMCConfig.jia22_16nm())
    >>> s.sqnr_db["thermal"] > s.sqnr_db["adc"] + 20          # analog noise far below the ADC's
    True
    """
    A, X = _as_tensor("A", A), _as_tensor("X", X)
    ref = X.to(torch.float64) @ A.to(torch.float64)
    off = dict(cap_mismatch=0.0, thermal_noise=False)
    runs = {"adc": dataclasses.replace(cfg, **off),
            "mismatch": dataclasses.replace(cfg, **{**off, "cap_mismatch": cfg.cap_mismatch},
                                            adc_bits=None, round_counts=False),
            "thermal": dataclasses.replace(cfg, **{**off, "thermal_noise": cfg.thermal_noise},
                                           adc_bits=None, round_counts=False),
            "all": cfg}
    err = {}
    for name, c in runs.items():
        y = mvm(A, X, c, generator=generator, **kwargs)
        err[name] = float(((y.to(torch.float64) - ref) ** 2).mean()) if ref.numel() else 0.0
    return SQNRSplit(signal_power=float((ref**2).mean()) if ref.numel() else 0.0, error_power=err)
