"""The experiment config of ``wsim run``: a scene (the ordinary scene schema) plus what to estimate,
how to render, the loss, the optimiser and the per-instance randomisation.

Ground-truth values, sampling ranges, seeds, resolution, frame count (``scene.sim.frames``), substeps
(``scene.sim.substeps``), optimiser and learning rate are all keys, so ``--set`` overrides any of them
(``--set optim.lr=0.1``, ``--set scene.sim.frames=20``, ``--set params.0.true=7``). Ranges and choices
are part of the schema (pydantic); what involves several sections is checked by
:meth:`ExperimentConfig._consistent`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..config import Color, NonNegative, Positive, SceneConfig, Vec3, Vector, list_default
from ..config_io import (ConfigModel, apply_overrides, check_kind, describe_errors, expand_presets, from_dict,
                         load_raw, resolve_config_path)
from ..errors import ConfigError
from ..risp.config import RispConfig
from .randomize import RandomizeConfig

METHODS = ("gradsim", "diffphysics", "average", "random", "pybullet")
LOSSES = ("pixel", "first_last", "mask", "vertices", "risp", "perceptual")
SPACES = ("log", "sigmoid", "linear")
PER = ("one", "all")
OPTIMIZERS = ("adam", "lbfgs", "sgd", "lm")
CAMERA_MODES = ("auto", "look_at")
TRUTHS = ("given", "seeded")
Pixels = Annotated[int, Field(ge=8)]

#: the one resolver of every config kind, under its former name
resolve_experiment_path = resolve_config_path


class WeightScaled(ConfigModel):
    """``[low, high]``: a range per newton of the body's weight; ``times``: another parameter's name."""

    low: Positive
    high: Positive
    times: Optional[str] = None


class ParamConfig(ConfigModel):
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
    with its mesh resolution). ``draw``: how truth and initial guess are drawn from ``[low, high]``:
    ``uniform``, or ``log_uniform`` (uniform in log: every decade of a range spanning several gets
    its share, where uniform draws of [1, 500] put 80 % of them above 100). ``true_per_weight``: the truth
    is instead the body's true weight m g (N) times a log-uniform draw from its range (times the truth of
    parameter ``times`` where given): a contact law's scale follows the body it carries."""

    name: str = "density"
    low: float = 2.0
    high: float = 12.0
    true: Optional[Union[float, Vector]] = None
    init: Optional[Union[float, Vector]] = None
    space: Literal[SPACES] = "log"
    bounds: Optional[Annotated[Vector, Field(min_length=2, max_length=2)]] = None
    true_per: Literal[PER] = "one"
    estimate_per: Literal[PER] = "one"
    per_vertex_of_body: bool = False
    draw: Literal["uniform", "log_uniform"] = "uniform"
    true_per_weight: Optional[WeightScaled] = None

    @model_validator(mode="after")
    def _range(self):
        if not self.high >= self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.space == "log" and self.low <= 0:
            raise ValueError(f"a log-space parameter needs low > 0, got {self.low}")
        if self.draw == "log_uniform" and self.low <= 0:
            raise ValueError(f"draw: log_uniform needs low > 0, got {self.low}")
        if self.bounds is not None and not self.bounds[1] > self.bounds[0]:
            raise ValueError(f"bounds must be [lower, upper] with upper > lower, got {self.bounds}")
        return self


class CameraConfig(ConfigModel):
    """``auto``: frame the target rollout from ``elevation``/``azimuth`` (degrees) with ``margin``;
    ``look_at``: a camera at ``eye`` looking at ``target``. ``fov_y`` in degrees."""

    mode: Literal[CAMERA_MODES] = "auto"
    eye: Vec3 = list_default(0.0, 1.0, 5.0)
    target: Vec3 = list_default(0.0, 1.0, 0.0)
    up: Vec3 = list_default(0.0, 1.0, 0.0)
    fov_y: float = Field(40.0, gt=0, lt=180)
    near: Positive = 0.1
    far: Positive = 100.0
    elevation: float = 20.0
    azimuth: float = 30.0
    margin: Positive = 1.1

    @model_validator(mode="after")
    def _clip(self):
        if not self.far > self.near:
            raise ValueError(f"far ({self.far}) must be > near ({self.near})")
        return self


