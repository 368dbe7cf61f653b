"""Training the RISP network (RISP Sec. 3, App. B.2) on a dataset of :mod:`wsim.risp.data`.

Loss per image ``j`` (states centred on the training data's mean and divided by its RMS spread, one
scale for every component as in the paper's raw L1): ``L_j = |N(I_j) - s_j|_1`` (Eq. 8) plus ``gamma |dL_j / dpsi_j|`` (Eq. 12).
By Theorem 1 the regulariser needs no second derivative of the renderer: ``dL_j/dpsi_j = (dL_j/dI_j) .
(dI_j/dpsi_j)``, where ``dI/dpsi`` is the Jacobian stored with the image (a constant in theta) and
``dL_j/dI_j`` is the network's input gradient taken with ``create_graph=True``, so that backpropagating
the regulariser differentiates the network twice and nothing else. ``gamma`` rises linearly from 0
over the first ``warmup`` fraction of the steps (App. B.2: "to avoid model collapse"). Adam with
cosine decay of the learning rate.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import ConfigError
from ..export import write_json
from ..harness.checkpoint import fingerprint
from ..harness.runner import output_folder
from . import data as risp_data
from .network import RispNet


def training_loss(net, images: torch.Tensor, states: torch.Tensor, jacobians: torch.Tensor | None,
                  gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, error, regulariser)`` of a batch: ``images`` ``[B, H, W, 3]``, ``states`` ``[B, S]``,
    ``jacobians`` ``[B, P, H, W, 3]`` (dI/dpsi; None or ``gamma = 0``: no regulariser). ``error`` is the
    mean over the batch of the L1 state error in units of ``net.state_scale`` (one scale for every
    component); ``regulariser`` the mean
    of ``|dL_j/dpsi_j|_2``."""
    x = images.detach().requires_grad_(gamma > 0.0 and jacobians is not None)
    per_image = ((net(x) - states) / net.state_scale).abs().sum(-1)
    error = per_image.mean()
    if not x.requires_grad:
        zero = torch.zeros((), device=images.device)
        return error, error, zero
    (grad_image,) = torch.autograd.grad(per_image.sum(), x, create_graph=True)
    dpsi = torch.einsum("bhwc,bphwc->bp", grad_image, jacobians)
    regulariser = torch.sqrt((dpsi ** 2).sum(-1) + 1e-12).mean()
    return error + gamma * regulariser, error, regulariser


def train_fingerprint(config) -> str:
    risp = to_dict(config)["risp"]
    return fingerprint({"data": risp_data.data_fingerprint(config), "width": risp["width"], "train": risp["train"]},
                       0, "risp-train")


def state_errors(net, images: np.ndarray, states: np.ndarray, batch: int = 64, device="cpu") -> dict:
    """State-estimation error of ``net`` on ``images`` (raw state units): the mean and standard deviation
    over images of the L1 norm of the error, and the mean absolute error per component."""
    net.eval()
    predictions = []
    with torch.no_grad():
        for k in range(0, len(images), batch):
            x = torch.as_tensor(images[k:k + batch], dtype=torch.float32, device=device)
            predictions.append(net(x).cpu().numpy())
    error = np.abs(np.concatenate(predictions) - states) if len(images) else np.zeros((0, states.shape[1]))
    norm = error.sum(-1)
    return {"count": int(len(images)), "l1_mean": float(norm.mean()) if len(norm) else None,
            "l1_std": float(norm.std()) if len(norm) else None,
            "per_component": error.mean(0).tolist() if len(norm) else None}


