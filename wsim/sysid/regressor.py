"""Learned-regressor baselines of gradSim's Table 1 (App. H.2): the mass of a rigid body read off its
video by a network trained on videos of other instances.

* dataset: the target videos of seeded ``rigid-mass`` instances (built by :class:`Instance`, so the
  frames are exactly the ones gradSim fits), with the truth, stored as npz shards plus a JSON manifest;
  generation resumes shard by shard.
* models: ``cnn`` (EfficientNet-B0 per frame with shared weights -> 1x1 convs -> features of all frames
  concatenated -> MLP, as in App. H.2) and ``convlstm`` (a small conv encoder per frame -> ConvLSTM over
  the frames -> MLP), both trained from scratch with MSE (no pretrained weights can be downloaded).
* evaluation: mean absolute error (kg) and mean absolute relative error of the mass, as in Table 1.

Both models predict log mass (standardised by the training set): the masses span about two decades
(density 2-12 times the volumes of 14 shapes at scales 0.6-1.4), so an MSE on kilograms would be ruled by
the heaviest bodies, whereas an MSE on log mass is a relative error (the metric of Table 1's second
column) and exp() keeps every prediction positive. Besides the frames, the heads get the scene's known
values that gradSim is given too: the impulse (N s) and the camera's distance to its target (the auto
camera frames each trajectory, so the image scale alone does not say how big the body is).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import load_experiment
from .instance import Instance

EXPERIMENT = "rigid-mass"


# -- dataset ----------------------------------------------------------------------------------------------
def sample_of(instance: Instance) -> dict:
    """One instance's video (8-bit, like a video file) and truth."""
    body = instance.scene_config.bodies[0]
    volume = float(np.sum(instance.scene.model.body_volume))
    density = float(instance.truth["density"].mean())
    eye, target = np.asarray(instance.camera_keys["eye"]), np.asarray(instance.camera_keys["target"])
    frames = instance.target_images.detach().cpu().numpy()
    return {"frames": np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8), "seed": instance.seed,
            "density": density, "volume": volume, "mass": density * volume,
            "impulse": np.asarray(body.push.impulse, dtype=np.float32),
            "camera_distance": float(np.linalg.norm(eye - target)), "shape": str(body.shape.type)}


def make_dataset(folder, seeds, size: int = 64, frames: int = 16, shard_size: int = 64,
                 progress: bool = True) -> dict:
    """Render the instances of ``seeds`` into ``folder/shard_NNNN.npz`` and ``folder/manifest.json``.
    Shards listed in an existing manifest of the same settings are kept (resume); other settings raise."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    overrides = [f"render.resolution={size}", f"scene.sim.frames={frames}", "method=gradsim"]
    settings = {"experiment": EXPERIMENT, "overrides": overrides, "seeds": seeds, "shard_size": shard_size}
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {**settings, "shards": []}
    if {k: manifest.get(k) for k in settings} != settings:
        raise ValueError(f"{path} was written with other settings; use another folder")
    config = load_experiment(EXPERIMENT, overrides)
    done = {s["file"] for s in manifest["shards"] if (folder / s["file"]).exists()}
    manifest["shards"] = [s for s in manifest["shards"] if s["file"] in done]
    started = time.perf_counter()
    chunks = [seeds[i:i + shard_size] for i in range(0, len(seeds), shard_size)]
    for k, chunk in enumerate(chunks):
        name = f"shard_{k:04d}.npz"
        if name in done:
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:  # the shapes' OBJ files of each instance
            samples = [sample_of(Instance(config, seed, scratch, device="cpu")) for seed in chunk]
        arrays = {key: np.stack([np.asarray(s[key]) for s in samples]) for key in samples[0]}
        tmp = folder / f".{name}.tmp.npz"  # written then renamed: a killed run never leaves half a shard
        np.savez_compressed(tmp, **arrays)
        tmp.replace(folder / name)
        manifest["shards"].append({"file": name, "seeds": chunk, "seconds": time.perf_counter() - t0})
        path.write_text(json.dumps(manifest, indent=1))
        if progress:
            print(f"  dataset {folder.name}: shard {k + 1}/{len(chunks)} ({len(chunk)} videos, "
                  f"{time.perf_counter() - started:.0f} s)", flush=True)
    manifest["complete"] = True
    path.write_text(json.dumps(manifest, indent=1))
    return manifest


def load_dataset(folder) -> dict:
    """All shards of ``folder`` concatenated (frames stay uint8 [N, F, H, W, 3])."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    parts = [dict(np.load(folder / s["file"])) for s in manifest["shards"]]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# -- models -----------------------------------------------------------------------------------------------
