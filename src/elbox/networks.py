"""Plain neural networks for encoders and decoders: MLPs, and convolutional nets for images."""

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "ConvDecoder", "ConvEncoder", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


def mlp(sizes: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``, linear at the output.

    >>> mlp([4, 8, 2])
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): Tanh()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _halved(size: int, times: int) -> int:
    """The side of a feature map after ``times`` 3x3 convolutions of stride 2, padding 1: ceil(n / 2) each."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


class ConvEncoder(nn.Module):
    """Flattened one-channel images ``[..., H W]`` to features ``[..., F]``: strided convolutions.

    Each layer is a 3x3 convolution of stride 2 and padding 1 (halving each side, rounding
    up) followed by the activation, with ``channels[i]`` output channels; the last feature
    map, ``channels[-1] x h x w``, is flattened to F = ``out_features``. Any H x W works (28 x
    28: 14, then 7; 8 x 8: 4, then 2). Leading dimensions are kept.

    >>> import torch
    >>> enc = ConvEncoder((8, 8), channels=(4, 8))
    >>> enc.out_features, enc(torch.zeros(5, 64)).shape
    (32, torch.Size([5, 32]))
    """

    def __init__(
        self, image_shape: Sequence[int], channels: Sequence[int] = (32, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise([1, *channels]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), ACTIVATIONS[activation]()]
        self.layers = nn.Sequential(*layers)
        h, w = (_halved(s, len(channels)) for s in self.image_shape)
        self.out_features = channels[-1] * h * w

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        images = x.reshape(-1, 1, *self.image_shape)  # [N, 1, H, W]
        return self.layers(images).reshape(*lead, self.out_features)


class ConvDecoder(nn.Module):
    """Latents ``[..., D]`` to ``[..., m H W]``: an MLP to a small feature map, then transposed convolutions.

    ``sizes`` ``[D, *hidden]`` is the MLP (with the activation after it) to the feature map
    ``channels[-1] x h x w`` of ``ConvEncoder``'s last layer; 4x4 transposed convolutions of
    stride 2 then double each side through ``reversed(channels)`` to ``outputs`` channels (no
    activation after the last), and the map is cropped to exactly H x W. The output is
    flattened channel-major, ``[..., m, H, W] -> [..., m H W]``: parameter j of pixel i at
    j H W + i, the order the likelihoods read (``likelihoods._split``). Leading dimensions,
    particles ``[K, B, D]`` included, are kept.

    >>> import torch
    >>> dec = ConvDecoder([2, 16], (8, 8), channels=(4, 8), outputs=2)
    >>> dec(torch.zeros(3, 5, 2)).shape
    torch.Size([3, 5, 128])
    """

    def __init__(
        self, sizes: Sequence[int], image_shape: Sequence[int], channels: Sequence[int] = (32, 64),
        outputs: int = 1, activation: str = "tanh",
    ) -> None:  # fmt: skip
        super().__init__()
        self.image_shape, self.outputs = tuple(image_shape), outputs
        self.start = (channels[-1], *(_halved(s, len(channels)) for s in self.image_shape))
        self.dense = nn.Sequential(mlp([*sizes, self.start[0] * self.start[1] * self.start[2]], activation),
                                   ACTIVATIONS[activation]())  # fmt: skip
        layers: list[nn.Module] = []
        widths = [*reversed(channels), outputs]
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        maps = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)  # [N, C, h, w]
        h, w = self.image_shape
        out = self.layers(maps)[..., :h, :w]  # [N, m, H, W]: the doubled map covers H x W; the rest is cut
        return out.reshape(*lead, self.outputs * h * w)
