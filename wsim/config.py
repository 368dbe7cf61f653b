"""Scene configs: a typed schema (pydantic), YAML loading, ``--set key=value`` overrides and clear errors.

A config is a YAML mapping checked against the schema below; every key has a default, so a config lists
only what it changes. ``--set bodies.0.density=500`` overrides any key (dotted path, list items by
index, values parsed as YAML 1.2: only true/false are booleans). Unknown keys, wrong types, values out
of range and missing files raise :class:`~wsim.errors.ConfigError` naming the key path, what is allowed
and the file. The machinery shared with experiment and control configs is in :mod:`wsim.config_io`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from .config_io import (ConfigModel, apply_overrides, check_kind, config_kind, from_dict, load_raw,
                        resolve_config_path, shipped_configs, to_dict)
from .errors import ConfigError
from .robot_config import RobotConfig

__all__ = ["SceneConfig", "load_config", "from_dict", "to_dict", "apply_overrides", "load_raw",
           "resolve_config_path", "config_kind", "shipped_configs", "Vector"]

Vector = list[float]
Vec3 = Annotated[list[float], Field(min_length=3, max_length=3)]
Quaternion = Annotated[list[float], Field(min_length=4, max_length=4)]
Color = Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=3, max_length=4)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Scale = Union[Positive, Annotated[list[Positive], Field(min_length=3, max_length=3)]]
Size = Union[Positive, Annotated[list[Positive], Field(min_length=1)]]


def list_default(*values: float):
    return Field(default_factory=lambda: list(values))


class SimConfig(ConfigModel):
    """Time stepping: ``dt`` physics step (s); ``substeps`` physics steps per rendered frame;
    ``frames`` rendered frames including the initial state (the rollout lasts (frames-1)*substeps*dt).
    ``checkpoint_every``: keep the state only every this many frame intervals and recompute the segments
    in the backward pass (memory ~ its square root of the horizon, time up to 1.6x; gradients identical);
    none: one tape over the whole rollout. ``graph``: capture the rollout's passes once as Warp graphs
    and replay them (same results, far less Python per step; not with ``checkpoint_every``)."""

    dt: float = Field(1.0e-3, gt=0)
    substeps: int = Field(10, ge=1)
    frames: int = Field(61, ge=2)
    checkpoint_every: Optional[int] = Field(None, ge=1)
    graph: bool = False


class GroundConfig(ConfigModel):
    """The ground plane Y = ``height`` (m)."""

    enabled: bool = True
    height: float = 0.0


class ContactConfig(ConfigModel):
    """Global contact material (paper theta = [ke, kd, kf, mu]); ``margin`` (m) is a contact thickness;
    ``smoothing`` (m) makes the onset of contact C1 (0: the paper's exact hinge; see wsim.models.contact)."""

    ke: NonNegative = 1.0e4
    kd: NonNegative = 100.0
    kf: NonNegative = 1.0e3
    mu: NonNegative = 0.5
    margin: NonNegative = 0.0
    smoothing: NonNegative = 1.0e-2


class ContactOverride(ConfigModel):
    """Per-body contact material; unset values fall back to the global ``contact`` section."""

    ke: Optional[NonNegative] = None
    kd: Optional[NonNegative] = None
    kf: Optional[NonNegative] = None
    mu: Optional[NonNegative] = None


class ShapeConfig(ConfigModel):
    """A body's surface: a primitive ``type`` (box, sphere, cylinder, cone, capsule, torus) with its
    ``size`` (see :func:`wsim.geometry.primitive`), or a mesh ``file`` (OBJ/PLY/STL...); ``scale`` per axis.
    ``type`` stays a free name: with a ``file`` it labels the mesh (a randomised shape's name)."""

    type: str = "box"
    size: Size = 1.0
    file: Optional[str] = None
    scale: Scale = 1.0
    resolution: int = Field(16, ge=3)


class PushConfig(ConfigModel):
    """A known impulse (N s, world) applied at ``point`` (body frame, m from the centre of mass) over
    ``[start, start + duration)`` seconds."""

    impulse: Vec3 = list_default(0.0, 0.0, 0.0)
    point: Vec3 = list_default(0.0, 0.0, 0.0)
    start: NonNegative = 0.0
    duration: NonNegative = 0.0


def non_zero(vector, what: str):
    """``vector`` when it has a direction, else the error naming ``what``."""
    if sum(c * c for c in vector) < 1e-24:
        raise ValueError(f"{what} must be a non-zero vector, got {vector}")
    return vector


class RotorConfig(ConfigModel):
    """A rotor fixed to its body (:mod:`wsim.models.rotors`). At ``position`` (m, body frame, relative to the
    centre of mass) it pushes along ``axis`` (body frame, normalised; default up) with ``thrust`` (N): one
    number for the whole rollout, or a list of one value per frame interval (``sim.frames - 1`` values),
    clamped to [0, ``max_thrust``] (N; the default is the magnitude RISP clamps its quadrotor's actions
    to) where it acts. Its propeller adds the reaction torque ``spin * torque_ratio * thrust`` (N m,
    ``torque_ratio`` in m) about the axis: ``spin`` +1 along it, -1 against it."""

    position: Vec3 = list_default(0.0, 0.0, 0.0)
    axis: Vec3 = list_default(0.0, 1.0, 0.0)
    spin: Literal[1, -1] = 1
    torque_ratio: NonNegative = 0.016
    max_thrust: Positive = 500.0
    thrust: Union[float, Annotated[list[float], Field(min_length=1)]] = 0.0

    @field_validator("axis")
    @classmethod
    def _direction(cls, axis):
        return non_zero(axis, "the rotor axis")


class BodyConfig(ConfigModel):
    """A rigid body. Give ``density`` (kg/m^3) or ``mass`` (kg, then used instead of the density);
    ``rotation`` is a quaternion (x, y, z, w); ``rotors``: thrusters fixed to it (:class:`RotorConfig`).
    ``pattern``: the depth (0..1) of a colour pattern painted on it, smooth cells of ``pattern_scale`` m
    fixed in the body frame (0: one plain ``color``), so that its rotation shows in the video."""

    name: Optional[str] = None
    shape: ShapeConfig = Field(default_factory=ShapeConfig)
    density: Optional[Positive] = 1000.0
    mass: Optional[Positive] = None
    position: Vec3 = list_default(0.0, 1.0, 0.0)
    rotation: Quaternion = list_default(0.0, 0.0, 0.0, 1.0)
    velocity: Vec3 = list_default(0.0, 0.0, 0.0)
    angular_velocity: Vec3 = list_default(0.0, 0.0, 0.0)
    contact: ContactOverride = Field(default_factory=ContactOverride)
    push: PushConfig = Field(default_factory=PushConfig)
    rotors: list[RotorConfig] = Field(default_factory=list)
    color: Color = list_default(0.8, 0.3, 0.2)
    pattern: float = Field(0.0, ge=0.0, le=1.0)
    pattern_scale: Positive = 0.2

    @model_validator(mode="after")
    def _has_mass(self):
        if self.density is None and self.mass is None:
            raise ValueError("give density (kg/m^3) or mass (kg)")
        return self


class ChainConfig(ConfigModel):
    """A mass-spring chain of ``count`` particles from ``start`` to ``end`` (m); ``mass`` per particle (kg),
    springs of ``stiffness`` (N/m) and ``damping`` (N s/m); ``pin_first`` fixes the first particle."""

    count: int = Field(10, ge=2)
    start: Vec3 = list_default(0.0, 1.5, 0.0)
    end: Vec3 = list_default(1.0, 1.5, 0.0)
    mass: Positive = 0.1
    stiffness: NonNegative = 500.0
    damping: NonNegative = 0.5
    radius: NonNegative = 0.02
    pin_first: bool = True
    velocity: Vec3 = list_default(0.0, 0.0, 0.0)


class ParticleSelection(ConfigModel):
    """Particles of a soft body or cloth: explicit mesh vertex ``indices``, and/or every vertex whose
    (placed, world) coordinate along ``axis`` (x, y or z) is ``below`` / ``above`` a value (m): both
    (a slab), or with ``ends: true`` either one (both ends of a bar: ``below`` < ``above``)."""

    indices: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    axis: Optional[Literal["x", "y", "z"]] = None
    below: Optional[float] = None
    above: Optional[float] = None
    ends: bool = False

    @model_validator(mode="after")
    def _axis_for_bounds(self):
        if (self.below is not None or self.above is not None) and self.axis is None:
            raise ValueError("below/above need an axis (x, y or z)")
        if self.ends and (self.below is None or self.above is None or not self.below < self.above):
            raise ValueError("ends: true needs below < above (the two ends of a bar along axis)")
        return self


class PinConfig(ParticleSelection):
    """Which particles of a soft body or cloth stay fixed (a :class:`ParticleSelection`)."""


class ParticlePushConfig(ParticleSelection):
    """A known push on a soft body: the total ``impulse`` (N s, world frame) split equally over the
    selected particles (a :class:`ParticleSelection`), delivered over ``[start, start + duration)`` s."""

    impulse: Vec3 = list_default(0.0, 0.0, 0.0)
    start: NonNegative = 0.0
    duration: NonNegative = 0.0


class TetMeshConfig(ConfigModel):
    """A tetrahedral mesh: ``type`` box (``size`` [3] m, ``cells`` [3]), beam (``size`` = [length, height,
    width] along x, y, z, ``cells``), sphere (``size`` = radius, ``resolution``), gear (``size`` = radius,
    1080 elements by default), or ``file`` (a tetrahedral mesh meshio reads, or a closed triangle
    surface (OBJ/PLY/STL/OFF/glTF) tetrahedralised with tetgen, elements up to ``max_volume`` m^3)."""

    type: Literal["box", "beam", "sphere", "gear"] = "box"
    size: Size = 0.2
    cells: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=3)] = list_default(2, 2, 2)
    resolution: int = Field(3, ge=1)
    file: Optional[str] = None
    max_volume: Optional[Positive] = None