class RenderConfig(ConfigModel):
    """The differentiable renderer: ``resolution`` (H = W, or [H, W]), soft-rasteriser ``sigma``/``gamma``,
    ``shading`` (flat or phong), ``background`` RGB; ``video_scale`` upsamples compare.mp4 frames.
    ``sigma`` sets how far an edge spreads (coverage 0.73 at ``sqrt(sigma)`` NDC inside the outline, whose
    0.5 level it never moves); for a video wsim did not render, about ``0.1 (2 / W)^2`` matches the
    one-pixel anti-aliasing of a camera or path tracer. ``supersample`` ``s`` renders ``s x s`` samples per
    pixel and averages them (a sensor's box filter; ``s^2`` times the cost): with it, at ``sigma`` near
    ``0.1 (2 / (s W))^2``, each pixel's alpha is the fraction of it the object covers, as in a camera's or
    a path tracer's frames.

    ``camera`` is a mapping (:class:`CameraConfig`) or the path of a camera file: the ``results.json`` of a
    previous run (its ``camera`` record) or a JSON/YAML file with ``eye``, ``target``, ``fov_y`` and
    optionally ``up``, ``near``, ``far``, ``resolution`` (relative paths from the working folder, then the
    config's folder). The file is read when the config is loaded and becomes ``mode: look_at`` keys (see
    :mod:`wsim.sysid.camera_file`). A recorded ``resolution`` must have the aspect ratio of
    ``render.resolution`` (else a ConfigError); its pixel count need not match, since the camera (its
    vertical field of view) is the same at any pixel count: ``render.resolution`` decides how finely it is
    sampled, and target frames of another size are resampled to it."""

    resolution: Union[Pixels, Annotated[list[Pixels], Field(min_length=2, max_length=2)]] = 64
    sigma: Positive = 1.0e-4
    gamma: Positive = 1.0e-4
    shading: Literal["flat", "phong"] = "phong"
    background: Color = list_default(1.0, 1.0, 1.0)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    video_scale: int = Field(3, ge=1)
    supersample: int = Field(1, ge=1, le=16)

    @field_validator("camera", mode="before")
    @classmethod
    def _camera_file(cls, value, info: ValidationInfo):
        if not isinstance(value, str):
            return value
        from .camera_file import camera_keys, check_aspect, read_camera_file, resolve_camera_path

        base = (info.context or {}).get("base")
        path = resolve_camera_path(value, None if base is None else Path(base))
        keys, recorded = camera_keys(read_camera_file(path), path, CameraConfig.model_fields)
        try:
            camera = CameraConfig.model_validate(keys)
        except ValidationError as error:
            raise ConfigError(f"camera file '{path}': {describe_errors(error, CameraConfig)}") from None
        if recorded is not None and "resolution" in info.data:
            check_aspect(recorded, info.data["resolution"], path)
        return camera


class LossConfig(ConfigModel):
    """``pixel``: MSE over every ``every``-th frame (the last frame always included); ``first_last``: MSE
    of the first and last frames; ``mask``: MSE of object masks (alpha) over every ``every``-th frame;
    ``vertices``: mean squared 3D vertex distance at every frame (the DiffPhysics baseline). The
    ``mask`` target is the foreground of the target video by background subtraction
    (:func:`wsim.sysid.appearance.foreground_mask`), or ``mask_video``: a mask video or folder of mask
    frames (white object on black) of the target's size and frame count. ``risp``: the mean squared
    difference of the states a trained RISP network (``risp.checkpoint``) reads off the rendered and the
    target frames (every ``every``-th), so that the look of the video need not match wsim's.
    ``perceptual``: the mean squared difference of image features (Johnson et al. 2016) of the rendered
    and target frames, from ``features``: a file of ``torch.export.save`` (a program exported for one
    image ``[1, 3, H, W]`` in [0, 1], at the run's resolution) or a TorchScript module, mapping images to
    a feature tensor; a perceptual loss needs pretrained weights, which wsim never downloads, so the
    user gives them (e.g. a VGG's first blocks, exported).
    ``horizon_start`` > 0 starts with the frames up to that index only and lengthens the horizon linearly
    to the whole video over ``horizon_iterations`` steps (a curriculum: while rendered and target objects
    still overlap the image gradient points the right way, so a far initial guess is not lost)."""

    type: Literal[LOSSES] = "pixel"
    mask_video: Optional[str] = None
    features: Optional[str] = None
    every: int = Field(1, ge=1)
    horizon_start: int = Field(0, ge=0)
    horizon_iterations: int = Field(0, ge=0)


