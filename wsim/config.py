"""Config files: a typed schema, YAML loading, ``--set key=value`` overrides and clear errors.

A config is a YAML mapping checked against the dataclass schema below; every key has a default, so
a config lists only what it changes. ``--set bodies.0.density=500`` overrides any key (dotted path,
list items by index, values parsed as YAML). Unknown keys, wrong types and missing files raise
:class:`~wsim.errors.ConfigError` naming the key path and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError

Vector = list[float]


@dataclass
class SimConfig:
    """Time stepping: ``dt`` physics step (s); ``substeps`` physics steps per rendered frame;
    ``frames`` rendered frames including the initial state (the rollout lasts (frames-1)*substeps*dt)."""

    dt: float = 1.0e-3
    substeps: int = 10
    frames: int = 61


@dataclass
class GroundConfig:
    """The ground plane Y = ``height`` (m)."""

    enabled: bool = True
    height: float = 0.0


@dataclass
class ContactConfig:
    """Global contact material (paper theta = [ke, kd, kf, mu]); ``margin`` (m) is a contact thickness;
    ``smoothing`` (m) makes the onset of contact C1 (0: the paper's exact hinge; see wsim.models.contact)."""

    ke: float = 1.0e4
    kd: float = 100.0
    kf: float = 1.0e3
    mu: float = 0.5
    margin: float = 0.0
    smoothing: float = 1.0e-2


@dataclass
class ContactOverride:
    """Per-body contact material; unset values fall back to the global ``contact`` section."""

    ke: typing.Optional[float] = None
    kd: typing.Optional[float] = None
    kf: typing.Optional[float] = None
    mu: typing.Optional[float] = None


@dataclass
class ShapeConfig:
    """A body's surface: a primitive ``type`` (box, sphere, cylinder, cone, capsule, torus) with its
    ``size`` (see :func:`wsim.geometry.primitive`), or a mesh ``file`` (OBJ/PLY/STL...); ``scale`` per axis."""

    type: str = "box"
    size: typing.Union[float, Vector] = 1.0
    file: typing.Optional[str] = None
    scale: typing.Union[float, Vector] = 1.0
    resolution: int = 16


@dataclass
class PushConfig:
    """A known impulse (N s, world) applied at ``point`` (body frame, m from the centre of mass) over
    ``[start, start + duration)`` seconds."""

    impulse: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    point: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    start: float = 0.0
    duration: float = 0.0


@dataclass
class BodyConfig:
    """A rigid body. Give ``density`` (kg/m^3) or ``mass`` (kg); ``rotation`` is a quaternion (x, y, z, w)."""

    name: typing.Optional[str] = None
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    density: typing.Optional[float] = 1000.0
    mass: typing.Optional[float] = None
    position: Vector = field(default_factory=lambda: [0.0, 1.0, 0.0])
    rotation: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0, 1.0])
    velocity: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    angular_velocity: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    contact: ContactOverride = field(default_factory=ContactOverride)
    push: PushConfig = field(default_factory=PushConfig)
    color: Vector = field(default_factory=lambda: [0.8, 0.3, 0.2])


@dataclass
class ChainConfig:
    """A mass-spring chain of ``count`` particles from ``start`` to ``end`` (m); ``mass`` per particle (kg),
    springs of ``stiffness`` (N/m) and ``damping`` (N s/m); ``pin_first`` fixes the first particle."""

    count: int = 10
    start: Vector = field(default_factory=lambda: [0.0, 1.5, 0.0])
    end: Vector = field(default_factory=lambda: [1.0, 1.5, 0.0])
    mass: float = 0.1
    stiffness: float = 500.0
    damping: float = 0.5
    radius: float = 0.02
    pin_first: bool = True
    velocity: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])


@dataclass
class ParticleSelection:
    """Particles of a soft body or cloth: explicit mesh vertex ``indices``, and/or every vertex whose
    (placed, world) coordinate along ``axis`` (x, y or z) is ``below`` / ``above`` a value (m)."""

    indices: list[int] = field(default_factory=list)
    axis: typing.Optional[str] = None
    below: typing.Optional[float] = None
    above: typing.Optional[float] = None


@dataclass
class PinConfig(ParticleSelection):
    """Which particles of a soft body or cloth stay fixed (a :class:`ParticleSelection`)."""