class SoftBodyConfig(ConfigModel):
    """A deformable solid (tetrahedral stable Neo-Hookean FEM). Material: Lame ``mu``/``lam`` (Pa) or
    ``young``/``poisson`` (E in Pa, 0 <= nu < 0.5; overrides mu/lam when given); ``damping`` (Pa s);
    ``activation`` (alpha, preferred volume ratio 1 - alpha). Mass: ``density`` (kg/m^3, lumped) or
    ``particle_mass`` (kg each). ``radius`` (m) is the particles' contact thickness. ``push``: a known
    impulse on some of its particles."""

    name: Optional[str] = None
    mesh: TetMeshConfig = Field(default_factory=TetMeshConfig)
    position: Vec3 = list_default(0.0, 0.5, 0.0)
    rotation: Quaternion = list_default(0.0, 0.0, 0.0, 1.0)
    scale: Scale = 1.0
    velocity: Vec3 = list_default(0.0, 0.0, 0.0)
    density: Optional[Positive] = 1000.0
    particle_mass: Optional[Positive] = None
    mu: NonNegative = 1.0e4
    lam: NonNegative = 1.0e4
    young: Optional[Positive] = None
    poisson: Optional[Annotated[float, Field(ge=0, lt=0.5)]] = None
    damping: NonNegative = 0.0
    activation: float = Field(0.0, lt=1)
    radius: NonNegative = 0.0
    pin: PinConfig = Field(default_factory=PinConfig)
    push: ParticlePushConfig = Field(default_factory=ParticlePushConfig)
    contact: ContactOverride = Field(default_factory=ContactOverride)
    color: Color = list_default(0.3, 0.7, 0.4)

    @model_validator(mode="after")
    def _material(self):
        if (self.young is None) != (self.poisson is None):
            raise ValueError("give both young and poisson (or mu and lam)")
        if self.density is None and self.particle_mass is None:
            raise ValueError("give density (kg/m^3) or particle_mass (kg)")
        return self


