"""Reading configs: files and ``--set`` overrides (YAML 1.2 scalars, :mod:`wsim.yaml12`), pydantic errors as :class:`ConfigError`, and
the one resolver that finds a config by path or by the name of a shipped one.

Every config kind (scene, experiment, control task) is a pydantic model built on :class:`ConfigModel`;
this module holds what they share, so that :mod:`wsim.config`, :mod:`wsim.sysid.config` and
:mod:`wsim.control.config` only declare their schemas.
"""

from __future__ import annotations

import importlib.resources
import json
import types
import typing
from pathlib import Path
from typing import NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .yaml12 import parse_yaml

#: sub-folders of the shipped ``configs/`` folder searched for a config name, in this order
SHIPPED_FOLDERS = ("", "experiments", "control")


class ConfigModel(BaseModel):
    """Base of every config schema: unknown keys are errors, no silent type coercion ("1" is not 1,
    yes is not true), numbers must be finite. Attributes stay assignable without re-validation, since
    code edits loaded configs (a randomised body, a shorter horizon)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def load_raw(path: str | Path) -> dict:
    """Read a YAML config file into a mapping (``ConfigError`` for a missing, empty or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = parse_yaml(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file '{path}' could not be read: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from None
    if data is None:
        raise ConfigError(f"config file '{path}' is empty: a scene lists bodies, chains, soft_bodies or cloths, "
                          "an experiment its params, a control task has task: control (`wsim list` shows examples)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at its top level, got {type(data).__name__}")
    return data


# -- overrides -------------------------------------------------------------------------------------
def expand_presets(data: dict, overrides: list[str] | None) -> list[str]:
    """The ``--set`` overrides with each ``preset=NAME`` replaced by that preset's settings, taken before
    the others so that an explicit ``--set`` still wins. A config's ``presets`` section (removed from
    ``data`` here) names sets of dotted keys and values, e.g. the full-size settings of an experiment
    for a GPU next to its CPU-sized defaults: ``presets: {gpu: {render.resolution: 128}}``."""
    presets = data.pop("presets", None) or {}
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ConfigError("presets must map each name to a mapping of dotted keys to values")
    expanded, rest = [], []
    for item in overrides or []:
        key, _, name = item.partition("=")
        if key.strip() != "preset":
            rest.append(item)
            continue
        if name.strip() not in presets:
            known = ", ".join(sorted(presets)) or "none in this config"
            raise ConfigError(f"--set preset: '{name.strip()}' is not a preset of this config ({known})")
        expanded += [f"{k}={json.dumps(v)}" for k, v in presets[name.strip()].items()]
    return expanded + rest


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML 1.2) to a raw config mapping in place."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set key '{key}' is malformed")
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {key}: the value '{raw}' is not valid YAML: {error}") from None
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
            node[_index(node, last, key)] = value
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


# -- validation ------------------------------------------------------------------------------------
def from_dict(cls, data, path: str = "", context: dict | None = None):
    """Validate a mapping against schema ``cls``; errors name the dotted key path (prefixed by ``path``).
    ``context``: pydantic's validation context (e.g. ``{"base": folder}`` for files a config names)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{path or '<root>'}' must be a mapping, got {data!r}")
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as error:
        raise ConfigError(describe_errors(error, cls, path)) from None


def to_dict(config) -> dict:
    """A plain (YAML/JSON-ready) dict of a config."""
    return config.model_dump()


class _Located(NamedTuple):
    path: str                 # the dotted key path, union member tags left out
    annotation: object        # the type declared there
    field: object             # its pydantic FieldInfo when the path ends at a model field
    owner: object             # the model holding the last key (for unknown keys: which keys it allows)
    group: str                # the union this error belongs to (its path), else the path itself
    group_annotation: object


def _strip(annotation):
    """The annotation without ``Annotated`` and without an ``Optional``'s None."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _locate(schema, loc: tuple, prefix: str) -> _Located:
    parts = [prefix] if prefix else []
    annotation, field, owner, group, group_annotation = schema, None, schema, None, None
    for item in loc:
        bare = _strip(annotation)
        if typing.get_origin(bare) in (typing.Union, types.UnionType) and isinstance(item, str):
            # pydantic tags each member of a union in the location ('float', 'list[float]')
            members = [a for a in typing.get_args(bare) if a is not type(None)]
            is_list = [typing.get_origin(_strip(m)) is list for m in members]
            pick = is_list.index(True) if item.startswith("list") and True in is_list else (
                is_list.index(False) if False in is_list else 0)
            group, group_annotation = ".".join(parts), annotation
            annotation, field = members[pick], None
            continue
        parts.append(str(item))
        if isinstance(bare, type) and issubclass(bare, BaseModel):
            owner = bare
            field = bare.model_fields.get(item)
            annotation = field.annotation if field is not None else None
        elif typing.get_origin(bare) in (list, dict):
            annotation, field = typing.get_args(bare)[-1] if typing.get_args(bare) else None, None
        else:
            annotation, field = None, None
    path = ".".join(parts)
    return _Located(path, annotation, field, owner, group if group is not None else path,
                    group_annotation if group is not None else annotation)


def _type_name(annotation) -> str:
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if origin is dict or annotation is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "mapping"
    names = {float: "number", int: "integer", bool: "true/false", str: "string", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(located: _Located) -> dict:
    """gt/ge/lt/le/min_length/max_length declared at the error's key (field or list item)."""
    found = []
    if located.field is not None:
        found += located.field.metadata
    annotation = located.annotation
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            for extra in typing.get_args(annotation)[1:]:
                found += getattr(extra, "metadata", [extra])
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType) and typing.get_args(annotation).count(type(None)) == 1 \
                and len(typing.get_args(annotation)) == 2:
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            break
    out = {}
    for item in found:
        for name in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            if getattr(item, name, None) is not None:
                out[name] = getattr(item, name)
    return out


