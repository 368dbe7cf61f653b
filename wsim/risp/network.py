"""The RISP network (RISP App. B.2): ResNet-18 with instance normalisation without affine parameters
after every convolution, Swish (SiLU) activations, and a linear layer to the state.

ReLU's second derivative is zero almost everywhere, and the rendering-gradient regulariser
differentiates the network's input gradient once more: Swish keeps that second derivative alive.
Instance normalisation without affine parameters removes each image's per-channel mean and scale,
which is much of what a change of light or background does. ``width`` is the first stage's channel
count (64 in ResNet-18; 8-16 train in minutes on a CPU); the stages have width, 2, 4 and 8 times it.
ResNet-18 shrinks an image 32 times (stem stride 2, max pool, three strided stages); on the small
images of CPU runs (32-64 px) that leaves 1-2 pixels, which instance normalisation flattens to
nothing, so for an ``image_size`` under 128 px the max pool goes, and under 64 px the stem's stride
too (8 times smaller: 48 px -> 6 x 6).
No pretrained weights: the network trains from scratch on data wsim renders.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_norm(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.InstanceNorm2d(cout, affine=False)]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_norm(cin, cout, 3, stride), nn.SiLU(), *_conv_norm(cout, cout, 3, 1))
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else nn.Sequential(*_conv_norm(cin, cout, 1, stride)))
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class RispNet(nn.Module):
    """Image ``[B, H, W, 3]`` (RGB in [0, 1], row 0 at the top) -> state ``[B, state_dim]``.

    ``state_mean``/``state_scale`` (buffers, saved with the weights) map the network's normalised
    output back to state units (set by training from its data).
    """

    def __init__(self, state_dim: int, width: int = 64, blocks=(2, 2, 2, 2), image_size=(224, 224)):
        super().__init__()
        if state_dim < 1 or width < 1:
            raise ValueError(f"state_dim and width must be positive, got {state_dim}, {width}")
        self.state_dim, self.width, self.blocks = int(state_dim), int(width), tuple(int(b) for b in blocks)
        self.image_size = [int(n) for n in image_size]
        side = min(self.image_size)
        layers: list[nn.Module] = [*_conv_norm(3, width, 7, 2 if side >= 64 else 1), nn.SiLU()]
        if side >= 128:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        cin = width
        for stage, count in enumerate(self.blocks):
            cout = width * 2 ** stage
            for k in range(count):
                layers.append(BasicBlock(cin, cout, 2 if (k == 0 and stage > 0) else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, state_dim)
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_scale", torch.ones(state_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2) * 2.0 - 1.0
        x = self.features(x).mean(dim=(2, 3))
        return self.head(x) * self.state_scale + self.state_mean

    def spec(self) -> dict:
        """What rebuilds this network (saved with its weights)."""
        return {"state_dim": self.state_dim, "width": self.width, "blocks": list(self.blocks),
                "image_size": self.image_size}


def load_network(path, device="cpu") -> tuple[RispNet, dict]:
    """A trained network from a checkpoint of ``wsim risp train`` (``risp.pt``), in eval mode, and the
    checkpoint's record (environment, image size, training summary)."""
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(checkpoint, dict) or "network" not in checkpoint or "spec" not in checkpoint:
        raise ValueError(f"{path} is not a RISP checkpoint of `wsim risp train` (no network weights)")
    net = RispNet(**checkpoint["spec"]).to(device)
    net.load_state_dict(checkpoint["network"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, checkpoint.get("record", {})
