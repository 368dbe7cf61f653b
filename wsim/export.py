"""Writing rollouts: ``rollout.npz`` and a USD stage (``.usda``), both written atomically.

Atomic writes go to a temporary file in the target folder and are renamed over the target, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600 files; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as strict JSON (RFC 8259: a non-finite number becomes null), atomically."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)
    write_text(path, text + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def strict_json(value):
    """``value`` as plain JSON data: arrays and tensors as lists, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_rollout_npz(path, vertices: np.ndarray, faces: np.ndarray, fps: float, parameters: dict,
                      frame_states: dict | None = None, body_vertex_start=None, body_names=None,
                      colors=None, ground_height: float | None = None) -> None:
    """Write ``vertices`` [F, V, 3] (m), ``faces`` [T, 3], ``times`` [F] (s), the parameters used
    (``param_<name>`` arrays plus a JSON copy in ``parameters_json``), per-frame states and, for a
    scene with a ground, its height (``ground_height``, m)."""
    arrays = {
        "vertices": np.asarray(vertices, dtype=np.float32),
        "faces": np.asarray(faces, dtype=np.int32),
        "times": np.arange(len(vertices), dtype=np.float64) / fps,
        "parameters_json": np.array(json.dumps(strict_json(parameters), allow_nan=False)),
    }
    for name, value in parameters.items():
        arrays[f"param_{name}"] = np.asarray(value)
    for name, value in (frame_states or {}).items():
        arrays[f"state_{name}"] = np.asarray(value)
    if body_vertex_start is not None:
        arrays["body_vertex_start"] = np.asarray(body_vertex_start, dtype=np.int64)
    if body_names is not None:
        arrays["body_names"] = np.asarray(body_names)
    if colors is not None:
        arrays["colors"] = np.asarray(colors, dtype=np.float32)
    if ground_height is not None:
        arrays["ground_height"] = np.asarray(float(ground_height))
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def write_rollout_usd(path, vertices: np.ndarray, faces: np.ndarray, fps: float, body_vertex_start,
                      body_names=(), colors=None,
                      ground_height: float | None = 0.0, body_poses=None) -> None:
    """Write a USD stage (Y up, metres) with one time sample per rendered frame.

    Each rigid body (or link) is a ``Mesh`` under ``/World/<name>`` and the particles (if any) a ``Mesh``
    (when ``faces`` reference them) or ``Points`` prim under ``/World/particles``; their ``points`` are
    time-sampled in world space at time codes 0 .. F-1, played at ``fps`` time codes per second.
    ``body_vertex_start`` [B + 1] delimits each body's vertices in the vertex buffer.

    ``body_poses``: ``(positions [F, B, 3], rotations [F, B, 4])`` (quaternions x, y, z, w) of each body's
    frame. Then each body is an ``Xform`` ``/World/<name>`` whose translate and orient ops are
    time-sampled, over a static ``Mesh`` ``/World/<name>/mesh`` in the body frame: the form DCC tools
    and physics importers expect of rigid motion, and B x 7 numbers a frame instead of a copy of every
    vertex.
    """
    from pxr import Gf, Sdf, Usd, UsdGeom, Vt

    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    frames = len(vertices)
    starts = np.asarray(body_vertex_start, dtype=np.int64)
    with atomic_path(path, suffix=".usda") as temporary:
        stage = Usd.Stage.CreateNew(str(temporary))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        stage.SetStartTimeCode(0)
        stage.SetEndTimeCode(max(frames - 1, 0))
        stage.SetTimeCodesPerSecond(fps)
        stage.SetFramesPerSecond(fps)
        world = UsdGeom.Xform.Define(stage, "/World")
        stage.SetDefaultPrim(world.GetPrim())

        def mesh_prim(prim_path, first, last, owner_faces):
            mesh = UsdGeom.Mesh.Define(stage, prim_path)
            local = owner_faces - first
            mesh.CreateFaceVertexCountsAttr(Vt.IntArray([3] * len(local)))
            mesh.CreateFaceVertexIndicesAttr(Vt.IntArray(local.reshape(-1).tolist()))
            mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
            return mesh

        used = set()
        for index in range(len(starts) - 1):
            first, last = int(starts[index]), int(starts[index + 1])
            name = _prim_name(body_names[index] if index < len(body_names) else f"body{index}", used)
            owner = faces[(faces >= first).all(axis=1) & (faces < last).all(axis=1)]
            if body_poses is None:
                mesh = mesh_prim(f"/World/{name}", first, last, owner)
                points = mesh.CreatePointsAttr()
                for frame in range(frames):
                    points.Set(Vt.Vec3fArray.FromNumpy(vertices[frame, first:last]), Usd.TimeCode(frame))
            else:
                mesh = mesh_prim(f"/World/{name}/mesh", first, last, owner)
                _posed_body(stage, f"/World/{name}", mesh, vertices[0, first:last],
                            np.asarray(body_poses[0])[:, index], np.asarray(body_poses[1])[:, index])
            if colors is not None:
                mesh.CreateDisplayColorAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, colors[first]))]))
        particle_first = int(starts[-1]) if len(starts) else 0
        if vertices.shape[1] > particle_first:
            owner = faces[(faces >= particle_first).all(axis=1)]
            if len(owner):
                prim = mesh_prim("/World/particles", particle_first, vertices.shape[1], owner)
            else:
                prim = UsdGeom.Points.Define(stage, "/World/particles")
                prim.CreateWidthsAttr(Vt.FloatArray([0.04] * (vertices.shape[1] - particle_first)))
            points = prim.CreatePointsAttr()
            for frame in range(frames):
                points.Set(Vt.Vec3fArray.FromNumpy(vertices[frame, particle_first:]), Usd.TimeCode(frame))
        if ground_height is not None:
            ground = UsdGeom.Mesh.Define(stage, "/World/ground")
            h, s = float(ground_height), 20.0
            ground.CreatePointsAttr(Vt.Vec3fArray([Gf.Vec3f(-s, h, -s), Gf.Vec3f(-s, h, s), Gf.Vec3f(s, h, s),
                                                   Gf.Vec3f(s, h, -s)]))
            ground.CreateFaceVertexCountsAttr(Vt.IntArray([4]))
            ground.CreateFaceVertexIndicesAttr(Vt.IntArray([0, 1, 2, 3]))
            ground.CreateDisplayColorAttr(Vt.Vec3fArray([Gf.Vec3f(0.6, 0.6, 0.6)]))
        stage.GetRootLayer().Save()
        del stage
        Sdf.Layer.FindOrOpen(str(temporary))  # make sure the written layer parses before it is moved in place


