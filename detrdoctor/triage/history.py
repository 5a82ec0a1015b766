"""Run history: pure rules over the records of a run's metrics.jsonl (step, eval and event records)."""

from __future__ import annotations

from collections import Counter

from detr.engine.metrics import EvalRecord, EventRecord, MetricsRecord, StepRecord, is_eval, is_event, is_step
from detrdoctor.fmt import finite_floats
from detrdoctor.triage import triage_check
from detrdoctor.triage.schedule import share
from detrdoctor.verdict import Check

MIN_STEPS = 30  # step records needed before a trend means anything
PLATEAU = 0.97  # the last third of the run's loss above this share of the middle third: no progress
CLASS_ERROR_STUCK = 90.0  # % of matched queries given the wrong class, late in the run
AP_ZERO = 0.01
LOSS_FELL = 0.8  # the last third's loss below this share of the first third's
DATA_WAIT = 0.2  # share of the step spent waiting for the next batch
TOO_FEW = 10


def thirds(values: list[float]) -> tuple[float, float, float]:
    """The means of the first, middle and last third."""
    n = len(values) // 3
    parts = (values[:n], values[n:-n], values[-n:])
    return tuple(sum(p) / len(p) for p in parts)  # type: ignore[return-value]


def judge_history(
    records: list[MetricsRecord], lr_drop: int, epochs: int, needed: tuple[int, str] | None
) -> list[Check]:
    """run.* checks; `needed` is (steps, why) from the schedule rules, None when the dataset is not at hand."""
    steps = [r for r in records if is_step(r)]
    evals = [r for r in records if is_eval(r)]
    events = [r for r in records if is_event(r)]
    return [
        rule_plateau(steps),
        rule_class_error(steps),
        rule_eval_vs_loss(steps, evals),
        rule_lr(steps, lr_drop, epochs),
        rule_events(events),
        rule_data_wait(steps),
        rule_steps(steps, needed),
    ]


def rule_plateau(steps: list[StepRecord]) -> Check:
    losses = finite_floats([r.get("loss") for r in steps])
    if len(losses) < MIN_STEPS:
        return triage_check("run", "run.plateau", "skip", message=f"{len(losses)} step records, need {MIN_STEPS}")
    first, middle, last = thirds(losses)
    found = f"loss {first:.3f} → {middle:.3f} → {last:.3f} (by thirds)"
    if last >= PLATEAU * middle:
        return triage_check(
            "run",
            "run.plateau",
            "warn",
            found,
            f"last third < {PLATEAU:.0%} of the middle",
            "drop the lr (lr_drop) if it has not dropped; run `detrdoctor triage` to see if the model can fit at all",
            "the loss stopped falling in the last third of the run",
        )
    return triage_check("run", "run.plateau", "pass", found, f"last third < {PLATEAU:.0%} of the middle")


