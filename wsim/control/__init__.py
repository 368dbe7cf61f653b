"""Visuomotor control from a single target image (paper Section 4.2, Appendix E, Figs. 5-6).

``wsim run configs/control/control-walker.yaml`` (any config with ``task: control``) or
``python -m wsim.control CONFIG``: see :mod:`wsim.control.experiment`.
"""

from .config import ControlConfig, is_control_config, load_control, resolve_control_path
from .experiment import format_summary, run_control, run_method
from .policy import SinusoidPolicy, interval_times
from .tasks import ControlTask

__all__ = ["ControlConfig", "ControlTask", "SinusoidPolicy", "format_summary", "interval_times",
           "is_control_config", "load_control", "resolve_control_path", "run_control", "run_method"]