class OptimConfig(ConfigModel):
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
    lowest-loss estimate of all runs wins. ``restart_refine`` > 0: each of those starts is first refined
    by a Nelder-Mead search over the round's parameters (forward only, at most that many rollouts),
    and the run from it is the polish alone (narrow curved valleys that a sparse screen only grazes).

    A final loss above ``(escalate_ratio x noise)^2`` (the pixel losses' value at the truth is the
    noise variance; noise measured from the target, at least ``escalate_floor``; ratio 0: no check) is
    not done (:func:`wsim.sysid.uncertainty.noise_check`); ``escalate`` rounds of restarts over *every*
    parameter are tried first. ``profile`` (a parameter's name): before the restarts, the polish at
    ``profile_points`` values of it over ``[low, high]`` (even in its optimisation space), the others
    free, then a free polish from the best (rigid contact: local runs fall back into a kf-mu minimum).
    ``final_refine`` (rollouts): when the loss is still above the noise allowance after escalation, a
    Nelder-Mead search over every parameter from each of the ``restart_starts`` best runs, then a polish.
    ``polish_extensions``: then, while the best run's budget ran out unfinished, that many more polishes."""

    optimizer: Literal[OPTIMIZERS] = "adam"
    lr: Positive = 0.1
    iterations: int = Field(100, ge=0)
    lr_decay: Positive = 1.0
    tolerance: NonNegative = 0.0
    checkpoint_every: int = Field(5, ge=1)
    polish_iterations: int = Field(0, ge=0)
    polish: Literal["bfgs", "lm"] = "bfgs"
    polish_lr: Positive = 0.05
    tied_iterations: int = Field(0, ge=0)
    restarts: int = Field(0, ge=0)
    restart_candidates: int = Field(32, ge=1)
    restart_starts: int = Field(2, ge=1)
    restart_params: list[str] = Field(default_factory=list)
    restart_refine: int = Field(0, ge=0)
    polish_extensions: int = Field(0, ge=0)
    final_refine: int = Field(0, ge=0)
    escalate: int = Field(0, ge=0)
    profile: Optional[str] = None
    profile_points: int = Field(8, ge=2)
    escalate_ratio: NonNegative = 3.0
    escalate_floor: Positive = 1.0e-5

    @model_validator(mode="after")
    def _restarts(self):
        if (self.restarts > 0 or self.escalate > 0) and not self.restart_starts <= self.restart_candidates:
            raise ValueError(f"restart_starts ({self.restart_starts}) must be <= restart_candidates "
                             f"({self.restart_candidates})")
        return self


APPEARANCE = ("light", "light_intensity", "ambient", "albedo", "background")
Degrees2 = Annotated[list[float], Field(min_length=2, max_length=2)]
Positive3 = Annotated[list[Positive], Field(min_length=3, max_length=3)]


class AppearanceTargetConfig(ConfigModel):
    """The appearance of a target rendered by wsim, where it differs from the assumed one (null: the
    same); the truth of the estimated nuisance values."""

    light: Optional[Degrees2] = None
    light_intensity: Optional[Positive] = None
    ambient: Optional[NonNegative] = None
    albedo: Optional[Positive3] = None
    background: Optional[Color] = None


class AppearanceConfig(ConfigModel):
    """The appearance wsim's renderer assumes (:mod:`wsim.sysid.appearance`): one directional light from
    ``light`` = [elevation, azimuth] degrees (towards the light; the default is the renderer's default
    light) with ``light_intensity``, Phong ``ambient``/``diffuse``/``specular``/``shininess``, an RGB
    ``albedo`` multiplying the scene colours, and ``render.background``. ``estimate`` lists the nuisance
    values estimated jointly with the physical parameters (any of light, light_intensity, ambient,
    albedo, background): a video wsim did not render never matches the assumed ones. ``target``: the
    appearance a wsim-rendered target is rendered with instead (to test the estimation)."""

    estimate: list[Literal[APPEARANCE]] = Field(default_factory=list)
    light: Degrees2 = list_default(63.434948822922, 0.0)
    light_intensity: Positive = 1.0
    ambient: NonNegative = 0.3
    diffuse: NonNegative = 0.7
    specular: NonNegative = 0.2
    shininess: Positive = 32.0
    albedo: Positive3 = list_default(1.0, 1.0, 1.0)
    target: Optional[AppearanceTargetConfig] = None

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.estimate)) != len(self.estimate):
            raise ValueError(f"estimate names a value twice: {self.estimate}")
        return self


