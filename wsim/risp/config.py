"""The ``risp`` section of an experiment config: what the state is, the rendering domain psi is drawn
from, the network, its training data and training, and the trained network a ``loss.type: risp`` run
compares states with. The experiment's scene, ``params`` ranges and ``randomize`` block are the state
distribution: each training rollout is an instance of the experiment (its seeded truth and scene).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from ..config import NonNegative, Positive
from ..config_io import ConfigModel

STATES = ("rigid_pose", "position", "heights")
Range = Annotated[list[float], Field(min_length=2, max_length=2)]


def _range(low: float, high: float):
    return Field(default_factory=lambda: [low, high])


class DomainConfig(ConfigModel):
    """Rendering parameters psi (:mod:`wsim.risp.domain`): each field uniform in ``[low, high]`` (per
    component). ``light``: elevation and azimuth of the direction towards the light, radians.
    ``camera_jitter``: the camera's eye moves by up to this fraction of its distance to the target along
    each axis (drawn with psi, not regularised). In a scene with a ground (``scene.ground``) a
    fraction ``ground_fraction`` of the images show the ground as a plane of psi's ``ground`` colour
    (reaching about 20 camera distances, near the horizon); the others show the background behind the
    object alone, as wsim's system identification renders it."""

    light: Range = _range(0.35, 1.4)
    light_intensity: Range = _range(0.4, 1.0)
    light_color: Range = _range(0.8, 1.0)
    ambient: Range = _range(0.1, 0.5)
    albedo: Range = _range(0.5, 1.3)
    specular: Range = _range(0.0, 0.4)
    shininess: Range = _range(4.0, 48.0)
    background: Range = _range(0.0, 1.0)
    ground: Range = _range(0.1, 0.9)
    ground_fraction: float = Field(0.5, ge=0.0, le=1.0)
    camera_jitter: NonNegative = 0.0

    @model_validator(mode="after")
    def _ordered(self):
        for name in ("light", "light_intensity", "light_color", "ambient", "albedo", "specular", "shininess",
                     "background", "ground"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"risp.domain.{name}: low {low} is above high {high}")
        if self.shininess[0] <= 0.0 or self.light_intensity[0] < 0.0 or self.background[0] < 0.0:
            raise ValueError("risp.domain: shininess must be > 0, light_intensity and background >= 0")
        return self


class DataConfig(ConfigModel):
    """Training images: ``count`` of them, from rollouts of the experiment's instances (seeds from
    ``seed``, every frame of each), each frame under its own psi; ``shard_size`` images per file;
    ``jacobian_step``: the central-difference step of dI/dpsi, relative to each field's range.
    ``configurations``: how many distinct rendering configurations (psi and camera jitter) the images
    share, image ``i`` taking configuration ``i mod configurations`` (RISP Fig. 6a varies it from 1 to
    10); 0 (default) draws one per image. ``psi_seed``: the seed of the rendering configurations (default
    ``seed``): another value renders the same states under other psi, which measures how invariant a
    network is to the rendering alone (the states stay those it was trained on)."""

    count: int = Field(512, ge=1)
    seed: int = Field(100000, ge=0)
    configurations: int = Field(0, ge=0)
    psi_seed: Optional[int] = Field(None, ge=0)
    shard_size: int = Field(64, ge=1)
    jacobian_step: Positive = 1.0e-3


class TrainConfig(ConfigModel):
    """Training (RISP App. B.2): Adam (``lr``, ``weight_decay``) with cosine decay over ``epochs``, batches
    of ``batch``. The paper's lr is 1e-2; on the narrow networks and small images of CPU runs Adam at
    1e-2 does not learn (risp-cube, width 16, 48 px: the training error stays at that of the mean state
    for 10 epochs) while 1e-3 does (it falls 2.2-fold in 6 epochs), hence the default; the regulariser's weight rises linearly from 0 to ``gamma`` over the first
    ``warmup`` fraction of the epochs (``gamma: 0`` is the ours-no-grad baseline). The paper's gammas (1
    quadrotor, 20 cube, 30 rod) are for its state units and its psi; here the error is in units of the
    states' RMS spread and psi has 18 components, and on risp-cube gamma 20 held the network at the mean
    state (training error flat at 5.5 over 5 epochs, against 2.6 with gamma 0), so the shipped configs
    use 1, where the regulariser starts near a tenth of the error term. ``holdout``: the
    fraction of the images kept out of training for the state-error figure."""

    epochs: int = Field(30, ge=1)
    batch: int = Field(16, ge=1)
    lr: Positive = 1.0e-3
    weight_decay: NonNegative = 1.0e-6
    gamma: NonNegative = 1.0
    warmup: float = Field(0.5, ge=0.0, le=1.0)
    holdout: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0)


class RispConfig(ConfigModel):
    """``state``: ``rigid_pose`` (the body's position and the sines and cosines of its yaw, pitch and roll,
    RISP Eq. 18: 9 values), ``position`` (its centre of mass alone: 3 values) or ``heights`` (the heights of ``points`` surface points spread evenly along
    the x extent of the rest shape). ``checkpoint``: the trained network (``risp.pt`` of ``wsim risp
    train``) that ``loss.type: risp`` uses. ``width``: the network's first-stage channel count."""

    state: Literal[STATES] = "rigid_pose"
    points: int = Field(10, ge=1)
    checkpoint: Optional[str] = None
    width: int = Field(16, ge=1)
    domain: DomainConfig = Field(default_factory=DomainConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
