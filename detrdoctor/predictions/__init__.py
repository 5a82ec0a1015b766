"""What a model's outputs look like and what holds them down: drawn boxes and evaluate's judgements.

draw.py             boxes on images, one drawer for `predict` and `triage` (colour per class or per layer)
ap_breakdown.py     `evaluate --breakdown`: AP against IoU, labels ignored, spare and missed boxes
error_types.py      `evaluate --errors`: which of TIDE's error types costs AP50, and its usual cause
confusion_table.py  `evaluate --confusion`: the confusion matrix as a table
eval_figure.py      `evaluate --out`: precision–recall curves and the confusion matrix as a figure

The findings are verdict-core checks (`detrdoctor.verdict`) in evaluate's {"check", "status", "message"} form.
"""
