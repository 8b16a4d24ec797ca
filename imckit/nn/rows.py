"""Conv rows the fast mode need not build: the im2col of an image, kept as the image.

A conv MVM's inputs are the rows of ``im2col(image)`` (``B*H_out*W_out`` rows of
``C*kh*kw``). The bit-true simulator needs every row; the fast mode (:func:`imckit.imc.mvm_fast`)
needs only two things of them, and both are convolutions of the image:

* the nonzero digits of each input plane in each row (one row tile): the digits per position
  summed over channels, then summed over each window (a box filter with the conv's geometry);
* the linear part ``rows @ A``: ``conv2d(image, A as a kernel)``.

:class:`ConvRows` gives both without the im2col (9x the image's bytes for a 3x3 kernel), and
the rows themselves (:meth:`ConvRows.materialize`) where something needs them: ADC calibration,
error recording, several row tiles, or digits it does not count (anything but unsigned binary
planes and two-cycle radix-4 inputs with a power-of-two scale). It is passed only by imckit's own
layers, inside :func:`~imckit.imc.planes.trusted_operands` (the image holds the quantizer's
levels, unchecked).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._device import exact_kernels
from ..imc.planes import InputPlanes, _radix4_counts, radix4_group
from ..mapping.arrays import tile_rows


class ConvRows:
    """``im2col(image, kernel, dilation, padding, stride)`` (see :func:`imckit.nn.layers.im2col`)
    as a lazy operand of :func:`imckit.imc.mvm_fast`.

    >>> from imckit.nn.layers import im2col
    >>> img = torch.arange(32.).view(1, 2, 4, 4)
    >>> r = ConvRows(img, (3, 3), (1, 1), (1, 1), (1, 1))
    >>> torch.equal(r.materialize(), im2col(img, (3, 3), (1, 1), (1, 1), (1, 1))), r.shape
    (True, (16, 18))
    """

    def __init__(self, image: torch.Tensor, kernel, dilation, padding, stride):
        self.image = image
        self.geometry = (tuple(kernel), tuple(dilation), tuple(padding), tuple(stride))
        (kh, kw), (dh, dw), (ph, pw), (sh, sw) = self.geometry
        B, C, H, W = image.shape
        self.out_hw = ((H + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                       (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
        self.shape = (B * self.out_hw[0] * self.out_hw[1], C * kh * kw)
        self.dtype, self.device = image.dtype, image.device
        self._rows = None

    def is_floating_point(self) -> bool:
        return self.image.is_floating_point()

    def materialize(self) -> torch.Tensor:
        """The rows themselves (made once)."""
        if self._rows is None:
            from .layers import im2col
            self._rows = im2col(self.image, *self.geometry)
        return self._rows

    def product(self, A: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``rows @ A`` (rows x A.shape[1]) in ``dtype``, as one convolution."""
        (kh, kw), dil, pad, stride = self.geometry
        C = self.image.shape[1]
        k = A.to(dtype).t().reshape(A.shape[1], C, kh, kw)
        with exact_kernels():                             # TF32 and cuDNN off (as imc.mvm)
            out = F.conv2d(self.image.to(dtype), k, None, stride, pad, dil)
        return out.permute(0, 2, 3, 1).reshape(-1, A.shape[1])

    def planes(self, x_kind: str, x_bits: int, levels: int, x_scale: float, phase: int,
               rows: int, row_group: int, sign_mode: str) -> InputPlanes | None:
        """The :class:`~imckit.imc.planes.InputPlanes` of the rows with ``counts`` and without
        digits or codes (what the fast mode reads), or None where :meth:`materialize` must do.
        """
        if self.shape[1] > tile_rows(rows, row_group) or self.shape[0] == 0:
            return None                                            # several row tiles
        img = self.image
        B, C, H, W = img.shape
        if x_kind == "unsigned":                          # binary planes: bit p summed over C
            xi = img if not img.is_floating_point() else img.to(torch.int32)
            per_pos = torch.stack([((xi >> p) & 1).sum(1, dtype=torch.int32)
                                   for p in range(x_bits)], 1)     # (B, P, H, W)
            w = 2.0 ** torch.arange(x_bits, dtype=torch.float64, device=img.device)
        elif (x_kind == "radix4" and sign_mode == "two-cycle" and radix4_group(levels) == 1
              and img.is_floating_point()):
            hit = _radix4_counts(img.permute(0, 2, 3, 1).reshape(-1, C), x_scale, phase,
                                 [(0, C)])
            if hit is None:
                return None
            w = hit.weights
            per_pos = hit.counts[0].view(-1, B, H, W).permute(1, 0, 2, 3)   # (B, P, H, W)
        else:
            return None
        P = per_pos.shape[1]
        (kh, kw), dil, pad, stride = self.geometry
        ones = torch.ones(P, 1, kh, kw, device=img.device)
        with exact_kernels():                            # counts <= C*kh*kw: exact in float32
            box = F.conv2d(per_pos.to(torch.float32), ones, None, stride, pad, dil, groups=P)
        cnt = box.round().to(torch.int64).permute(1, 0, 2, 3).reshape(P, -1)   # (P, V)
        used = cnt.any(1)
        if not bool(used.all()):
            cnt, w = cnt[used], w[used]
        act = cnt > 0
        return InputPlanes(None, w, [act], int(cnt.sum()), False, None, cnt.unsqueeze(0))


def is_rows(X) -> bool:
    """Whether ``X`` is a lazy rows operand (:class:`ConvRows`) rather than a tensor."""
    return isinstance(X, ConvRows)


__all__ = ["ConvRows", "is_rows"]