def _plot(path: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(epochs, [h["error"] for h in history], label="train L1 error (normalised)")
    if history and history[-1].get("regulariser"):
        ax.semilogy(epochs, [max(h["regulariser"], 1e-12) for h in history], label="|dL/dpsi|")
    held = [(h["epoch"], h["holdout_l1"]) for h in history if h.get("holdout_l1") is not None]
    if held:
        ax.semilogy(*zip(*held), label="held-out L1 state error")
    ax.set_xlabel("epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def train(config, data_folder, out, device=None, progress: bool = True, resume: bool = False,
          stop_after: int | None = None) -> dict:
    """Train on the dataset in ``data_folder``; writes ``risp.pt`` (the network), ``checkpoint.pt``
    (every epoch, for ``resume``), ``history.json``, ``training.png`` and ``summary.json`` to ``out``.
    Returns the summary. ``stop_after``: train at most that many epochs in this call and return
    ``{"status": "interrupted"}`` if epochs remain (``resume`` continues exactly where it stopped)."""
    from ..device import resolve_device, torch_device

    tc = config.risp.train
    out = output_folder(out)
    device = torch_device(resolve_device(device))
    manifest, arrays = risp_data.load(data_folder)
    if manifest["fingerprint"] != risp_data.data_fingerprint(config):
        raise ConfigError(f"{data_folder} holds RISP data of another config ({manifest.get('experiment')}); make "
                          "this config's with `wsim risp data`")
    count = len(arrays["states"])
    holdout = int(round(tc.holdout * count))
    train_idx = np.arange(count - holdout)
    held_idx = np.arange(count - holdout, count)
    states = torch.as_tensor(arrays["states"], dtype=torch.float32)
    torch.manual_seed(tc.seed)
    net = RispNet(states.shape[1], width=config.risp.width, image_size=manifest["image_size"]).to(device)
    net.state_mean.copy_(states[train_idx].mean(0))
    # one scale for every component (their RMS spread): the L1 error weighs them as the paper's raw L1
    # does, in units that do not depend on the scene's size
    spread = states[train_idx].std(0)
    net.state_scale.fill_(float(torch.sqrt((spread ** 2).mean()).clamp_min(1e-6)))
    optimizer = torch.optim.Adam(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    per_epoch = math.ceil(len(train_idx) / tc.batch)
    total_steps = tc.epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    stamp = train_fingerprint(config)
    checkpoint_path = out / "checkpoint.pt"
    history, first_epoch = [], 0
    if resume and checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if saved.get("fingerprint") != stamp:
            raise ConfigError(f"{checkpoint_path} belongs to another config or dataset; give another --out")
        net.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history, first_epoch = saved["history"], saved["epoch"] + 1
    images = torch.as_tensor(arrays["images"][train_idx].astype(np.float32))
    jacobians = torch.as_tensor(arrays["jacobians"][train_idx].astype(np.float32)) if tc.gamma > 0 else None
    train_states = states[train_idx]
    rng = np.random.default_rng([tc.seed, 1])
    for _ in range(first_epoch):
        rng.permutation(len(train_idx))  # the same batches as an uninterrupted run
    start = time.time()
    held = None
    warm_steps = tc.warmup * total_steps
    for epoch in range(first_epoch, tc.epochs):
        net.train()
        order = rng.permutation(len(train_idx))
        sums = np.zeros(3)
        for b in range(per_epoch):
            batch = order[b * tc.batch:(b + 1) * tc.batch]
            step = epoch * per_epoch + b
            gamma = tc.gamma * (min(1.0, step / warm_steps) if warm_steps > 0 else 1.0)
            jac = jacobians[batch].to(device) if jacobians is not None else None
            total, error, reg = training_loss(net, images[batch].to(device), train_states[batch].to(device), jac, gamma)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            scheduler.step()
            sums += [total.item(), error.item(), reg.item()]
        held = risp_data_errors(net, arrays, held_idx, device)
        row = {"epoch": epoch, "loss": sums[0] / per_epoch, "error": sums[1] / per_epoch,
               "regulariser": sums[2] / per_epoch, "gamma": gamma, "lr": scheduler.get_last_lr()[0],
               "holdout_l1": held["l1_mean"], "seconds": round(time.time() - start, 2)}
        history.append(row)
        torch.save({"fingerprint": stamp, "network": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch}, checkpoint_path)
        if progress:
            done = epoch + 1 - first_epoch
            eta = (time.time() - start) / done * (tc.epochs - epoch - 1)
            print(f"risp train {config.name}: epoch {epoch + 1}/{tc.epochs} loss {row['loss']:.4g} error "
                  f"{row['error']:.4g} reg {row['regulariser']:.3g} held-out L1 {held['l1_mean'] or 0:.4g} "
                  f"ETA {eta:.0f} s", flush=True)
        if stop_after is not None and epoch + 1 - first_epoch >= stop_after and epoch + 1 < tc.epochs:
            return {"status": "interrupted", "epoch": epoch}
    if held is None:  # resumed after the last epoch
        held = risp_data_errors(net, arrays, held_idx, device)
    train_err = risp_data_errors(net, arrays, train_idx[:len(held_idx) or None], device)
    summary = {"status": "done", "experiment": config.name, "images": count, "train_images": int(len(train_idx)),
               "holdout_images": int(holdout), "epochs": tc.epochs, "gamma": tc.gamma, "width": config.risp.width,
               "state_names": manifest["state_names"], "holdout": held, "train_subset": train_err,
               "seconds": history[-1]["seconds"] if history else 0.0}
    record = {"experiment": config.name, "image_size": manifest["image_size"], "state": manifest["state"],
              "state_names": manifest["state_names"], "data_fingerprint": manifest["fingerprint"],
              "camera": manifest["camera"], "summary": summary}
    torch.save({"network": net.state_dict(), "spec": net.spec(), "record": record}, out / "risp.pt")
    write_json(out / "history.json", history)
    write_json(out / "summary.json", summary)
    if history:
        _plot(out / "training.png", history)
    return summary


def risp_data_errors(net, arrays: dict, index: np.ndarray, device) -> dict:
    return state_errors(net, arrays["images"][index].astype(np.float32), arrays["states"][index], device=device)
