"""The configs shipped with wsim, installed as the package ``wsim.configs`` (see pyproject.toml).

Scenes (``*.yaml``), experiments (``experiments/``) and control tasks (``control/``); find one with
:func:`wsim.config_io.resolve_config_path` or list them with ``wsim list``.
"""
