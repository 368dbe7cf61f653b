"""RISP training data by domain randomisation (RISP Sec. 3): states from rollouts of an experiment's
instances, each frame rendered by wsim under its own rendering parameters psi, with the image Jacobian
dI/dpsi the regulariser needs (Theorem 1: precomputed, no second derivatives of the renderer).

Image ``i`` is frame ``i mod F`` of the rollout of instance seed ``data.seed + i div F`` (``F`` frames
per rollout; every parameter drawn from its range, :func:`state_distribution`); its psi and camera
jitter are drawn from ``rng([S, i])`` (from ``rng([S, 2^31 + i mod C])`` when the images share ``C =
data.configurations`` rendering configurations), ``S`` being ``data.psi_seed`` (default ``data.seed``). A folder holds ``manifest.json`` (the
config fingerprint, sizes, state names, camera) and ``shard_NNNN.npz`` files of ``shard_size`` images:
``images`` ``[n, H, W, 3]`` and ``jacobians`` ``[n, |psi|, H, W, 3]`` float16, ``states`` ``[n, S]`` and
``psi`` ``[n, |psi|]`` float32, ``index`` ``[n]``. Shards are written atomically and are deterministic,
so an interrupted run resumes at the first missing shard; a folder made for
another config is an error, never reused.
"""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import ConfigError
from ..export import write_json
from ..harness.checkpoint import fingerprint
from ..harness.runner import progress_bar
from . import domain
from .state import StateMap

MANIFEST = "manifest.json"


def data_fingerprint(config) -> str:
    """What the images depend on: the scene, the state distribution, rendering, the risp state and data
    settings (not the training settings or the checkpoint)."""
    data = to_dict(config)
    keep = {k: data[k] for k in ("scene", "params", "randomize", "render", "appearance")}
    risp = dict(data["risp"])
    keep["risp"] = {k: risp[k] for k in ("state", "points", "domain", "data")}
    return fingerprint(keep, 0, "risp-data")


def check_camera(config) -> None:
    if config.render.camera.mode != "look_at":
        raise ConfigError("RISP needs one fixed camera for every image: set render.camera.mode: look_at "
                          "(eye, target, fov_y) or render.camera=path/to/results.json")


def jittered_camera(instance, jitter: float, rng: np.random.Generator):
    """The instance's camera with its eye moved by up to ``jitter`` times its distance along each axis."""
    if jitter <= 0.0:
        return None
    from ..render import Camera

    keys = instance.camera_keys
    eye, target = np.asarray(keys["eye"]), np.asarray(keys["target"])
    eye = eye + rng.uniform(-jitter, jitter, size=3) * np.linalg.norm(eye - target)
    return Camera.look_at(eye.tolist(), keys["target"], keys["up"], fov_y=keys["fov_y"], near=keys["near"],
                          far=keys["far"], device=instance.torch_device)


def state_distribution(config):
    """The experiment config whose instances the training states come from: every parameter drawn
    from its ``[low, high]`` by the seed (a given ``params.N.true`` is the truth of one video, not the
    distribution a network must cover), and the scene drawn by ``randomize`` from the same seed (pose,
    velocities, and with ``randomize.rotor_thrust_low/high`` a random thrust schedule for every rotor, so
    that the states are those random actions reach)."""
    config = config.model_copy(deep=True)
    for p in config.params:
        p.true = None
    return config


class Rollouts:
    """The instances behind the images (of :func:`state_distribution`), built on demand (one at a
    time) with their states."""

    def __init__(self, config, work: Path, device=None, base=None):
        from ..sysid.instance import Instance

        config = state_distribution(config)
        self.Instance, self.config, self.work, self.device, self.base = Instance, config, work, device, base
        self.seed, self.current = None, None

    def get(self, seed: int):
        if seed != self.seed:
            instance = self.Instance(self.config, seed, self.work, device=self.device, base=self.base)
            states = StateMap(self.config.risp.state, instance.scene, self.config.risp.points)
            self.current = (instance, states(instance.target_vertices))
            self.seed = seed
        return self.current


def ground_plane(instance) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground of the instance's scene as a square reaching about 20 camera distances around the
    camera's target: ``(vertices [V, 3], faces [T, 3])``."""
    from ..render.meshes import grid_plane

    keys = instance.camera_keys
    eye, target = np.asarray(keys["eye"]), np.asarray(keys["target"])
    size = 40.0 * float(np.linalg.norm(eye - target))
    vertices, faces, _ = grid_plane(size, divisions=16, height=instance.config.scene.ground.height,
                                    center=(float(target[0]), float(target[2])), device=instance.torch_device)
    return vertices, faces


def render_sample(instance, vertices: torch.Tensor, psi: np.ndarray, config, rng) -> tuple:
    """Image ``[H, W, 3]`` and Jacobian ``[|psi|, H, W, 3]`` of one state under ``psi`` (with the ground
    plane in ``domain.ground_fraction`` of the draws of a scene with a ground)."""
    d = config.risp.domain
    camera = jittered_camera(instance, d.camera_jitter, rng)
    with_ground = config.scene.ground.enabled and rng.uniform() < d.ground_fraction
    faces, colors, ground = instance.faces, instance.colors, 0
    if with_ground:
        plane, plane_faces = ground_plane(instance)
        faces = torch.cat([faces, plane_faces + vertices.shape[0]])
        vertices = torch.cat([vertices, plane])
        colors = torch.cat([colors, torch.ones_like(plane)])
        ground = plane.shape[0]
    step = domain.steps(d, config.risp.data.jacobian_step)
    return domain.image_and_jacobian(instance.renderer, vertices, faces, colors,
                                     torch.as_tensor(psi, device=instance.torch_device), step, camera=camera,
                                     ground=ground)