class ClothConfig(ConfigModel):
    """A cloth: a grid of ``size`` [2] m in the XZ plane with ``cells`` [2] quads (2 triangles each) or a
    triangle mesh ``file``; placed by ``position``/``rotation`` (quaternion x, y, z, w)/``scale``. Mass:
    ``density`` (kg/m^2) or ``particle_mass`` (kg each). Membrane Lame ``mu``/``lam`` (N/m) and
    ``damping`` (N s/m); ``bending_stiffness`` (N m) and ``bending_damping`` (N m s); air ``drag``/``lift``
    coefficients (kg/m^3). ``pin`` fixes vertices; ``anchors`` ties listed vertices to their initial
    positions with springs of ``anchor_stiffness`` (N/m) and ``anchor_damping`` (N s/m)."""

    name: Optional[str] = None
    size: Annotated[list[Positive], Field(min_length=2, max_length=2)] = list_default(1.0, 1.0)
    cells: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] = list_default(16, 16)
    file: Optional[str] = None
    position: Vec3 = list_default(0.0, 1.0, 0.0)
    rotation: Quaternion = list_default(0.0, 0.0, 0.0, 1.0)
    scale: Scale = 1.0
    velocity: Vec3 = list_default(0.0, 0.0, 0.0)
    density: Optional[Positive] = 0.2
    particle_mass: Optional[Positive] = None
    mu: NonNegative = 20.0
    lam: NonNegative = 40.0
    damping: NonNegative = 0.02
    bending_stiffness: NonNegative = 1.0e-4
    bending_damping: NonNegative = 1.0e-6
    drag: NonNegative = 0.0
    lift: float = 0.0
    radius: NonNegative = 0.005
    pin: PinConfig = Field(default_factory=PinConfig)
    anchors: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    anchor_stiffness: NonNegative = 100.0
    anchor_damping: NonNegative = 0.1
    contact: ContactOverride = Field(default_factory=ContactOverride)
    color: Color = list_default(0.8, 0.7, 0.2)

    @model_validator(mode="after")
    def _has_mass(self):
        if self.density is None and self.particle_mass is None:
            raise ValueError("give density (kg/m^2) or particle_mass (kg)")
        return self