def rule_class_error(steps: list[StepRecord]) -> Check:
    errors = finite_floats([r.get("class_error") for r in steps])
    if not errors:
        return triage_check("run", "run.class_error", "skip", message="no class_error in the step records")
    tail = errors[-max(1, len(errors) // 10) :]
    late = sum(tail) / len(tail)
    found, expected = f"{late:.0f}% over the last {len(tail)} records", f"< {CLASS_ERROR_STUCK:.0f}%"
    if late >= CLASS_ERROR_STUCK:
        return triage_check(
            "run",
            "run.class_error",
            "fail",
            found,
            expected,
            "check category ids against num_classes (`detrdoctor triage` data rows)",
            "the matched queries almost never get the right class: category ids that do not fit "
            "num_classes, or labels that collide with the no-object class",
        )
    return triage_check("run", "run.class_error", "pass", found, expected)


def rule_eval_vs_loss(steps: list[StepRecord], evals: list[EvalRecord]) -> Check:
    ap50 = finite_floats([e.get("AP50") for e in evals])
    if not ap50:
        return triage_check("run", "run.eval_vs_loss", "skip", message="no evaluation in the run")
    losses = finite_floats([r.get("loss") for r in steps])
    best = max(ap50)
    found = f"best AP50 {best:.3f} in {len(ap50)} evaluations"
    if best > AP_ZERO or len(losses) < 3:
        return triage_check("run", "run.eval_vs_loss", "pass", found, f"AP50 > {AP_ZERO}")
    first, _, last = thirds(losses) if len(losses) >= 3 else (losses[0], 0, losses[-1])
    if last < LOSS_FELL * first:
        return triage_check(
            "run",
            "run.eval_vs_loss",
            "fail",
            f"{found} while the loss fell {first:.3f} → {last:.3f}",
            f"AP50 > {AP_ZERO}",
            "compare the val annotations with the train ones (category ids, bbox format): "
            "`detrdoctor evaluate --weights CKPT --breakdown`",
            "training learns something evaluation does not reward: the val split's category ids or box format "
            "differ from the training split's, or the run is far too short (see run.steps)",
        )
    return triage_check(
        "run",
        "run.eval_vs_loss",
        "warn",
        f"{found}, loss {first:.3f} → {last:.3f}",
        f"AP50 > {AP_ZERO}",
        "run `detrdoctor triage`: can the model fit a few images?",
        "AP stays 0 and the loss does not fall either: nothing is being learned",
    )


def rule_lr(steps: list[StepRecord], lr_drop: int, epochs: int) -> Check:
    lrs = finite_floats([r.get("lr") for r in steps])
    if not lrs:
        return triage_check("run", "run.lr", "skip", message="no lr in the step records")
    last_epoch = max(int(r.get("epoch", 0)) for r in steps)
    found = f"lr {lrs[0]:.2g} → {lrs[-1]:.2g} by epoch {last_epoch + 1}"
    expected = f"drop after epoch {lr_drop}"
    if min(lrs) < 0.5 * lrs[0]:
        return triage_check("run", "run.lr", "pass", found, expected)
    if last_epoch + 1 > lr_drop:
        return triage_check(
            "run",
            "run.lr",
            "fail",
            found,
            expected,
            "check [train] lr_drop in the run's config.toml",
            f"the run is past epoch {lr_drop} and the lr never dropped",
        )
    if last_epoch + 1 >= epochs or lr_drop >= epochs:
        return triage_check(
            "run",
            "run.lr",
            "warn",
            found,
            expected,
            f"[train] lr_drop = {max(1, epochs * 2 // 3)}",
            "the lr never drops in this run (lr_drop ≥ epochs): the paper's drop gives several AP points",
        )
    return triage_check("run", "run.lr", "pass", found, f"{expected} (not reached yet)")


def rule_events(events: list[EventRecord]) -> Check:
    troubles = [e for e in events if e.get("severity") in ("warning", "error")]
    kinds = Counter(e.get("kind", "?") for e in troubles)
    found = ", ".join(f"{k} ×{n}" for k, n in kinds.most_common(4)) or "none"
    stopped = [e for e in troubles if e.get("kind") == "stopped"]
    if stopped:
        return triage_check(
            "run",
            "run.events",
            "fail",
            found,
            "none",
            "see the event; `detrdoctor triage` on the run's config",
            f"the run was stopped: {stopped[-1].get('message', '')}",
        )
    if troubles:
        first = troubles[0]
        return triage_check(
            "run",
            "run.events",
            "warn",
            found,
            "none",
            "lower the lr or turn AMP off if non-finite or spike events repeat",
            f"first at step {first.get('step')}: {first.get('kind')}: {first.get('message', '')}",
        )
    return triage_check("run", "run.events", "pass", found, "none")


def rule_data_wait(steps: list[StepRecord]) -> Check:
    timed = [r for r in steps[len(steps) // 20 :] if r.get("step_time_s") and r.get("data_time_s") is not None]
    if not timed:
        return triage_check("run", "run.data_wait", "skip", message="no step timings in the records")
    share = sum(r["data_time_s"] for r in timed) / sum(r["step_time_s"] for r in timed)
    found, expected = f"{share:.0%} of each step waiting for data", f"< {DATA_WAIT:.0%}"
    if share > DATA_WAIT:
        return triage_check(
            "run",
            "run.data_wait",
            "warn",
            found,
            expected,
            "detrdoctor loader-bench --profile RUN_DIR/config.toml",
            "the accelerator waits for the data loader: more workers, pinned memory or smaller images",
        )
    return triage_check("run", "run.data_wait", "pass", found, expected)


def rule_steps(steps: list[StepRecord], needed: tuple[int, str] | None) -> Check:
    if not steps:
        return triage_check("run", "run.steps", "skip", message="no step records")
    done = max(int(r.get("step", 0)) for r in steps)
    if needed is None:
        return triage_check(
            "run",
            "run.steps",
            "skip",
            f"{done:,} steps done",
            message=f"{done:,} steps done; the dataset is not at hand to say how many are needed",
        )
    need, why = needed
    found, expected = f"{done:,} steps done", f"≥ {need:,} ({why})"
    if done >= need:
        return triage_check("run", "run.steps", "pass", found, expected)
    return triage_check(
        "run",
        "run.steps",
        "fail" if done * TOO_FEW < need else "warn",
        found,
        expected,
        "train longer (see schedule.steps)",
        f"{share(done, need)} of what DETR needs from this starting point: AP stays low until then",
    )