def _save_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def _shard_path(out: Path, k: int) -> Path:
    return out / f"shard_{k:04d}.npz"


def _shard_indices(k: int, shard_size: int, count: int) -> range:
    return range(k * shard_size, min(count, (k + 1) * shard_size))


def _shard_complete(path: Path, indices: range) -> bool:
    if not path.exists():
        return False
    with np.load(path) as z:
        return list(z["index"]) == list(indices)


def write_shard(config, out, k: int, count: int, device=None, base=None, rollouts=None, bar=None) -> list[str]:
    """Render shard ``k`` of the dataset of ``count`` images into ``out`` (atomically, so a repeated or
    interrupted shard is simply written again); returns the state's names. Every image draws its psi
    from its own seeded stream, so a shard is the same whichever process writes it."""
    rc = config.risp
    out = Path(out)
    frames = int(config.scene.sim.frames)
    rollouts = rollouts or Rollouts(config, out / "instances", device=device, base=base)
    psi_seed = rc.data.seed if rc.data.psi_seed is None else rc.data.psi_seed
    names = None
    images, jacobians, states, psis = [], [], [], []
    indices = _shard_indices(k, rc.data.shard_size, count)
    for i in indices:
        instance, state = rollouts.get(rc.data.seed + i // frames)
        names = names or StateMap(rc.state, instance.scene, rc.points).names
        # a shared configuration draws from its own stream: psi and jitter are the same for its images
        configuration = i if not rc.data.configurations else 2 ** 31 + i % rc.data.configurations
        rng = np.random.default_rng([psi_seed, configuration])
        psi = domain.sample(rc.domain, 1, rng)[0]
        image, jac = render_sample(instance, instance.target_vertices[i % frames], psi, config, rng)
        images.append(image.cpu().numpy().astype(np.float16))
        jacobians.append(jac.cpu().numpy().astype(np.float16))
        states.append(state[i % frames].cpu().numpy())
        psis.append(psi)
        if bar is not None:
            bar.update(1)
    _save_npz(_shard_path(out, k), images=np.stack(images), jacobians=np.stack(jacobians),
              states=np.stack(states).astype(np.float32), psi=np.stack(psis), index=np.asarray(indices))
    return names


def generate(config, out, count: int | None = None, device=None, base=None, progress: bool = True,
             pool=None) -> dict:
    """Write (or complete) the dataset of ``config`` in ``out``; returns the manifest. ``pool``: a
    :class:`~wsim.harness.executor.RayExecutor` that writes the missing shards as Ray tasks (they must
    see ``out`` at the same path); None writes them here, one after the other."""
    from ..sysid.config import image_size

    check_camera(config)
    rc = config.risp
    count = int(count if count is not None else rc.data.count)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = data_fingerprint(config)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        import json

        old = json.loads(manifest_path.read_text())
        if old.get("fingerprint") != stamp:
            raise ConfigError(f"{out} holds RISP data of another config ({old.get('experiment')}); "
                              "give another folder")
    frames = int(config.scene.sim.frames)
    size = image_size(config)
    shard_size = rc.data.shard_size
    shards = math.ceil(count / shard_size)
    missing = [k for k in range(shards)
               if not _shard_complete(_shard_path(out, k), _shard_indices(k, shard_size, count))]
    start = time.time()
    if pool is not None and missing:
        pool.map(write_shard, [(config, out, k, count, device, base) for k in missing], f"risp data {config.name} shards")
    elif missing:
        rollouts = Rollouts(config, out / "instances", device=device, base=base)
        bar = progress_bar(count, f"risp data {config.name}", enabled=progress)
        bar.update(count - sum(len(_shard_indices(k, shard_size, count)) for k in missing))
        for k in missing:
            write_shard(config, out, k, count, rollouts=rollouts, bar=bar)
        bar.close()
    instance, _ = Rollouts(config, out / "instances", device=device, base=base).get(rc.data.seed)
    names = StateMap(rc.state, instance.scene, rc.points).names
    manifest = {"experiment": config.name, "fingerprint": stamp, "count": count, "shards": shards,
                "shard_size": shard_size, "frames_per_rollout": frames, "image_size": list(size),
                "state": rc.state, "state_names": names, "psi_fields": dict(domain.FIELDS),
                "camera": config.render.camera.model_dump(), "seconds": round(time.time() - start, 2)}
    write_json(manifest_path, manifest)
    return manifest


def load(folder) -> tuple[dict, dict]:
    """The manifest and every array of a dataset folder (concatenated over its shards)."""
    import json

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise ConfigError(f"{folder} has no {MANIFEST}: make the data with `wsim risp data`")
    manifest = json.loads(path.read_text())
    parts = []
    for k in range(manifest["shards"]):
        shard = folder / f"shard_{k:04d}.npz"
        if not shard.exists():
            raise ConfigError(f"{shard} is missing: complete the data with `wsim risp data` (it resumes)")
        with np.load(shard) as z:
            parts.append({name: z[name] for name in z.files})
    arrays = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return manifest, arrays
