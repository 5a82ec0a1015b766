"""The dataset doctor: the one judgement of a dataset against the model that will train on it.

doctor.py  collect the facts (both splits' annotations, a sample of image headers) and judge them: `data.*` checks

Its rows are verdict-core checks (`detrdoctor.verdict`). env-check (its dataset probe), `train` (before the first
step, through `detrdoctor.callbacks.data_gate`) and `triage` call it; it imports none of them.
"""
