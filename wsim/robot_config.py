"""The ``robot`` section of a scene config: an MJCF or URDF model file simulated as an articulation
(:mod:`wsim.robot`). Kept apart from :mod:`wsim.config` (which imports it) to keep that module short."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Union

from pydantic import Field, field_validator

from .config_io import ConfigModel

ROBOT_SUFFIXES = {".xml": "mjcf", ".mjcf": "mjcf", ".urdf": "urdf"}
# a hinge or slide joint takes one number; a ball joint 4 (q: quaternion w, x, y, z) or 3 (qd), a free joint 7 / 6
JointValue = Union[float, Annotated[list[float], Field(min_length=1, max_length=7)]]


class RobotConfig(ConfigModel):
    """A robot model from ``file`` (MJCF ``.xml``/``.mjcf`` or ``.urdf``; relative paths from the
    config's folder), compiled by MuJoCo (:mod:`wsim.models.articulation_io`) and turned from MuJoCo's Z
    up into wsim's Y up by a quarter turn about X, then moved by ``base_position`` (m, wsim frame).

    ``q`` / ``qd``: initial joint coordinates and rates by joint name (the rest keep the file's ``qpos0``
    and zero): one number for a hinge (rad) or slide (m) joint, ``[w, x, y, z]`` / 3 body-frame rates for a
    ball joint, 7 / 6 values (file frame) for a free joint. ``contacts``: the collision geoms (spheres,
    capsules, boxes) touch the scene's ground when it is enabled, with the scene's ``contact`` material.
    ``resolution``: segments of the round meshes. ``limit_ke``: overrides the joint-limit penalty
    stiffness derived from MuJoCo's solref. ``gravity_from_file``: use the file's gravity (turned to Y up;
    default) rather than the scene's ``gravity``."""

    file: str
    q: dict[str, JointValue] = Field(default_factory=dict)
    qd: dict[str, JointValue] = Field(default_factory=dict)
    base_position: Annotated[list[float], Field(min_length=3, max_length=3)] = Field(
        default_factory=lambda: [0.0, 0.0, 0.0])
    contacts: bool = True
    resolution: int = Field(8, ge=3)
    limit_ke: Optional[Annotated[float, Field(gt=0)]] = None
    gravity_from_file: bool = True

    @field_validator("file")
    @classmethod
    def _suffix(cls, file):
        suffix = Path(file).suffix.lower()
        if suffix not in ROBOT_SUFFIXES:
            raise ValueError(f"the model file '{file}' must be MJCF (.xml, .mjcf) or URDF (.urdf), not "
                             f"'{suffix or 'no extension'}'")
        return file
