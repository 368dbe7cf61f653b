"""Camera conventions: projection to pixels, look-at, orbit and intrinsics."""

import math

import pytest
import torch

from wsim.errors import ParameterError
from wsim.render import Camera, SoftRenderer, look_at_matrix, spherical_eye


def test_known_point_projects_to_expected_pixel():
    # fov 90 deg: focal length = H / 2 pixels. Camera at z = 5 looking at the origin.
    cam = Camera.look_at((0.0, 0.0, 5.0), fov_y=90.0)
    pts = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.5, 1.0]])
    uv = cam.project_to_pixels(pts, (64, 64))[0]
    # u = cx + f x / w, v = cy - f y / w with f = 32, (cx, cy) = (32, 32)
    assert uv[0].tolist() == pytest.approx([32 + 32 * 1 / 5, 32 - 32 * 1 / 5], abs=1e-4)
    assert uv[1].tolist() == pytest.approx([32.0, 32.0], abs=1e-4)
    assert uv[2].tolist() == pytest.approx([32 - 32 * 2 / 4, 32 - 32 * 0.5 / 4], abs=1e-4)


def test_small_square_lights_the_expected_pixel():
    """A tiny square around the world point (1, 1, 0) must light pixel (row 25, column 38): its
    continuous coordinates are (u, v) = (38.4, 25.6) and pixel (i, j) covers [j, j+1) x [i, i+1)."""
    cam = Camera.look_at((0.0, 0.0, 5.0), fov_y=90.0)
    h = 0.02
    verts = torch.tensor([[1 - h, 1 - h, 0.0], [1 + h, 1 - h, 0.0], [1 + h, 1 + h, 0.0], [1 - h, 1 + h, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    img = SoftRenderer(cam, image_size=(64, 64), sigma=1e-4, background=(0, 0, 0))(verts, faces)
    alpha = img[0, ..., 3]
    flat = int(alpha.argmax())
    assert divmod(flat, 64) == (25, 38)
    assert float(alpha[25, 38]) > 0.5


def test_look_at_matrix_conventions():
    eye = torch.tensor([[3.0, 2.0, 1.0]])
    target = torch.tensor([[0.0, 0.5, -1.0]])
    view = look_at_matrix(eye, target, torch.tensor([[0.0, 1.0, 0.0]]))[0]
    # the eye maps to the origin, the target onto the -Z axis, the world up to +Y (up in the image)
    to_view = lambda p: view[:3, :3] @ p + view[:3, 3]  # noqa: E731
    assert torch.allclose(to_view(eye[0]), torch.zeros(3), atol=1e-5)
    tv = to_view(target[0])
    assert tv[2] < 0 and torch.allclose(tv[:2], torch.zeros(2), atol=1e-5)
    assert (view[:3, :3] @ torch.tensor([0.0, 1.0, 0.0]))[1] > 0
    assert torch.allclose(view[:3, :3] @ view[:3, :3].T, torch.eye(3), atol=1e-5)


def test_orbit_places_camera_by_distance_elevation_azimuth():
    eye = spherical_eye(2.0, 30.0, 90.0)[0]
    el = math.radians(30.0)
    assert eye.tolist() == pytest.approx([2 * math.cos(el), 2 * math.sin(el), 0.0], abs=1e-5)
    cam = Camera.orbit(4.0, elevation=0.0, azimuth=0.0, target=(0.0, 1.0, 0.0))
    assert cam.position()[0].tolist() == pytest.approx([0.0, 1.0, 4.0], abs=1e-5)
    # batched over frames: one camera per azimuth
    cams = Camera.orbit(4.0, elevation=10.0, azimuth=torch.tensor([0.0, 90.0, 180.0]))
    assert cams.view.shape == (3, 4, 4)
    assert cams.position()[2, 2] < 0


def test_intrinsics_match_field_of_view():
    fov = 50.0
    H, W = 48, 64
    f = (H / 2) / math.tan(math.radians(fov) / 2)
    a = Camera.look_at((1.0, 2.0, 4.0), fov_y=fov)
    b = Camera.look_at((1.0, 2.0, 4.0), intrinsics=(f, f, W / 2, H / 2), image_size=(H, W))
    pts = torch.randn(20, 3) * 0.5
    assert torch.allclose(a.project_to_pixels(pts, (H, W)), b.project_to_pixels(pts, (H, W)), atol=1e-3)
    # an off-centre principal point shifts the image
    c = Camera.look_at((1.0, 2.0, 4.0), intrinsics=(f, f, W / 2 + 3, H / 2 - 2), image_size=(H, W))
    d = c.project_to_pixels(pts, (H, W)) - b.project_to_pixels(pts, (H, W))
    assert torch.allclose(d, torch.tensor([3.0, -2.0]).expand_as(d), atol=1e-3)


def test_camera_rejects_bad_parameters():
    with pytest.raises(ParameterError, match="coincide"):
        Camera.look_at((0.0, 0.0, 0.0), target=(0.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match="near"):
        Camera.look_at((0.0, 0.0, 5.0), near=-1.0)
    with pytest.raises(ParameterError, match="fov"):
        Camera.look_at((0.0, 0.0, 5.0), fov_y=190.0)


def test_camera_eye_receives_gradients():
    eye = torch.tensor([0.3, 0.2, 5.0], requires_grad=True)
    cam = Camera.look_at(eye, fov_y=45.0)
    uv = cam.project_to_pixels(torch.tensor([[0.5, 0.0, 0.0]]), (32, 32))
    uv.sum().backward()
    assert eye.grad is not None and torch.isfinite(eye.grad).all() and eye.grad.abs().sum() > 0
