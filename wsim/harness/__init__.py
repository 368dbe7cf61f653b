"""The experiment harness shared by every experiment family (system identification, control, ...):
seeded instances, config fingerprints, safe checkpoints, resume, progress and summaries
(:mod:`wsim.harness.runner`, :mod:`wsim.harness.checkpoint`). The optimisers live in :mod:`wsim.optim`."""

from .checkpoint import fingerprint, load_checkpoint, save_checkpoint, to_device
from .runner import Experiment, RunOptions, finished_result, output_folder, progress_bar, run_experiment

__all__ = ["Experiment", "RunOptions", "finished_result", "fingerprint", "load_checkpoint", "output_folder",
           "progress_bar", "run_experiment", "save_checkpoint", "to_device"]
