"""Layer shapes of two CIFAR-10 networks, for energy estimates without building the model.

* :func:`jia22_cnn`: an 11-layer CNN in the style of the one JIA22 ran on its 16 nm chip
  (4-b weights and activations, 91.51 % on CIFAR-10 [S]). The paper's exact layer list is not
  available to us: this VGG-like list of 3x3 convolutions with 128/256 channels (so that
  ``C_in*3*3`` fills the 1152-row array, 1152 = 3x3x128) is our assumption [I].
* :func:`resnet20`: ResNet-20 for CIFAR-10 (He et al. 2016, option-A shortcuts: no 1x1 convs).
"""
from __future__ import annotations

from .counts import LayerShape


def _conv(c_in: int, c_out: int, hw: int, name: str, k: int = 3, stride: int = 1) -> LayerShape:
    """A k x k conv with 'same' padding on an hw x hw output (input ``hw * stride``); the first
    layer of a network (named ``conv1``) needs no input gradient."""
    return LayerShape(c_in * k * k, c_out, hw * hw, k * k, name, (hw * stride) ** 2,
                      input_grad=name != "conv1")


def jia22_cnn() -> list[LayerShape]:
    """8 conv + 3 fc layers, 32x32 inputs, pooling after conv 2, 4 and 6 [I].

    >>> len(jia22_cnn()), jia22_cnn()[1].n
    (11, 1152)
    """
    return [
        _conv(3, 128, 32, "conv1"), _conv(128, 128, 32, "conv2"),
        _conv(128, 256, 16, "conv3"), _conv(256, 256, 16, "conv4"),
        _conv(256, 256, 8, "conv5"), _conv(256, 256, 8, "conv6"),
        _conv(256, 256, 4, "conv7"), _conv(256, 256, 4, "conv8"),
        LayerShape(256 * 4 * 4, 1024, name="fc9"), LayerShape(1024, 1024, name="fc10"),
        LayerShape(1024, 10, name="fc11"),
    ]


def resnet20() -> list[LayerShape]:
    """19 convs + 1 fc (16/32/64 channels at 32/16/8 px).

    >>> len(resnet20()), sum(l.n * l.m * l.positions for l in resnet20()) // 10**6  # MMACs
    (20, 40)
    """
    layers = [_conv(3, 16, 32, "conv1")]
    c_in = 16
    for stage, (c, hw) in enumerate(((16, 32), (32, 16), (64, 8)), start=1):
        for block in range(3):
            stride = 2 if (block == 0 and stage > 1) else 1   # each stage's first conv halves
            layers.append(_conv(c_in, c, hw, f"s{stage}b{block}a", stride=stride))
            layers.append(_conv(c, c, hw, f"s{stage}b{block}b"))
            c_in = c
    layers.append(LayerShape(64, 10, name="fc"))
    return layers


NETWORKS = {"jia22-cnn": jia22_cnn, "resnet20": resnet20}
