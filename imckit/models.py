"""The networks the book trains: plain ``torch.nn`` modules, built reproducibly from a seed.

Every constructor takes ``seed`` and draws its initial weights inside
:func:`torch.random.fork_rng`, so building a model neither depends on nor disturbs the global
random state. :func:`imckit.nn.convert` later swaps their ``Linear``/``Conv2d`` layers for the
IMC versions; nothing here knows about IMC.

- :func:`mlp`: flatten + fully connected layers (digits, MNIST-5k).
- :func:`small_cnn`: two or three 3x3 convolutions with max pooling (digits, MNIST-5k).
- :func:`resnet20`: the CIFAR ResNet-20 of He et al. (2016), option-A (parameter-free)
  shortcuts, for GPU users.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_range

__all__ = ["mlp", "small_cnn", "resnet20"]


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    check_range("seed", seed, 0, None, integer=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def mlp(in_features: int, hidden: Sequence[int] = (64,), n_classes: int = 10, *,
        seed: int = 0) -> nn.Sequential:
    """Fully connected ReLU network ``in_features -> hidden... -> n_classes``.

    Starts with ``nn.Flatten`` so image-shaped inputs work unchanged.

    Args:
        in_features: inputs per example (64 for digits, 784 for MNIST).
        hidden: widths of the hidden layers (empty for a linear classifier).
        n_classes: outputs (logits).
        seed: seed of the initial weights.

    >>> m = mlp(64, (32,), 10)
    >>> m(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 10])
    >>> torch.equal(mlp(64, seed=3)[1].weight, mlp(64, seed=3)[1].weight)
    True
    """
    check_range("in_features", in_features, 1, None, integer=True)
    check_range("n_classes", n_classes, 2, None, integer=True)
    for i, h in enumerate(hidden):
        check_range(f"hidden[{i}]", h, 1, None, integer=True)

    def build():
        widths = [in_features, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], n_classes))
        return nn.Sequential(*layers)
    return _seeded(seed, build)


def small_cnn(in_channels: int = 1, n_classes: int = 10, image_size: int = 8,
              channels: Sequence[int] = (16, 32), *, seed: int = 0) -> nn.Sequential:
    """A small VGG-style CNN: per entry of ``channels`` a 3x3 conv, ReLU and 2x2 max pool.

    Args:
        in_channels: input channels (1 for digits/MNIST, 3 for CIFAR).
        n_classes: outputs (logits).
        image_size: input height = width in pixels; must survive ``len(channels)`` halvings.
        channels: output channels of each conv stage.
        seed: seed of the initial weights.

    >>> m = small_cnn(1, 10, image_size=8)
    >>> m(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    check_range("in_channels", in_channels, 1, None, integer=True)
    check_range("n_classes", n_classes, 2, None, integer=True)
    check_range("image_size", image_size, 2 ** len(channels), None, integer=True)
    for i, c in enumerate(channels):
        check_range(f"channels[{i}]", c, 1, None, integer=True)

    def build():
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, size = c, size // 2
        layers += [nn.Flatten(), nn.Linear(c_in * size * size, n_classes)]
        return nn.Sequential(*layers)
    return _seeded(seed, build)


class _BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an option-A shortcut (subsample, zero-pad channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class ResNetCifar(nn.Module):
    """CIFAR ResNet (He et al., 2016, section 4.2): 6n+2 layers, widths 16/32/64."""

    def __init__(self, n: int = 3, n_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for stage, c in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(c_in, c, 2 if (stage > 0 and i == 0) else 1))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, n_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet20(n_classes: int = 10, in_channels: int = 3, *, seed: int = 0) -> ResNetCifar:
    """ResNet-20 for 32x32 images (19 conv layers + 1 linear, ~0.27 M parameters).

    >>> m = resnet20()
    >>> sum(p.numel() for p in m.parameters())
    269722
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    check_range("n_classes", n_classes, 2, None, integer=True)
    check_range("in_channels", in_channels, 1, None, integer=True)
    return _seeded(seed, lambda: ResNetCifar(3, n_classes, in_channels))
