"""Configs of the visuomotor control experiments (``configs/control/*.yaml``, ``task: control``).

A control config names its ``scene`` (walker, fem or cloth) with that scene's settings, the
``methods`` to compare (``gradsim``: pixel MSE between the last rendered frame and the target image;
``diffphysics``: dense 3D loss on the centre of mass at every frame, full state supervision;
``random``: random actions, no learning), the optimisation, the controller, the camera/renderer and
how many ``instances`` (seeds; each seed draws a different goal) to run.

The sections that exist under the same name in system identification are called ``Control...`` here
(:class:`ControlOptimConfig`, :class:`ControlRenderConfig`, :class:`ControlClothConfig`,
:class:`ControlSimConfig`): they hold other settings (a policy's optimiser, a square image, a thrown
cloth's sampling ranges) than :class:`wsim.sysid.config.OptimConfig`, :class:`wsim.sysid.config.RenderConfig`
and the scene's :class:`wsim.config.ClothConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from ..config import NonNegative, Positive, list_default
from ..config_io import ConfigModel, apply_overrides, check_kind, config_kind, from_dict, load_raw, resolve_config_path
from ..errors import ConfigError

METHODS = ("gradsim", "diffphysics", "random")
SCENES = ("walker", "fem", "cloth")
Range = Annotated[list[float], Field(min_length=2, max_length=2)]


def _ordered(value: list, key: str) -> None:
    if not value[0] <= value[1]:
        raise ValueError(f"{key} must be [low, high] with low <= high, got {value}")


class ControlSimConfig(ConfigModel):
    """Time stepping as in a scene's ``sim`` (:class:`wsim.config.SimConfig`), ``checkpoint_every`` too."""

    dt: Positive = 1.0e-3
    substeps: int = Field(20, ge=1)
    frames: int = Field(31, ge=2)
    checkpoint_every: Optional[int] = Field(None, ge=1)


class PolicyConfig(ConfigModel):
    sinusoids: int = Field(8, ge=1)
    frequency: Positive = 2.0       # Hz
    scale: Positive = 0.3           # largest activation magnitude
    init_std: NonNegative = 0.1     # initial weights ~ N(0, init_std^2)


class ControlOptimConfig(ConfigModel):
    iterations: int = Field(20, ge=0)
    lr: Positive = 0.05
    optimizer: Literal["adam", "sgd"] = "adam"
    reached: Positive = 0.05        # goal reached when the COM distance to the goal is below this (m)
    stop_when_reached: bool = False
    keep_best: bool = False         # return the iterate of lowest own loss (not the last one)
    decay: Positive = 1.0           # learning rate multiplied by this after every iteration


class ControlRenderConfig(ConfigModel):
    size: int = Field(64, ge=8)
    sigma: Positive = 1.0e-4
    gamma: Positive = 1.0e-4
    video_size: int = Field(128, ge=8)
    blur: list[Positive] = Field(default_factory=list)   # extra MSE terms on Gaussian-blurred images (sigma, px)
    # coarse-to-fine: gradsim's optimised loss at iteration k compares the images blurred with sigma
    # blur_start * blur_decay^k px (plain pixels once that falls below blur_min); 0 turns it off. A sharp
    # pixel MSE between a rendering and a target it does not overlap only says "shrink" (it is the two
    # areas); a blur wider than the gap says where the target is.
    blur_start: NonNegative = 0.0
    blur_decay: float = Field(0.85, gt=0, le=1)
    blur_min: Positive = 1.0


class WalkerConfig(ConfigModel):
    cell: Positive = 0.08
    density: Positive = 10.0        # kg/m^2
    mu: NonNegative = 200.0         # N/m
    lam: NonNegative = 400.0        # N/m
    damping: NonNegative = 0.5
    ke: NonNegative = 2.0e3
    kd: NonNegative = 2.0
    kf: NonNegative = 3.0
    friction: NonNegative = 1.0
    smoothing: NonNegative = 0.005
    goal_distance: Range = list_default(0.15, 0.3)   # m to the right

    @model_validator(mode="after")
    def _ranges(self):
        _ordered(self.goal_distance, "goal_distance")
        return self