class TorqueWave(ConfigModel):
    """A known joint torque per frame interval k: ``magnitude * sin(2 pi clamp((k - delay) / period, 0, 1))``
    (N m; delay and period in frame intervals): RISP's hand actuation (App. B.1.3)."""

    magnitude: float = 1.0
    delay: NonNegative = 0.0
    period: Positive = 40.0


class LinkConfig(ConfigModel):
    """One link of a procedural chain (:class:`ArticulationConfig`): a rod of ``length`` (m) and ``mass``
    (kg) hanging from the previous link's tip (the first from the chain's ``position``) by a revolute
    joint about ``axis`` (the previous link's frame; default Z: a swing in the XY plane), at the initial
    angle ``q`` (rad, 0: hanging straight down) and rate ``qd`` (rad/s). The joint has viscous
    ``damping`` (N m s/rad) and a spring of ``stiffness`` (N m/rad) toward q = 0; ``torque`` (N m) is a
    known applied joint torque: one number for the whole rollout, or one value per frame interval
    (``sim.frames - 1`` values). Drawn as a ``shape`` (box, cylinder or capsule) of ``radius`` (m).
    ``offset`` (m) moves the joint along its axis from the previous tip: links side by side, as in a
    real double pendulum, instead of meshes that overlap at the joint. Trees (a hand): ``parent`` is
    the link it hangs from (default the previous link; -1 the fixed base at the articulation's
    ``position``; links in depth-first order), ``anchor`` (m) the joint's place relative to the parent's
    tip (or the base), in the parent's frame. ``limit`` (rad) clamps the joint to [-limit, limit] by a
    penalty of ``limit_stiffness`` (N m/rad); ``torque_wave`` adds a known torque pulse; links of one
    ``group`` share the estimable ``group_stiffness``."""

    name: Optional[str] = None
    length: Positive = 0.5
    mass: Positive = 1.0
    axis: Vec3 = list_default(0.0, 0.0, 1.0)
    q: float = 0.0
    qd: float = 0.0
    damping: NonNegative = 0.0
    stiffness: NonNegative = 0.0
    torque: Union[float, Annotated[list[float], Field(min_length=1)]] = 0.0
    offset: float = 0.0
    parent: Optional[int] = Field(None, ge=-1)
    anchor: Vec3 = list_default(0.0, 0.0, 0.0)
    limit: Optional[Positive] = None
    limit_stiffness: NonNegative = 100.0
    torque_wave: Optional[TorqueWave] = None
    group: Optional[str] = None
    shape: Literal["box", "cylinder", "capsule"] = "capsule"
    radius: Positive = 0.03
    color: Color = list_default(0.85, 0.35, 0.2)

    @field_validator("axis")
    @classmethod
    def _direction(cls, axis):
        return non_zero(axis, "the joint axis")


class ArticulationConfig(ConfigModel):
    """An articulated chain in reduced coordinates (:mod:`wsim.articulated`): ``links`` hanging one from
    the other, the first from the fixed pivot ``position`` (m, world). ``mass_model``: ``rod`` (each
    link a uniform solid cylinder of its length and radius: centre of mass at mid-length) or ``point``
    (all of a link's mass at its tip, drawn as a bob of ``bob_radius`` m; default twice the link's
    radius). ``resolution``: segments of the round meshes. ``base_size``: a fixed box (m, sides)
    centred at ``position`` drawn as the base (a palm), in ``base_color``.

    Ground contact: when the scene's ``ground`` is enabled and ``ground_contact`` is true, every link
    touches the plane Y = ``ground.height`` with the scene's ``contact`` material (ke, kd, kf, mu,
    smoothing; ``margin`` thickens the links) at ``contact_points`` spheres of the link's radius evenly
    spaced along its axis, joint end to tip (the bob's radius at the tip of a point mass); see
    :mod:`wsim.articulated`. The base never moves and needs none."""

    position: Vec3 = list_default(0.0, 1.0, 0.0)
    base_size: Optional[Vec3] = None
    base_color: Color = list_default(0.6, 0.6, 0.6)
    mass_model: Literal["rod", "point"] = "rod"
    bob_radius: Optional[Positive] = None
    resolution: int = Field(8, ge=3)
    ground_contact: bool = True
    contact_points: int = Field(5, ge=2)
    links: Annotated[list[LinkConfig], Field(min_length=1)]


