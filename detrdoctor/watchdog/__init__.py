"""The gradient watchdog: early warnings before a NaN, the culprit module, and `--on-anomaly` actions.

stats.py     robust rolling statistics (median, MAD, trends) in plain Python
signals.py   the early-warning rules over them
groups.py    DETR's parameters and modules by group, in forward order
callback.py  GradientWatchdog, the training-loop callback
bundle.py    reproduction bundles and re-runs of a failing step
"""

from detrdoctor.watchdog.callback import ANOMALY_EXIT_CODE, GradientWatchdog

__all__ = ["ANOMALY_EXIT_CODE", "GradientWatchdog"]
