"""The gradient watchdog: early warnings before a NaN, the culprit module, and `--on-anomaly` actions.

stats.py      robust rolling statistics (median, MAD, trends) in plain Python
signals.py    the early-warning rules over them, and StepStats, one step's host-side numbers
policy.py     the skip/rollback/stop state machine over StepStats, and the run's totals (no tensors)
groups.py     DETR's parameters and modules by group, in forward order
readout.py    what is read from the device: forward hooks and one host transfer per step
snapshots.py  the training state a rollback restores, copied to host memory
callback.py   GradientWatchdog, the training-loop callback that wires readout, policy and snapshots
bundle.py     reproduction bundles and re-runs of a failing step
"""

from detrdoctor.watchdog.callback import GradientWatchdog
from detrdoctor.watchdog.policy import ANOMALY_EXIT_CODE

__all__ = ["ANOMALY_EXIT_CODE", "GradientWatchdog"]