class GradcheckConfig(ConfigModel):
    """``wsim gradcheck``: parameters to check, relative finite-difference step ``eps``, the relative
    error ``tolerance``, the ``seed`` of the random loss weights and probe directions, and ``frames``,
    the horizon the check differentiates through (default: the whole rollout). A shorter horizon is for
    rollouts that turn chaotic (a cloth buckling as it drapes), where no finite difference can agree
    with any gradient over the full length."""

    params: list[str] = Field(default_factory=list)
    eps: Positive = 1.0e-2
    tolerance: Positive = 1.0e-2
    seed: int = Field(0, ge=0)
    frames: Optional[Annotated[int, Field(ge=2)]] = None


class SceneConfig(ConfigModel):
    """A scene for ``wsim simulate`` and ``wsim gradcheck``: at least one body, chain, soft body or cloth,
    or an ``articulation`` (in a scene of its own)."""

    name: str = "scene"
    description: str = ""
    sim: SimConfig = Field(default_factory=SimConfig)
    gravity: Vec3 = list_default(0.0, -9.80665, 0.0)
    ground: GroundConfig = Field(default_factory=GroundConfig)
    contact: ContactConfig = Field(default_factory=ContactConfig)
    bodies: list[BodyConfig] = Field(default_factory=list)
    chains: list[ChainConfig] = Field(default_factory=list)
    soft_bodies: list[SoftBodyConfig] = Field(default_factory=list)
    cloths: list[ClothConfig] = Field(default_factory=list)
    articulation: Optional[ArticulationConfig] = None
    robot: Optional[RobotConfig] = None  # an MJCF/URDF model (wsim.robot), in a scene of its own
    gradcheck: GradcheckConfig = Field(default_factory=GradcheckConfig)

    @model_validator(mode="after")
    def _not_empty(self):
        if not (self.bodies or self.chains or self.soft_bodies or self.cloths or self.articulation or self.robot):
            raise ValueError("the scene has no bodies, chains, soft_bodies or cloths (nor an articulation): "
                             "nothing to simulate")
        if self.articulation and (self.bodies or self.chains or self.soft_bodies or self.cloths):
            # the articulation has its own reduced-coordinate solver, which exchanges no forces with the rest
            raise ValueError("an articulation cannot share a scene with bodies, chains, soft_bodies or cloths yet: "
                             "give it a scene of its own")
        if self.robot and (self.articulation or self.bodies or self.chains or self.soft_bodies or self.cloths):
            raise ValueError("a robot cannot share a scene with an articulation, bodies, chains, soft_bodies or "
                             "cloths yet: give it a scene of its own")
        if self.sim.graph and (self.sim.checkpoint_every is not None or self.articulation or self.robot):
            raise ValueError("sim.graph: captured graphs are for particle and rigid-body scenes, without "
                             "sim.checkpoint_every (a checkpointed rollout re-records its segments)")
        return self

    @model_validator(mode="after")
    def _rotor_schedules(self):
        intervals = self.sim.frames - 1
        for i, body in enumerate(self.bodies):
            for j, rotor in enumerate(body.rotors):
                if isinstance(rotor.thrust, list) and len(rotor.thrust) != intervals:
                    raise ValueError(f"bodies.{i}.rotors.{j}.thrust has {len(rotor.thrust)} values; give one number "
                                     f"or one value per frame interval: sim.frames - 1 = {intervals}")
        for i, link in enumerate(self.articulation.links if self.articulation else []):
            if isinstance(link.torque, list) and len(link.torque) != intervals:
                raise ValueError(f"articulation.links.{i}.torque has {len(link.torque)} values; give one number "
                                 f"or one value per frame interval: sim.frames - 1 = {intervals}")
        return self


def load_config(path: str | Path, overrides: list[str] | None = None, schema=SceneConfig):
    """Load a config (a path or a shipped name), apply ``--set`` overrides and validate it against
    ``schema``; every error names the file."""
    name = path
    path = resolve_config_path(path)
    data = load_raw(path)
    if schema is SceneConfig:
        check_kind(name, data, "scene")
    data = apply_overrides(data, overrides)
    try:
        return from_dict(schema, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