class UncertaintyConfig(ConfigModel):
    """After the optimisation, how precisely the video determines each estimated parameter
    (:mod:`wsim.sysid.uncertainty`): the Gauss-Newton (Cramer-Rao) standard deviation for target pixels
    with independent noise measured from the target (its quantisation and a robust codec/sensor noise
    estimate), at least ``noise`` (default: the quantisation of an 8-bit video), from central
    differences of relative step ``step``; skipped above ``max_unknowns`` scalar unknowns (2 rollouts
    and renders each). It applies only where the residuals at the estimate are within twice the noise."""

    enabled: bool = True
    noise: Positive = 1.0 / (255.0 * 12.0 ** 0.5)
    step: float = Field(1.0e-2, gt=0, lt=0.5)
    max_unknowns: int = Field(8, ge=0)


class TargetConfig(ConfigModel):
    """Where the target video comes from: ``video`` (an .mp4/.gif file or a folder of PNG/JPG frames,
    relative paths from the working folder, then the config's folder) filmed with ``render.camera``; null
    renders it from the ground-truth parameters. ``bits``: quantise a rendered target to that many bits
    per channel (8: as if it had been saved as an ordinary video and read back) instead of keeping it in
    float32. Frames are converted to what the renderer draws (:mod:`wsim.sysid.target`): grey to RGB,
    RGBA composited over ``render.background``, another size of the same aspect ratio resampled to
    ``render.resolution``.

    ``truth`` (with a ``video``): where the ground truth of the scene comes from. ``given``: the
    ``params.N.true`` values (every one or none; none: the truth is unknown, no errors are reported).
    ``seeded``: the instance's truth drawn from its seed exactly as when wsim renders the target
    (``params.N.true`` where given): for a video made from that seed's scene (another renderer, a
    compressed copy), so that errors are measured against the seed's truth. A known truth also lets
    ``render.camera.mode: auto`` frame the truth rollout as for a rendered target; without one the video
    needs its camera (a camera file or ``look_at`` keys). Without a ``video`` the truth is always the
    seeded one."""

    video: Optional[str] = None
    bits: Optional[Annotated[int, Field(ge=1, le=16)]] = None
    truth: Literal[TRUTHS] = "given"


class ReinforceConfig(ConfigModel):
    """Method ``pybullet`` (:mod:`wsim.sysid.reinforce`, gradSim App. H.1 and Table 5): ``iterations``
    REINFORCE steps of Adam (rate ``lr``, in the parameter's optimisation space) on the mean of a Gaussian
    policy of standard deviation ``noise`` in that space, ``samples`` PyBullet rollouts a step; the
    normalised rewards are multiplied by a reward decay that starts at 1 and is multiplied by ``decay``
    after every step."""

    samples: int = Field(5, ge=2)
    iterations: int = Field(125, ge=1)
    noise: Positive = 0.05
    decay: float = Field(0.925, gt=0, le=1)
    lr: Positive = 0.1



class PaperConfig(ConfigModel):
    """The paper's numbers for the summary table: ``abs``/``rel`` error per parameter name."""

    table: str = ""
    abs: dict[str, float] = Field(default_factory=dict)
    rel: dict[str, float] = Field(default_factory=dict)