def body_poses(states: dict):
    """``(positions, rotations)`` of every frame's bodies from a simulation's ``frame_states()``, for
    :func:`write_rollout_usd`; None when the states hold no rigid bodies."""
    if states.get("body_q") is None or states.get("body_r") is None or not np.asarray(states["body_q"]).size:
        return None
    return np.asarray(states["body_q"]), np.asarray(states["body_r"])


def _posed_body(stage, prim_path: str, mesh, first_frame: np.ndarray, positions: np.ndarray,
                rotations: np.ndarray) -> None:
    """A body as an Xform with time-sampled translate/orient over its mesh's static body-frame points
    (recovered from the first frame's world vertices and pose)."""
    from pxr import Gf, Usd, UsdGeom, Vt

    from .geometry.transforms import rotation_matrix

    # local = R^T (world - position) at the first frame
    local = (np.asarray(first_frame, dtype=np.float64) - positions[0]) @ rotation_matrix(rotations[0])
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(local.astype(np.float32)))
    xform = UsdGeom.Xform.Define(stage, prim_path)
    translate = xform.AddTranslateOp(UsdGeom.XformOp.PrecisionDouble)
    orient = xform.AddOrientOp(UsdGeom.XformOp.PrecisionDouble)
    for frame, (p, q) in enumerate(zip(np.asarray(positions, dtype=np.float64), np.asarray(rotations, dtype=np.float64))):
        translate.Set(Gf.Vec3d(*p), Usd.TimeCode(frame))
        orient.Set(Gf.Quatd(float(q[3]), Gf.Vec3d(*q[:3])).GetNormalized(), Usd.TimeCode(frame))


def _prim_name(name: str, used: set) -> str:
    clean = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(name)) or "body"
    if clean[0].isdigit():
        clean = f"_{clean}"
    candidate, k = clean, 1
    while candidate in used:
        candidate, k = f"{clean}_{k}", k + 1
    used.add(candidate)
    return candidate