@dataclass
class ParticlePushConfig(ParticleSelection):
    """A known push on a soft body: the total ``impulse`` (N s, world frame) split equally over the
    selected particles (a :class:`ParticleSelection`), delivered over ``[start, start + duration)`` s."""

    impulse: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    start: float = 0.0
    duration: float = 0.0


@dataclass
class TetMeshConfig:
    """A tetrahedral mesh: ``type`` box (``size`` [3] m, ``cells`` [3]), beam (``size`` = [length, height,
    width] along x, y, z, ``cells``), sphere (``size`` = radius, ``resolution``), gear (``size`` = radius,
    1080 elements by default), or ``file`` (a tetrahedral mesh meshio reads, or a closed triangle
    surface (OBJ/PLY/STL/OFF/glTF) tetrahedralised with tetgen, elements up to ``max_volume`` m^3)."""

    type: str = "box"
    size: typing.Union[float, Vector] = 0.2
    cells: list[int] = field(default_factory=lambda: [2, 2, 2])
    resolution: int = 3
    file: typing.Optional[str] = None
    max_volume: typing.Optional[float] = None


@dataclass
class SoftBodyConfig:
    """A deformable solid (tetrahedral stable Neo-Hookean FEM). Material: Lame ``mu``/``lam`` (Pa) or
    ``young``/``poisson`` (E in Pa, 0 <= nu < 0.5; overrides mu/lam when given); ``damping`` (Pa s);
    ``activation`` (alpha, preferred volume ratio 1 - alpha). Mass: ``density`` (kg/m^3, lumped) or
    ``particle_mass`` (kg each). ``radius`` (m) is the particles' contact thickness. ``push``: a known
    impulse on some of its particles."""

    name: typing.Optional[str] = None
    mesh: TetMeshConfig = field(default_factory=TetMeshConfig)
    position: Vector = field(default_factory=lambda: [0.0, 0.5, 0.0])
    rotation: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0, 1.0])
    scale: typing.Union[float, Vector] = 1.0
    velocity: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    density: typing.Optional[float] = 1000.0
    particle_mass: typing.Optional[float] = None
    mu: float = 1.0e4
    lam: float = 1.0e4
    young: typing.Optional[float] = None
    poisson: typing.Optional[float] = None
    damping: float = 0.0
    activation: float = 0.0
    radius: float = 0.0
    pin: PinConfig = field(default_factory=PinConfig)
    push: ParticlePushConfig = field(default_factory=ParticlePushConfig)
    contact: ContactOverride = field(default_factory=ContactOverride)
    color: Vector = field(default_factory=lambda: [0.3, 0.7, 0.4])


@dataclass
class ClothConfig:
    """A cloth: a grid of ``size`` [2] m in the XZ plane with ``cells`` [2] quads (2 triangles each) or a
    triangle mesh ``file``; placed by ``position``/``rotation`` (quaternion x, y, z, w)/``scale``. Mass:
    ``density`` (kg/m^2) or ``particle_mass`` (kg each). Membrane Lame ``mu``/``lam`` (N/m) and
    ``damping`` (N s/m); ``bending_stiffness`` (N m) and ``bending_damping`` (N m s); air ``drag``/``lift``
    coefficients (kg/m^3). ``pin`` fixes vertices; ``anchors`` ties listed vertices to their initial
    positions with springs of ``anchor_stiffness`` (N/m) and ``anchor_damping`` (N s/m)."""

    name: typing.Optional[str] = None
    size: Vector = field(default_factory=lambda: [1.0, 1.0])
    cells: list[int] = field(default_factory=lambda: [16, 16])
    file: typing.Optional[str] = None
    position: Vector = field(default_factory=lambda: [0.0, 1.0, 0.0])
    rotation: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0, 1.0])
    scale: typing.Union[float, Vector] = 1.0
    velocity: Vector = field(default_factory=lambda: [0.0, 0.0, 0.0])
    density: typing.Optional[float] = 0.2
    particle_mass: typing.Optional[float] = None
    mu: float = 20.0
    lam: float = 40.0
    damping: float = 0.02
    bending_stiffness: float = 1.0e-4
    bending_damping: float = 1.0e-6
    drag: float = 0.0
    lift: float = 0.0
    radius: float = 0.005
    pin: PinConfig = field(default_factory=PinConfig)
    anchors: list[int] = field(default_factory=list)
    anchor_stiffness: float = 100.0
    anchor_damping: float = 0.1
    contact: ContactOverride = field(default_factory=ContactOverride)
    color: Vector = field(default_factory=lambda: [0.8, 0.7, 0.2])