class ConvLSTMCell(nn.Module):
    """ConvLSTM (Shi et al. 2015): the LSTM gates are convolutions of the input and the hidden state."""

    def __init__(self, inputs: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(inputs + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x, state=None):
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no activation on the output (App. H.2)


def efficientnet_b0(width: float = 1.0, depth: float = 1.0) -> nn.Module:
    """timm's EfficientNet-B0 trunk, untrained, optionally with fewer channels / blocks for a CPU."""
    import timm

    if width == 1.0 and depth == 1.0:
        return timm.create_model("efficientnet_b0", pretrained=False, num_classes=0, global_pool="")
    from timm.models.efficientnet import _gen_efficientnet  # B0's blocks with timm's own width/depth scaling

    return _gen_efficientnet("efficientnet_b0", channel_multiplier=width, depth_multiplier=depth, pretrained=False,
                             num_classes=0, global_pool="")


class FrameCNN(nn.Module):
    """App. H.2: EfficientNet-B0 features of each frame -> 1x1 convs (->128->32) -> concatenated over the
    frames (plus the known scene values) -> MLP -> one value."""

    def __init__(self, frames: int, size: int, side: int, width: float = 0.5, depth: float = 0.5):
        super().__init__()
        self.trunk = efficientnet_b0(width, depth)
        self.reduce = nn.Sequential(nn.Conv2d(self.trunk.num_features, 128, 1), nn.ReLU(), nn.Conv2d(128, 32, 1))
        cells = math.ceil(size / 32) ** 2  # B0 downsamples by 32
        self.head = mlp([frames * 32 * cells + side, 512, 100, 100, 1])

    def forward(self, video, side):  # video [B, F, 3, H, W]
        b, f = video.shape[:2]
        features = self.reduce(self.trunk(video.flatten(0, 1))).reshape(b, -1)
        return self.head(torch.cat([features, side], 1))[:, 0]


class ConvLSTMRegressor(nn.Module):
    """A stride-4 conv encoder per frame -> ConvLSTM over the frames -> pooled last hidden state (plus the
    known scene values) -> MLP -> one value."""

    def __init__(self, side: int, hidden: int = 32):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.cell = ConvLSTMCell(32, hidden)
        self.head = mlp([2 * hidden + side, 100, 100, 1])

    def forward(self, video, side):
        b, f = video.shape[:2]
        x = self.encode(video.flatten(0, 1)).unflatten(0, (b, f))
        state = None
        for t in range(f):
            h, state = self.cell(x[:, t], state)
        # mean and max over the image: where the body is and how much of it there is
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)
        return self.head(torch.cat([pooled, side], 1))[:, 0]


def build_model(kind: str, frames: int, size: int, side: int, width: float = 0.5, depth: float = 0.5) -> nn.Module:
    if kind == "cnn":
        return FrameCNN(frames, size, side, width, depth)
    if kind == "convlstm":
        return ConvLSTMRegressor(side)
    raise ValueError(f"unknown model '{kind}' (cnn, convlstm)")


# -- training and evaluation ------------------------------------------------------------------------------
def _side(data: dict) -> np.ndarray:
    return np.concatenate([data["impulse"], data["camera_distance"][:, None]], 1).astype(np.float32)


def _inputs(data: dict, index, norm: dict):
    video = torch.as_tensor(data["frames"][index]).float().div_(255.0).permute(0, 1, 4, 2, 3)
    side = (torch.as_tensor(_side(data)[index]) - norm["side_mean"]) / norm["side_std"]
    return video, side


def train(kind: str, data: dict, checkpoint=None, epochs: int = 5, batch: int = 8, lr: float = 1e-3,
          seed: int = 0, width: float = 0.5, depth: float = 0.5, progress: bool = True) -> tuple[nn.Module, dict]:
    """Fit ``kind`` to ``data`` (MSE on standardised log mass, Adam). With ``checkpoint`` the model is saved
    after every epoch and a finished run of the same settings is loaded instead of retrained."""
    settings = {"kind": kind, "epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "width": width,
                "depth": depth, "videos": int(len(data["mass"]))}
    n, frames, size = data["frames"].shape[0], data["frames"].shape[1], data["frames"].shape[2]
    side = _side(data)
    log_mass = np.log(data["mass"]).astype(np.float32)
    norm = {"mean": float(log_mass.mean()), "std": float(log_mass.std() + 1e-6),
            "side_mean": torch.as_tensor(side.mean(0)), "side_std": torch.as_tensor(side.std(0) + 1e-6)}
    torch.manual_seed(seed)
    model = build_model(kind, frames, size, side.shape[1], width, depth)
    if checkpoint is not None and Path(checkpoint).exists():
        saved = torch.load(checkpoint, weights_only=False)
        if saved["settings"] == settings and saved["record"]["epochs_done"] == epochs:
            model.load_state_dict(saved["model"])
            model.eval()
            return model, {**saved["record"], "norm": saved["norm"], "resumed": True}
    target = torch.as_tensor((log_mass - norm["mean"]) / norm["std"])
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = np.random.default_rng(seed)
    record = {"settings": settings, "parameters": sum(p.numel() for p in model.parameters()), "losses": [],
              "epochs_done": 0}
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order, total = generator.permutation(n), 0.0
        for start in range(0, n, batch):
            index = np.sort(order[start:start + batch])
            video, side_in = _inputs(data, index, norm)
            loss = ((model(video, side_in) - target[index]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        record["losses"].append(total / n)
        record["epochs_done"] = epoch + 1
        record["train_time_s"] = time.perf_counter() - started
        if progress:
            print(f"  {kind}: epoch {epoch + 1}/{epochs} training MSE {total / n:.4f} (standardised log mass), "
                  f"{record['train_time_s']:.0f} s", flush=True)
        if checkpoint is not None:
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            torch.save({"settings": settings, "model": model.state_dict(), "norm": norm, "record": record},
                       checkpoint)
    model.eval()
    return model, {**record, "norm": norm}


@torch.no_grad()
def predict(model: nn.Module, data: dict, norm: dict, batch: int = 16) -> np.ndarray:
    """Predicted masses (kg) of the videos of ``data``."""
    model.eval()
    out = []
    for start in range(0, len(data["mass"]), batch):
        video, side = _inputs(data, np.arange(start, min(start + batch, len(data["mass"]))), norm)
        out.append(model(video, side).double().numpy())
    return np.exp(np.concatenate(out) * norm["std"] + norm["mean"])


def mass_errors(estimate, truth) -> dict:
    """Table 1's columns: mean absolute error (kg) and mean absolute relative error."""
    estimate, truth = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    return {"abs": float(np.mean(np.abs(estimate - truth))), "rel": float(np.mean(np.abs(estimate - truth) / truth))}
