"""The experiment config of ``wsim run``: a scene (the ordinary scene schema) plus what to estimate,
how to render, the loss, the optimiser and the per-instance randomisation.

Ground-truth values, sampling ranges, seeds, resolution, frame count (``scene.sim.frames``), substeps
(``scene.sim.substeps``), optimiser and learning rate are all keys, so ``--set`` overrides any of them
(``--set optim.lr=0.1``, ``--set scene.sim.frames=20``, ``--set params.0.true=7``).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

from ..config import SceneConfig, Vector, load_config, resolve_config_path
from ..errors import ConfigError

METHODS = ("gradsim", "diffphysics", "average", "random")
LOSSES = ("pixel", "first_last", "mask", "vertices")
SPACES = ("log", "sigmoid", "linear")
PER = ("one", "all")
OPTIMIZERS = ("adam", "lbfgs", "sgd", "lm")
CAMERA_MODES = ("auto", "look_at")


@dataclass
class ParamConfig:
    """A parameter to estimate: a simulation parameter ``name`` (``density``, ``ke``, ``kd``, ``kf``, ``mu``,
    ``particle_mass``, ``particle_velocity``, ``lame_mu``...). ``low``/``high``: the range the ground truth
    and the initial guess are drawn from (per component for vector parameters). ``true``/``init``: fixed
    values instead of draws. ``space``: how it is optimised (``log``: positive, unbounded above;
    ``sigmoid``: inside ``bounds``; ``linear``: as is, clamped to ``bounds``). ``bounds`` default to
    ``[low, high]`` widened by half the width on each side (and kept positive in log space).
    ``true_per``/``estimate_per``: ``one`` value (of the parameter's element shape) shared by every
    element, or ``all`` (a value per body/particle/element). ``per_vertex_of_body``: the value is a total
    over the surface vertices of the scene's (single) body, and each vertex gets value / vertex count
    (for the per-vertex contact parameters ke, kd, kf: a body's contact stiffness then does not grow
    with its mesh resolution)."""

    name: str = "density"
    low: float = 2.0
    high: float = 12.0
    true: typing.Optional[typing.Union[float, Vector]] = None
    init: typing.Optional[typing.Union[float, Vector]] = None
    space: str = "log"
    bounds: typing.Optional[Vector] = None
    true_per: str = "one"
    estimate_per: str = "one"
    per_vertex_of_body: bool = False


@dataclass
class CameraConfig:
    """``auto``: frame the target rollout from ``elevation``/``azimuth`` (degrees) with ``margin``;
    ``look_at``: a camera at ``eye`` looking at ``target``. ``fov_y`` in degrees."""

    mode: str = "auto"
    eye: Vector = field(default_factory=lambda: [0.0, 1.0, 5.0])
    target: Vector = field(default_factory=lambda: [0.0, 1.0, 0.0])
    up: Vector = field(default_factory=lambda: [0.0, 1.0, 0.0])
    fov_y: float = 40.0
    near: float = 0.1
    far: float = 100.0
    elevation: float = 20.0
    azimuth: float = 30.0
    margin: float = 1.1


@dataclass
class RenderConfig:
    """The differentiable renderer: ``resolution`` (H = W, or [H, W]), soft-rasteriser ``sigma``/``gamma``,
    ``shading`` (flat or phong), ``background`` RGB; ``video_scale`` upsamples compare.mp4 frames."""

    resolution: typing.Union[int, list[int]] = 64
    sigma: float = 1.0e-4
    gamma: float = 1.0e-4
    shading: str = "phong"
    background: Vector = field(default_factory=lambda: [1.0, 1.0, 1.0])
    camera: CameraConfig = field(default_factory=CameraConfig)
    video_scale: int = 3


@dataclass
class LossConfig:
    """``pixel``: MSE over every ``every``-th frame (the last frame always included); ``first_last``: MSE
    of the first and last frames; ``mask``: MSE of object masks (alpha) over every ``every``-th frame;
    ``vertices``: mean squared 3D vertex distance at every frame (the DiffPhysics baseline).
    ``horizon_start`` > 0 starts with the frames up to that index only and lengthens the horizon linearly
    to the whole video over ``horizon_iterations`` steps (a curriculum: while rendered and target objects
    still overlap the image gradient points the right way, so a far initial guess is not lost)."""

    type: str = "pixel"
    every: int = 1
    horizon_start: int = 0
    horizon_iterations: int = 0


@dataclass
class OptimConfig:
    """``optimizer`` adam | lbfgs | sgd | lm (Levenberg-Marquardt, see ``polish``) with learning rate ``lr``
    (in the optimisation space), at most
    ``iterations`` steps; ``lr_decay`` multiplies the rate each step; stop early once the loss falls
    below ``tolerance``; ``checkpoint_every`` steps a checkpoint is written (for ``--resume``). Then
    ``polish_iterations`` BFGS steps (backtracking line search, first step at most ``polish_lr`` in the
    optimisation space) on the full video refine the estimate to high precision; ``polish: lm`` uses
    Levenberg-Marquardt with a finite-difference Jacobian instead (2 rollouts per scalar unknown and
    step, so only for a few unknowns; see :mod:`wsim.sysid.levenberg_marquardt`). For the first
    ``tied_iterations`` steps (Adam and BFGS steps counted together) a parameter estimated per element
    (``estimate_per: all``) keeps one shared value (the mean), then every element goes its own way: a
    coarse-to-fine schedule that finds the common value before the many per-element unknowns.
    ``restarts`` rounds of screened restarts follow (see :mod:`wsim.sysid.restarts`): each draws
    ``restart_candidates`` points (the ``restart_params``, all parameters when empty, from a Sobol
    sequence over their ranges, the others at the best estimate), scores them by their loss over the
    whole video (no gradient) and runs the optimisation again from the ``restart_starts`` best; the
    lowest-loss estimate of all runs wins."""

    optimizer: str = "adam"
    lr: float = 0.1
    iterations: int = 100
    lr_decay: float = 1.0
    tolerance: float = 0.0
    checkpoint_every: int = 5
    polish_iterations: int = 0
    polish: str = "bfgs"
    polish_lr: float = 0.05
    tied_iterations: int = 0
    restarts: int = 0
    restart_candidates: int = 32
    restart_starts: int = 2
    restart_params: list[str] = field(default_factory=list)


@dataclass
class RandomizeConfig:
    """Per-instance randomisation of ``scene.bodies.0`` (each draw uniform in [low, high] per component):
    ``shapes`` (names from :data:`wsim.sysid.shapes.SHAPES`; empty keeps the scene's shape), anisotropic
    ``scale``, ``position``, a random orientation (``rotation``), ``velocity``, ``angular_velocity`` and the
    known ``impulse`` (N s, applied over ``scene.bodies.0.push.duration`` at ``push_point``; with
    ``impulse_per_volume`` the draw is per m^3 of the body, so that the velocity it causes, impulse /
    (density x volume), has the same range for every shape and scale). With ``position_from_ground`` the
    drawn height (position y) is the gap between the body's lowest vertex and the ground plane instead of
    the height of its centre of mass, so that every shape and scale starts the same distance above it."""

    enabled: bool = False
    shapes: list[str] = field(default_factory=list)
    shape_resolution: int = 8
    scale: Vector = field(default_factory=lambda: [1.0, 1.0])
    position_low: Vector = field(default_factory=lambda: [0.0, 1.0, 0.0])
    position_high: Vector = field(default_factory=lambda: [0.0, 1.0, 0.0])
    rotation: bool = False
    velocity_low: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    velocity_high: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    angular_velocity_low: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    angular_velocity_high: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    impulse_low: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    impulse_high: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    impulse_per_volume: bool = False
    position_from_ground: bool = False
    push_point_low: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    push_point_high: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])


@dataclass
class UncertaintyConfig:
    """After the optimisation, how precisely the video determines each estimated parameter
    (:mod:`wsim.sysid.uncertainty`): the Gauss-Newton (Cramer-Rao) standard deviation for target pixels
    with independent noise of standard deviation ``noise`` (default: the quantisation of an 8-bit video),
    from central differences of relative step ``step``; skipped above ``max_unknowns`` scalar unknowns
    (2 rollouts and renders each)."""

    enabled: bool = True
    noise: float = 1.0 / (255.0 * 12.0 ** 0.5)
    step: float = 1.0e-2
    max_unknowns: int = 8


@dataclass
class TargetConfig:
    """Where the target video comes from: ``video`` (an .mp4/.gif file or a folder of PNG/JPG frames,
    relative paths from the config's folder) rendered with ``render.camera``; null renders it from the
    ground-truth parameters. ``bits``: quantise a rendered target to that many bits per channel (8: as
    if it had been saved as an ordinary video and read back) instead of keeping it in float32."""

    video: typing.Optional[str] = None
    bits: typing.Optional[int] = None


@dataclass
class PaperConfig:
    """The paper's numbers for the summary table: ``abs``/``rel`` error per parameter name."""

    table: str = ""
    abs: dict = field(default_factory=dict)
    rel: dict = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """An experiment of ``wsim run``."""

    name: str = "experiment"
    description: str = ""
    method: str = "gradsim"
    seed: int = 0
    instances: int = 1
    scene: SceneConfig = field(default_factory=SceneConfig)
    params: list[ParamConfig] = field(default_factory=list)
    render: RenderConfig = field(default_factory=RenderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    randomize: RandomizeConfig = field(default_factory=RandomizeConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    video_format: str = "mp4"


def _choice(path: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config key '{path}' must be one of {', '.join(allowed)}, got {value!r}")


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Check the choices and ranges that the schema's types alone do not."""
    _choice("method", config.method, METHODS)
    _choice("loss.type", config.loss.type, LOSSES)
    _choice("optim.optimizer", config.optim.optimizer, OPTIMIZERS)
    _choice("optim.polish", config.optim.polish, ("bfgs", "lm"))
    _choice("render.camera.mode", config.render.camera.mode, CAMERA_MODES)
    _choice("render.shading", config.render.shading, ("flat", "phong"))
    _choice("video_format", config.video_format, ("mp4", "gif"))
    if not config.params:
        raise ConfigError("config key 'params' must list at least one parameter to estimate")
    names = [p.name for p in config.params]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'params' names a parameter twice: {names}")
    for i, p in enumerate(config.params):
        where = f"params.{i}"
        _choice(f"{where}.space", p.space, SPACES)
        _choice(f"{where}.true_per", p.true_per, PER)
        _choice(f"{where}.estimate_per", p.estimate_per, PER)
        if not p.high >= p.low:
            raise ConfigError(f"{where}: high ({p.high}) must be >= low ({p.low})")
        if p.space == "log" and p.low <= 0:
            raise ConfigError(f"{where}: a log-space parameter needs low > 0, got {p.low}")
        if p.per_vertex_of_body and len(config.scene.bodies) != 1:
            raise ConfigError(f"{where}.per_vertex_of_body needs a scene with exactly one body")
        if p.bounds is not None and (len(p.bounds) != 2 or not p.bounds[1] > p.bounds[0]):
            raise ConfigError(f"{where}.bounds must be [lower, upper] with upper > lower, got {p.bounds}")
    if config.loss.every < 1:
        raise ConfigError(f"config key 'loss.every' must be >= 1, got {config.loss.every}")
    if config.optim.iterations < 0:
        raise ConfigError(f"config key 'optim.iterations' must be >= 0, got {config.optim.iterations}")
    if not config.optim.lr > 0:
        raise ConfigError(f"config key 'optim.lr' must be > 0, got {config.optim.lr}")
    if min(config.optim.polish_iterations, config.optim.tied_iterations, config.loss.horizon_start,
           config.loss.horizon_iterations) < 0:
        raise ConfigError("optim.polish_iterations, optim.tied_iterations, loss.horizon_start and "
                          "loss.horizon_iterations must be >= 0")
    o = config.optim
    if o.restarts < 0 or (o.restarts > 0 and not 1 <= o.restart_starts <= o.restart_candidates):
        raise ConfigError(f"optim.restarts must be >= 0 (got {o.restarts}) and, with restarts, 1 <= "
                          f"optim.restart_starts ({o.restart_starts}) <= optim.restart_candidates "
                          f"({o.restart_candidates})")
    for i, name in enumerate(o.restart_params):
        if name not in names:
            raise ConfigError(f"config key 'optim.restart_params.{i}': '{name}' is not an estimated parameter; "
                              f"allowed: {', '.join(names)}")
    if config.target.bits is not None and not 1 <= config.target.bits <= 16:
        raise ConfigError(f"config key 'target.bits' must be in [1, 16] (or null: float32), got {config.target.bits}")
    u = config.uncertainty
    if not (u.noise > 0 and 0 < u.step < 0.5 and u.max_unknowns >= 0):
        raise ConfigError(f"uncertainty: noise must be > 0 (got {u.noise}), step in (0, 0.5) (got {u.step}) "
                          f"and max_unknowns >= 0 (got {u.max_unknowns})")
    if config.instances < 1:
        raise ConfigError(f"config key 'instances' must be >= 1, got {config.instances}")
    resolution = config.render.resolution
    size = [resolution, resolution] if isinstance(resolution, int) else list(resolution)
    if len(size) != 2 or min(size) < 8:
        raise ConfigError(f"config key 'render.resolution' must be >= 8 (one size or [H, W]), got {resolution}")
    if config.target.video is not None and config.render.camera.mode == "auto":
        raise ConfigError("a target video needs its camera: set render.camera.mode: look_at with eye/target/fov_y")
    if config.randomize.enabled and not config.scene.bodies:
        raise ConfigError("randomize.enabled needs a body in scene.bodies to randomise")
    from ..geometry.shapes import SHAPES

    for i, shape in enumerate(config.randomize.shapes):
        if shape not in SHAPES:
            raise ConfigError(f"config key 'randomize.shapes.{i}': unknown shape '{shape}'; allowed: {', '.join(SHAPES)}")
    return config


def image_size(config: ExperimentConfig) -> tuple[int, int]:
    r = config.render.resolution
    return (r, r) if isinstance(r, int) else (int(r[0]), int(r[1]))


def load_experiment(path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load ``configs/experiments/<name>.yaml`` (or a path) with ``--set`` overrides, validated."""
    path = resolve_experiment_path(path)
    config = load_config(path, overrides, schema=ExperimentConfig)
    try:
        return validate(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def resolve_experiment_path(name):
    from pathlib import Path

    path = Path(name)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parent.parent.parent / "configs" / "experiments"
    for candidate in (shipped / str(name), shipped / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    try:
        return resolve_config_path(name)
    except ConfigError:
        raise ConfigError(f"experiment config '{name}' does not exist (nor as configs/experiments/"
                          f"{Path(str(name)).stem}.yaml)") from None