class FemConfig(ConfigModel):
    radius: Positive = 0.5
    tooth_length: NonNegative = 0.15
    thickness: Positive = 0.15
    teeth: int = Field(8, ge=1)
    rings: int = Field(4, ge=1)
    layers: int = Field(3, ge=1)
    scale: Positive = 1.0
    density: Positive = 100.0
    young: Positive = 2.0e4
    poisson: float = Field(0.3, ge=0, lt=0.5)
    damping: NonNegative = 10.0
    ke: NonNegative = 2.0e3
    kd: NonNegative = 5.0
    kf: NonNegative = 5.0
    friction: NonNegative = 1.0
    smoothing: NonNegative = 0.005
    goal_distance: Range = list_default(0.15, 0.3)   # m, random direction in XZ
    goal_directions: Literal["any", "+x"] = "any"

    @model_validator(mode="after")
    def _ranges(self):
        _ordered(self.goal_distance, "goal_distance")
        return self


class ControlClothConfig(ConfigModel):
    triangles: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=2, max_length=2)] = \
        list_default(64, 2048)      # drawn per seed (log-uniform)
    size: Range = list_default(0.3, 0.8)      # edge length range (m)
    height: Range = list_default(0.3, 0.6)    # start height (m)
    speed: Range = list_default(1.0, 2.5)     # goal throw speed (m/s)
    initial_speed: float = 0.5      # the optimisation starts from this speed, straight up
    density: Positive = 0.2         # kg/m^2
    mu: NonNegative = 5.0           # N/m (soft enough for dt = 1 ms at 2048 triangles on a 0.3 m sheet)
    lam: NonNegative = 10.0
    damping: NonNegative = 0.002
    bending_stiffness: NonNegative = 1.0e-5
    drag: NonNegative = 0.5
    lift: float = 0.5
    gravity: float = -9.80665
    camera_elevation: float = 60.0  # degrees
    # ground contact in time-step units of the lightest particle (mass m, step dt), so that the explicit
    # contact stays contractive for every cloth size and resolution (each seed has other particle masses):
    # ke = contact_ke m / dt^2, kd = contact_kd m / dt, kf = contact_kf m / dt; Coulomb coefficient friction.
    # Above 1 for kd or kf the stick/damping update overshoots every step and the adjoint of a landed
    # cloth grows without bound (its gradient then points anywhere).
    contact_ke: NonNegative = 0.25
    contact_kd: NonNegative = 0.5
    contact_kf: NonNegative = 0.5
    friction: NonNegative = 0.5

    @model_validator(mode="after")
    def _ranges(self):
        for key in ("triangles", "size", "height", "speed"):
            _ordered(getattr(self, key), key)
        if self.size[0] <= 0:
            raise ValueError(f"size must be positive, got {self.size}")
        return self


class ControlConfig(ConfigModel):
    name: str = "control"
    description: str = ""
    task: Literal["control"] = "control"
    scene: Literal[SCENES] = "walker"
    methods: Annotated[list[Literal[METHODS]], Field(min_length=1)] = Field(default_factory=lambda: list(METHODS))
    seed: int = Field(0, ge=0)
    instances: int = Field(1, ge=1)
    target_image: Optional[str] = None   # a user-supplied goal image (PNG); default: the rendered goal
    sim: ControlSimConfig = Field(default_factory=ControlSimConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    optim: ControlOptimConfig = Field(default_factory=ControlOptimConfig)
    render: ControlRenderConfig = Field(default_factory=ControlRenderConfig)
    walker: WalkerConfig = Field(default_factory=WalkerConfig)
    fem: FemConfig = Field(default_factory=FemConfig)
    cloth: ControlClothConfig = Field(default_factory=ControlClothConfig)
    video: bool = True
    usd: bool = True


#: the one resolver of every config kind, under its former name
resolve_control_path = resolve_config_path


def is_control_config(path) -> bool:
    """Whether the YAML file at ``path`` is a control experiment (``task: control``)."""
    try:
        return config_kind(load_raw(path)) == "control"
    except ConfigError:
        return False


def control_config_path(name) -> Path | None:
    """The path of ``name`` when it is a control config (``task: control``), else None."""
    try:
        path = resolve_config_path(name)
    except ConfigError:
        return None
    return path if is_control_config(path) else None


def load_control(path, overrides: list[str] | None = None) -> ControlConfig:
    """Load a control task (a path, or a shipped name such as ``control-walker``) with ``--set`` overrides."""
    name = path
    path = resolve_config_path(path)
    data = load_raw(path)
    check_kind(name, data, "control")
    try:
        return from_dict(ControlConfig, apply_overrides(data, overrides))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
