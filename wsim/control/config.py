"""Configs of the visuomotor control experiments (``configs/control/*.yaml``, ``task: control``).

A control config names its ``scene`` (walker, fem or cloth) with that scene's settings, the
``methods`` to compare (``gradsim``: pixel MSE between the last rendered frame and the target image;
``diffphysics``: dense 3D loss on the centre of mass at every frame, full state supervision;
``random``: random actions, no learning), the optimisation, the controller, the camera/renderer and
how many ``instances`` (seeds; each seed draws a different goal) to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import apply_overrides, from_dict, load_raw
from ..errors import ConfigError

METHODS = ("gradsim", "diffphysics", "random")
SCENES = ("walker", "fem", "cloth")


@dataclass
class ControlSimConfig:
    dt: float = 1.0e-3
    substeps: int = 20
    frames: int = 31


@dataclass
class PolicyConfig:
    sinusoids: int = 8
    frequency: float = 2.0       # Hz
    scale: float = 0.3           # largest activation magnitude
    init_std: float = 0.1        # initial weights ~ N(0, init_std^2)


@dataclass
class OptimConfig:
    iterations: int = 20
    lr: float = 0.05
    optimizer: str = "adam"      # adam | sgd
    reached: float = 0.05        # goal reached when the COM distance to the goal is below this (m)
    stop_when_reached: bool = False
    keep_best: bool = False      # return the iterate of lowest own loss (not the last one)
    decay: float = 1.0           # learning rate multiplied by this after every iteration


@dataclass
class RenderConfig:
    size: int = 64
    sigma: float = 1.0e-4
    gamma: float = 1.0e-4
    video_size: int = 128
    blur: list[float] = field(default_factory=list)   # extra MSE terms on Gaussian-blurred images (sigma, px)
    # coarse-to-fine: gradsim's optimised loss at iteration k compares the images blurred with sigma
    # blur_start * blur_decay^k px (plain pixels once that falls below blur_min); 0 turns it off. A sharp
    # pixel MSE between a rendering and a target it does not overlap only says "shrink" (it is the two
    # areas); a blur wider than the gap says where the target is.
    blur_start: float = 0.0
    blur_decay: float = 0.85
    blur_min: float = 1.0


@dataclass
class WalkerConfig:
    cell: float = 0.08
    density: float = 10.0         # kg/m^2
    mu: float = 200.0             # N/m
    lam: float = 400.0            # N/m
    damping: float = 0.5
    ke: float = 2.0e3
    kd: float = 2.0
    kf: float = 3.0
    friction: float = 1.0
    smoothing: float = 0.005
    goal_distance: list[float] = field(default_factory=lambda: [0.15, 0.3])   # m to the right


@dataclass
class FemConfig:
    radius: float = 0.5
    tooth_length: float = 0.15
    thickness: float = 0.15
    teeth: int = 8
    rings: int = 4
    layers: int = 3
    scale: float = 1.0
    density: float = 100.0
    young: float = 2.0e4
    poisson: float = 0.3
    damping: float = 10.0
    ke: float = 2.0e3
    kd: float = 5.0
    kf: float = 5.0
    friction: float = 1.0
    smoothing: float = 0.005
    goal_distance: list[float] = field(default_factory=lambda: [0.15, 0.3])   # m, random direction in XZ
    goal_directions: str = "any"  # any | +x


@dataclass
class ClothConfig:
    triangles: list[int] = field(default_factory=lambda: [64, 2048])   # drawn per seed (log-uniform)
    size: list[float] = field(default_factory=lambda: [0.3, 0.8])      # edge length range (m)
    height: list[float] = field(default_factory=lambda: [0.3, 0.6])    # start height (m)
    speed: list[float] = field(default_factory=lambda: [1.0, 2.5])     # goal throw speed (m/s)
    initial_speed: float = 0.5    # the optimisation starts from this speed, straight up
    density: float = 0.2          # kg/m^2
    mu: float = 5.0               # N/m (soft enough for dt = 1 ms at 2048 triangles on a 0.3 m sheet)
    lam: float = 10.0
    damping: float = 0.002
    bending_stiffness: float = 1.0e-5
    drag: float = 0.5
    lift: float = 0.5
    gravity: float = -9.80665
    camera_elevation: float = 60.0   # degrees
    # ground contact in time-step units of the lightest particle (mass m, step dt), so that the explicit
    # contact stays contractive for every cloth size and resolution (each seed has other particle masses):
    # ke = contact_ke m / dt^2, kd = contact_kd m / dt, kf = contact_kf m / dt; Coulomb coefficient friction.
    # Above 1 for kd or kf the stick/damping update overshoots every step and the adjoint of a landed
    # cloth grows without bound (its gradient then points anywhere).
    contact_ke: float = 0.25
    contact_kd: float = 0.5
    contact_kf: float = 0.5
    friction: float = 0.5


@dataclass
class ControlConfig:
    name: str = "control"
    description: str = ""
    task: str = "control"
    scene: str = "walker"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seed: int = 0
    instances: int = 1
    target_image: str | None = None   # a user-supplied goal image (PNG); default: the rendered goal
    sim: ControlSimConfig = field(default_factory=ControlSimConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    walker: WalkerConfig = field(default_factory=WalkerConfig)
    fem: FemConfig = field(default_factory=FemConfig)
    cloth: ClothConfig = field(default_factory=ClothConfig)
    video: bool = True
    usd: bool = True


def validate(config: ControlConfig) -> ControlConfig:
    if config.scene not in SCENES:
        raise ConfigError(f"config key 'scene' must be one of {', '.join(SCENES)}, got '{config.scene}'")
    for method in config.methods:
        if method not in METHODS:
            raise ConfigError(f"config key 'methods' lists '{method}'; allowed: {', '.join(METHODS)}")
    if not config.methods:
        raise ConfigError("config key 'methods' must list at least one method")
    if config.optim.optimizer not in ("adam", "sgd"):
        raise ConfigError(f"config key 'optim.optimizer' must be adam or sgd, got '{config.optim.optimizer}'")
    if config.sim.frames < 2 or config.sim.substeps < 1 or config.sim.dt <= 0:
        raise ConfigError("config sim needs frames >= 2, substeps >= 1 and dt > 0")
    if config.optim.iterations < 0 or config.instances < 1:
        raise ConfigError("config needs optim.iterations >= 0 and instances >= 1")
    if config.render.blur_start < 0 or not 0 < config.render.blur_decay <= 1 or config.render.blur_min <= 0:
        raise ConfigError("config render needs blur_start >= 0, 0 < blur_decay <= 1 and blur_min > 0")
    if config.render.size < 8:
        raise ConfigError(f"config key 'render.size' must be >= 8, got {config.render.size}")
    lo, hi = config.cloth.triangles
    if not 2 <= lo <= hi:
        raise ConfigError(f"config key 'cloth.triangles' must be [low, high] with 2 <= low <= high, got {[lo, hi]}")
    return config


def is_control_config(path) -> bool:
    """Whether the YAML file at ``path`` is a control experiment (``task: control``)."""
    try:
        return load_raw(path).get("task") == "control"
    except ConfigError:
        return False


def control_config_path(name) -> Path | None:
    """The path of ``name`` when it is a control config (``task: control``), else None."""
    try:
        path = resolve_control_path(name)
    except ConfigError:
        return None
    return path if is_control_config(path) else None


def resolve_control_path(name) -> Path:
    """A control config by path, or by name from ``configs/control/`` (``control-walker``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parents[2] / "configs" / "control"
    for candidate in (shipped / str(name), shipped / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"control config '{name}' does not exist (nor as configs/control/{Path(str(name)).stem}.yaml)")


def load_control(path, overrides: list[str] | None = None) -> ControlConfig:
    path = resolve_control_path(path)
    data = apply_overrides(load_raw(path), overrides)
    if data.get("task", "control") != "control":
        raise ConfigError(f"{path}: not a control experiment (task: {data.get('task')!r})")
    try:
        config = from_dict(ControlConfig, data)
        return validate(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
