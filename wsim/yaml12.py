"""YAML 1.2 scalars for config files and ``--set`` values, on PyYAML's safe loader.

PyYAML follows YAML 1.1, where ``yes/no/on/off/y/n`` are booleans (``name: no`` became False, and the
key ``true:`` of a parameter's ground truth became the boolean True), ``010`` is octal, ``1:30`` is
5400 and ``2001-12-14`` a date. :func:`parse_yaml` reads the YAML 1.2 core schema instead.
"""

from __future__ import annotations

import re

import yaml


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema: only true/false are booleans (YAML 1.1 also
    reads yes/no/on/off/y/n, so ``name: no`` became False), no sexagesimal or octal-by-leading-zero
    numbers, no implicit timestamps. Mapping keys are always strings (``true:``, the key of a
    parameter's ground truth, stays "true"), and a key given twice is an error."""

    yaml_implicit_resolvers: dict = {}

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep)
        own = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge"]
        for key in own:
            if own.count(key) > 1:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", node.start_mark)
        self.flatten_mapping(node)
        mapping = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a name, not a "
                                                        "list or mapping", key_node.start_mark)
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml12_bool(self, node):
        text = self.construct_scalar(node).lower()
        if text not in ("true", "false"):
            raise yaml.constructor.ConstructorError(None, None, f"'{text}' is not true or false", node.start_mark)
        return text == "true"

    def construct_yaml12_int(self, node):
        text = self.construct_scalar(node)
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
        try:
            return sign * int(digits[2:] if base != 10 else digits, base)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"'{text}' is not an integer", node.start_mark) from None

    def construct_yaml12_float(self, node):
        text = self.construct_scalar(node).lower()
        if text.endswith(".inf"):
            return float("-inf") if text.startswith("-") else float("inf")
        if text == ".nan":
            return float("nan")
        try:
            return float(text)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"'{text}' is not a number", node.start_mark) from None


_RESOLVERS = [  # (tag, pattern, first characters); int before float so that 10 is an int
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("merge", r"^(?:<<)$", "<"),
]
for _tag, _pattern, _first in _RESOLVERS:
    _Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))
_Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _Yaml12Loader.construct_yaml12_bool)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _Yaml12Loader.construct_yaml12_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _Yaml12Loader.construct_yaml12_float)


def parse_yaml(text: str):
    """Parse YAML text with YAML 1.2 scalars (see :class:`_Yaml12Loader`); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader subclass)
