"""The PyTorch bridge: zero-copy aliasing and gradients of a Warp tape program."""

import numpy as np
import pytest
import torch
import warp as wp

from wsim.bridge import run_tape_program, to_torch, to_warp
from wsim.device import init_warp


@wp.kernel
def _cubic(x: wp.array(dtype=wp.vec3), scale: wp.array(dtype=float), y: wp.array(dtype=wp.vec3)):
    i = wp.tid()
    v = x[i]
    y[i] = wp.vec3(v[0] * v[0] * v[0], v[1] * v[2], wp.sin(v[2])) * scale[0]


class CubicProgram:
    input_dtypes = {"x": wp.vec3, "scale": wp.float32}

    def __init__(self, device):
        self.device = device

    def record(self, inputs):
        out = wp.zeros(inputs["x"].shape[0], dtype=wp.vec3, device=self.device, requires_grad=True)
        wp.launch(_cubic, dim=out.shape[0], inputs=[inputs["x"], inputs["scale"]], outputs=[out], device=self.device)
        return (out,)


def test_to_torch_and_to_warp_alias_memory(device):
    init_warp()
    tensor = torch.zeros(4, 3, device=device)
    array = to_warp(tensor, wp.vec3)
    array.fill_(wp.vec3(1.0, 2.0, 3.0))
    assert torch.equal(tensor[2].cpu(), torch.tensor([1.0, 2.0, 3.0]))
    back = to_torch(array)
    back[0, 0] = 7.0
    assert array.numpy()[0, 0] == 7.0


def test_tape_program_gradients_match_analytic(device):
    init_warp()
    x = torch.tensor([[1.0, 2.0, 3.0], [-0.5, 0.25, 1.0]], device=device, requires_grad=True)
    scale = torch.tensor(2.0, device=device, requires_grad=True)
    (y,) = run_tape_program(CubicProgram(device), {"x": x, "scale": scale})
    weights = torch.tensor([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]], device=device)
    (y * weights).sum().backward()
    xd = x.detach()
    expected = torch.stack([3 * xd[:, 0] ** 2 * weights[:, 0], xd[:, 2] * weights[:, 1],
                            xd[:, 1] * weights[:, 1] + torch.cos(xd[:, 2]) * weights[:, 2]], dim=1) * 2.0
    np.testing.assert_allclose(x.grad.cpu().numpy(), expected.cpu().numpy(), rtol=1e-5)
    plain = torch.stack([xd[:, 0] ** 3, xd[:, 1] * xd[:, 2], torch.sin(xd[:, 2])], dim=1)
    assert float(scale.grad) == pytest.approx(float((plain * weights).sum()), rel=1e-5)


def test_two_forward_passes_keep_separate_tapes(device):
    init_warp()
    program = CubicProgram(device)
    a = torch.ones(1, 3, device=device, requires_grad=True)
    b = torch.full((1, 3), 2.0, device=device, requires_grad=True)
    scale = torch.tensor(1.0, device=device)
    (ya,) = run_tape_program(program, {"x": a, "scale": scale})
    (yb,) = run_tape_program(program, {"x": b, "scale": scale})
    ya.sum().backward()
    yb.sum().backward()
    assert a.grad[0, 0] == 3.0 and b.grad[0, 0] == 12.0