def _interval(bounds: dict) -> str:
    low = bounds.get("gt", bounds.get("ge"))
    high = bounds.get("lt", bounds.get("le"))
    return (("[" if "ge" in bounds else "(") + ("-inf" if low is None else f"{low:g}") + ", "
            + ("inf" if high is None else f"{high:g}") + ("]" if "le" in bounds else ")"))


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(error: dict, located: _Located) -> str:
    kind, key, value = error["type"], located.path, error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = ", ".join(located.owner.model_fields) if isinstance(located.owner, type) else "?"
        return f"unknown config key '{key}'; allowed keys here: {allowed}"
    if kind == "missing":
        note = located.field.description if located.field is not None and located.field.description else ""
        return f"config key '{key}' is required" + (f": {note}" if note else "")
    if kind == "literal_error":
        return f"config key '{key}' must be one of {ctx.get('expected', '?')}, got {_shown(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = {k: v for k, v in _constraints(located).items() if k in ("gt", "ge", "lt", "le")} or ctx
        return f"config key '{key}' must lie in {_interval(bounds)}, got {_shown(value)}"
    if kind in ("too_short", "too_long"):
        bounds = _constraints(located)
        low, high = bounds.get("min_length", ctx.get("min_length")), bounds.get("max_length", ctx.get("max_length"))
        count = f"{low}" if low == high else f"at least {low}" if high is None else \
            f"at most {high}" if low is None else f"{low} to {high}"
        return f"config key '{key}' must have {count} items, got {ctx.get('actual_length', '?')}: {_shown(value)}"
    if kind == "finite_number":
        return f"config key '{key}' must be a finite number, got {_shown(value)}"
    if kind in ("value_error", "assertion_error"):
        text = error["msg"].split(", ", 1)[1] if error["msg"].startswith(("Value error, ", "Assertion failed, ")) \
            else error["msg"]
        return f"{key}: {text}" if key else text
    if _is_type_error(error):
        # a union's own error names every type it takes; an error inside one of its members, that member's
        annotation = located.group_annotation if located.path == located.group else located.annotation
        return f"config key '{key}' must be {_type_name(annotation)}, got {_shown(value)}"
    return f"config key '{key}': {error['msg']}, got {_shown(value)}"


def _is_type_error(error: dict) -> bool:
    kind = error["type"]
    return kind.endswith("_type") or kind.endswith("_parsing")


def describe_errors(error: ValidationError, schema, prefix: str = "") -> str:
    """One line per bad key: its dotted path, what is allowed there and what was given. For a key that
    may take several types (a number or a list), only the errors of the type that was meant are
    reported (a list with a bad item: that item), and a value of none of them is one line naming every
    type."""
    groups: dict[str, list] = {}
    for item in error.errors(include_url=False):
        located = _locate(schema, item["loc"], prefix)
        groups.setdefault(located.group, []).append((item, located))
    lines = []
    for entries in groups.values():
        meant = [e for e in entries if not _is_type_error(e[0])] or \
            [e for e in entries if e[1].path != e[1].group] or entries[:1]
        for item, located in meant:
            text = _message(item, located)
            if text not in lines:
                lines.append(text)
    return "\n  ".join(lines)


# -- finding configs -------------------------------------------------------------------------------
def shipped_root() -> Path:
    """The folder of the configs shipped with wsim (package data ``wsim.configs``; in a source checkout
    that is not installed, the ``configs/`` folder beside the package)."""
    try:
        return Path(str(importlib.resources.files("wsim.configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A config given by path, or by the name of a shipped config of any kind (``box-drop``,
    ``rigid-mass``, ``control-walker``; ``.yaml`` optional)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config '{name}' is a folder, not a YAML file")
    root = shipped_root()
    stem = str(name)[:-5] if str(name).endswith(".yaml") else str(name)
    for folder in SHIPPED_FOLDERS:
        candidate = root / folder / f"{stem}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file '{name}' does not exist, nor is it the name of a shipped config "
                      "(`wsim list` shows them)")


_EXPERIMENT_KEYS = {"params", "scene", "method", "optim", "loss", "randomize", "target", "uncertainty", "paper"}


def config_kind(data: dict) -> str:
    """What a raw config is: ``control`` (``task: control``), ``experiment`` (it has ``params`` or another
    key only experiments have) or ``scene`` (the rest)."""
    if data.get("task") == "control":
        return "control"
    if _EXPERIMENT_KEYS & set(data):
        return "experiment"
    return "scene"


_RUN_WITH = {"scene": "wsim simulate", "experiment": "wsim run", "control": "wsim run"}
_KIND_NAMES = {"scene": "a scene", "experiment": "an experiment", "control": "a control task"}


def check_kind(name, data: dict, wanted: str) -> None:
    """Raise a ConfigError pointing to the right command when the config ``name`` is not a ``wanted``."""
    kind = config_kind(data)
    if kind != wanted:
        raise ConfigError(f"'{name}' is {_KIND_NAMES[kind]}, not {_KIND_NAMES[wanted]}: run it with "
                          f"`{_RUN_WITH[kind]} {name}` (`wsim list` shows every shipped config and its command)")


class ShippedConfig(NamedTuple):
    name: str
    kind: str
    description: str
    path: Path


def shipped_configs() -> list[ShippedConfig]:
    """Every shipped config with its kind (from its content) and its ``description``."""
    root = shipped_root()
    out = []
    for folder in SHIPPED_FOLDERS:
        for path in sorted((root / folder).glob("*.yaml")):
            data = load_raw(path)
            out.append(ShippedConfig(path.stem, config_kind(data), str(data.get("description") or ""), path))
    return out
