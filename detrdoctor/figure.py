"""`plot --out`: one matplotlib figure of runs overlaid by step (Agg canvas: no display needed)."""

from __future__ import annotations

from pathlib import Path

from detrdoctor.extras import require
from detrdoctor.runs import SERIES, Run, is_watchdog_event, smoothed

# Panels in reading order: (title, series); AP and AP50 share one (AP50 dashed).
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (s.label, (s.key,)) for s in SERIES if s.key not in ("AP", "AP50")
)
PANELS = PANELS[:4] + (("eval AP and AP50", ("AP", "AP50")),) + PANELS[4:]
LOG_SCALE = {s.key for s in SERIES if s.log}


def draw_runs(runs: list[Run], out: Path, smooth: int) -> None:
    """Write the figure to `out` (.png or .svg): a 3×3 grid of panels, one colour per run, events marked."""
    require("matplotlib", "plot", "matplotlib", "plot --out")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 10.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 3).ravel()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (title, keys) in zip(axes, PANELS):
        ax.set_title(title + (" (log scale)" if keys[0] in LOG_SCALE else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        drawn = marked = starred = False
        for run, colour in zip(runs, colours):
            for key, style in zip(keys, ("-", "--")):
                points = run.points[key]
                if not points:
                    continue
                drawn = True
                steps, values = [p[0] for p in points], [p[1] for p in points]
                if key in ("AP", "AP50"):  # a handful of evaluations: their points, not a smoothed line
                    ax.plot(steps, values, style, color=colour, marker="o", markersize=4)
                    if run.best and run.best["metric"] == key:  # the evaluation best.pth holds
                        ax.plot([run.best["step"]], [run.best["value"]], "*", color=colour, markersize=14)
                        starred = True
                    continue
                if smooth > 1:
                    ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(steps, smoothed(values, smooth), style, color=colour, linewidth=1.4)
            if keys[0] == "grad_norm":
                for event in filter(is_watchdog_event, run.events):
                    ax.axvline(event["step"], color=colour, linestyle=":", alpha=0.8)
                    marked = True
        if keys[0] in LOG_SCALE and drawn:
            ax.set_yscale("log")
        if keys[0] == "data_wait":
            ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        if keys == ("AP", "AP50") and drawn:
            best = [ax.plot([], [], "*", color="grey", markersize=10)[0]] if starred else []
            ax.legend(
                handles=[ax.plot([], [], "-", color="grey")[0], ax.plot([], [], "--", color="grey")[0], *best],
                labels=["AP", "AP50", *(["best.pth"] if starred else [])],
                loc="lower right",
                fontsize="small",
            )
        if marked:
            ax.legend(
                handles=[ax.plot([], [], ":", color="grey")[0]],
                labels=["watchdog event"],
                loc="upper right",
                fontsize="small",
            )
        if not drawn:
            ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.legend(
        handles=[axes[0].plot([], [], color=c)[0] for c in colours],
        labels=[run.name for run in runs],
        loc="outside lower center",
        ncols=min(len(runs), 6),
        frameon=False,
    )
    smoothing = f", curves smoothed over {smooth} records (raw values faint)" if smooth > 1 else ""
    fig.suptitle(
        f"detrdoctor plot: {len(runs)} run{'s' if len(runs) != 1 else ''} by step{smoothing}", fontsize="medium"
    )
    fig.savefig(out, dpi=100)