@dataclass
class GradcheckConfig:
    """``wsim gradcheck``: parameters to check, relative finite-difference step ``eps``, the relative
    error ``tolerance``, the ``seed`` of the random loss weights and probe directions, and ``frames``,
    the horizon the check differentiates through (default: the whole rollout). A shorter horizon is for
    rollouts that turn chaotic (a cloth buckling as it drapes), where no finite difference can agree
    with any gradient over the full length."""

    params: list[str] = field(default_factory=list)
    eps: float = 1.0e-2
    tolerance: float = 1.0e-2
    seed: int = 0
    frames: typing.Optional[int] = None


@dataclass
class SceneConfig:
    """A scene for ``wsim simulate`` and ``wsim gradcheck``."""

    name: str = "scene"
    description: str = ""
    sim: SimConfig = field(default_factory=SimConfig)
    gravity: Vector = field(default_factory=lambda: [0.0, -9.80665, 0.0])
    ground: GroundConfig = field(default_factory=GroundConfig)
    contact: ContactConfig = field(default_factory=ContactConfig)
    bodies: list[BodyConfig] = field(default_factory=list)
    chains: list[ChainConfig] = field(default_factory=list)
    soft_bodies: list[SoftBodyConfig] = field(default_factory=list)
    cloths: list[ClothConfig] = field(default_factory=list)
    gradcheck: GradcheckConfig = field(default_factory=GradcheckConfig)


# -- conversion --------------------------------------------------------------------------------------
def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if origin is list:
        return f"list of {_type_name(typing.get_args(kind)[0])}"
    if dataclasses.is_dataclass(kind):
        return "mapping"
    return {float: "number", int: "integer", bool: "true/false", str: "string", type(None): "null"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _convert(kind, value, path: str):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _convert(option, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{path}' must be {_type_name(kind)}, got {value!r}")
    if kind is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(kind):
        return from_dict(kind, value, path)
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(kind)
            return [_convert(item, v, f"{path}.{i}") for i, v in enumerate(value)]
    elif origin is dict or kind is dict:
        if isinstance(value, dict):
            return dict(value)
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{path}' must be {_type_name(kind)}, got {value!r}")


def from_dict(cls, data, path: str = ""):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys (named with their full path)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{path or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'; allowed keys here: {', '.join(names)}")
        values[key] = _convert(hints[key], value, full)
    return cls(**values)


def to_dict(config) -> dict:
    """A plain (YAML/JSON-ready) dict of a config dataclass."""
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw config mapping in place."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set key '{key}' is malformed")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = data
        for depth, part in enumerate(parts[:-1]):
            here = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = _list_item(node, part, here)
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--set {key}: '{here}' is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            index = _index(node, last, key)
            node[index] = value
        else:
            node[last] = value
    return data


def _index(items: list, part: str, path: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"'{path}' indexes a list: use a number in [0, {len(items) - 1}]") from None
    if not 0 <= index < len(items):
        raise ConfigError(f"'{path}' is out of range: the list has {len(items)} item(s)")
    return index


def _list_item(items: list, part: str, path: str):
    index = _index(items, part, path)
    if items[index] is None:
        items[index] = {}
    return items[index]


def load_raw(path: str | Path) -> dict:
    """Read a YAML config file into a mapping (``ConfigError`` for a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at its top level")
    return data


def resolve_config_path(name: str | Path) -> Path:
    """A config given by path, or by name from the shipped ``configs/`` folder (``box-drop``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parent.parent / "configs"
    for candidate in (shipped / name, shipped / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file '{name}' does not exist (nor as configs/{Path(name).stem}.yaml)")


def load_config(path: str | Path, overrides: list[str] | None = None, schema=SceneConfig):
    """Load, override and validate a config file against ``schema``."""
    path = resolve_config_path(path)
    data = apply_overrides(load_raw(path), overrides)
    try:
        return from_dict(schema, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