class ExperimentConfig(ConfigModel):
    """An experiment of ``wsim run``."""

    name: str = "experiment"
    description: str = ""
    method: Literal[METHODS] = "gradsim"
    seed: int = Field(0, ge=0)
    instances: int = Field(1, ge=1)
    scene: SceneConfig = Field(description="the scene whose parameters are estimated (bodies, sim, ...)")
    params: Annotated[list[ParamConfig], Field(min_length=1)] = Field(
        description="the parameters to estimate, e.g. [{name: density, low: 2.0, high: 12.0}]")
    render: RenderConfig = Field(default_factory=RenderConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    randomize: RandomizeConfig = Field(default_factory=RandomizeConfig)
    target: TargetConfig = Field(default_factory=TargetConfig)
    uncertainty: UncertaintyConfig = Field(default_factory=UncertaintyConfig)
    appearance: AppearanceConfig = Field(default_factory=AppearanceConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    risp: RispConfig = Field(default_factory=RispConfig)
    reinforce: ReinforceConfig = Field(default_factory=ReinforceConfig)
    video_format: Literal["mp4", "gif"] = "mp4"

    @model_validator(mode="after")
    def _consistent(self):
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"params names a parameter twice: {names}")
        for i, p in enumerate(self.params):
            if (p.per_vertex_of_body or p.true_per_weight) and len(self.scene.bodies) != 1:
                raise ValueError(f"params.{i}: per_vertex_of_body and true_per_weight need a scene with one body")
            times = p.true_per_weight and p.true_per_weight.times
            if times and (times not in names or self.params[names.index(times)].true_per_weight):
                raise ValueError(f"params.{i}.true_per_weight.times: '{times}' must name another parameter, one "
                                 "without true_per_weight")
        for i, name in enumerate(names):
            if name in APPEARANCE:
                raise ValueError(f"params.{i}: '{name}' is an appearance value; list it in appearance.estimate")
        if (self.loss.type == "perceptual") != (self.loss.features is not None):
            raise ValueError("loss.type: perceptual needs loss.features (a TorchScript feature network the user "
                             "gives; nothing is downloaded), and loss.features is only for it")
        if self.loss.type == "risp" and self.risp.checkpoint is None:
            raise ValueError("loss.type: risp needs risp.checkpoint: the risp.pt of `wsim risp train`")
        if self.loss.type == "risp" and self.render.camera.mode != "look_at":
            raise ValueError("loss.type: risp needs the camera the network was trained with: render.camera.mode: look_at")
        if self.loss.mask_video is not None and self.loss.type != "mask":
            raise ValueError("loss.mask_video is the target of loss.type: mask; set loss.type: mask or drop it")
        if self.appearance.estimate and self.method == "diffphysics":
            raise ValueError("appearance.estimate needs a pixel loss; method diffphysics compares 3D vertices")
        if self.optim.profile is not None:
            if self.optim.profile not in names:
                raise ValueError(f"optim.profile: '{self.optim.profile}' is not an estimated parameter; "
                                 f"allowed: {', '.join(names)}")
            if self.optim.polish_iterations == 0:
                raise ValueError("optim.profile runs the polish at each point: set optim.polish_iterations > 0")
        for i, name in enumerate(self.optim.restart_params):
            if name not in names + list(self.appearance.estimate):
                raise ValueError(f"optim.restart_params.{i}: '{name}' is not an estimated parameter; "
                                 f"allowed: {', '.join(names)}")
        if self.target.video is not None and self.render.camera.mode == "auto" and not self.known_truth():
            raise ValueError(
                "a target video with render.camera.mode: auto needs the scene's ground truth, whose rollout the "
                "camera frames: give the camera the video was filmed with as a camera file (--set "
                "render.camera=path/to/results.json) or as look_at keys (render.camera.mode: look_at with "
                "eye/target/fov_y), or give the truth (every params.N.true, or target.truth: seeded for a video "
                "of the seed's own scene)")
        if self.randomize.enabled and not self.scene.bodies:
            raise ValueError("randomize.enabled needs a body in scene.bodies to randomise")
        if (self.randomize.enabled and self.randomize.rotor_thrust_low is not None
                and not self.scene.bodies[0].rotors):
            raise ValueError("randomize.rotor_thrust_low/high draw the thrusts of scene.bodies.0.rotors, which "
                             "has no rotors")
        from ..geometry.shapes import SHAPES

        for i, shape in enumerate(self.randomize.shapes):
            if shape not in SHAPES:
                raise ValueError(f"randomize.shapes.{i}: unknown shape '{shape}'; allowed: {', '.join(SHAPES)}")
        return self

    def known_truth(self) -> bool:
        """Whether an instance knows its ground truth: a rendered target, ``target.truth: seeded``, or
        every ``params.N.true`` given."""
        return (self.target.video is None or self.target.truth == "seeded"
                or all(p.true is not None for p in self.params))


def image_size(config: ExperimentConfig) -> tuple[int, int]:
    r = config.render.resolution
    return (r, r) if isinstance(r, int) else (int(r[0]), int(r[1]))


def load_experiment(path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment (a path, or a shipped name such as ``rigid-mass``) with ``--set`` overrides,
    validated; a scene or a control task given here is named as such."""
    name = path
    path = resolve_config_path(path)
    data = load_raw(path)
    check_kind(name, data, "experiment")
    try:
        overrides = expand_presets(data, overrides)
        return from_dict(ExperimentConfig, apply_overrides(data, overrides), context={"base": path.parent})
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
