"""Pictures of a replay or a sweep, drawn with matplotlib (the optional `plot` extra).

Figures are built on matplotlib's Agg canvas, never through pyplot, so nothing
needs a display and no global figure state is kept between calls. matplotlib is
imported only when a picture is drawn: `simulate` without `--plot` works
without the extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mint_burst.simulate import SimResult
from mint_burst.sweep import SweepRow, display_value
from mint_common.errors import CantCreateError, UsageError
from mint_common.extras import require_extra

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = {".png": "png", ".svg": "svg"}
MARKERS = {"ours": "o", "legacy": "s"}


def check_target(path: Path) -> None:
    """2 unless the name ends in .png or .svg, 73 without its directory, 69 without matplotlib.

    Called before the replays run, so a long sweep does not end in a refusal.
    """
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"--plot {path}: the file name must end in .png or .svg")
    if not path.parent.is_dir():
        raise CantCreateError(f"cannot write the picture {path}: no directory {path.parent}")
    require_extra("mint-burst", "plot", ("matplotlib",))


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def timeline_figure(results: Sequence[SimResult], title: str) -> Figure:
    """Nodes billed and jobs pending over time, one line per policy (results need a timeline)."""
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(9, 5.5)
    nodes_axes, pending_axes = figure.subplots(2, 1, sharex=True)
    for result in results:
        timeline = result.timeline
        if timeline is None:
            raise ValueError(f"the {result.policy} replay was run without record=True")
        nodes_axes.step(timeline.hours, timeline.nodes, where="post", label=result.policy)
        pending_axes.step(timeline.hours, timeline.pending, where="post", label=result.policy)
    nodes_axes.set_ylabel("nodes up or booting")
    pending_axes.set_ylabel("jobs pending")
    pending_axes.set_xlabel("hours since the first submission")
    pending_axes.legend(loc="upper right")  # the nodes curves fill the upper panel
    nodes_axes.set_title(title)
    for axes in (nodes_axes, pending_axes):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def _point_label(row: SweepRow) -> str:
    return ", ".join(display_value(k, v) for k, v in row.settings.items())


def _merged_labels(rows: Sequence[SweepRow]) -> dict[tuple[float, float], str]:
    """One label per point; combinations with the very same figures share it."""
    labels: dict[tuple[float, float], list[str]] = {}
    for row in rows:
        point = (row.result.node_hours_billed, row.result.mean_wait_s)
        labels.setdefault(point, []).append(_point_label(row))
    return {point: " | ".join(texts) for point, texts in labels.items()}


def sweep_figure(rows: Sequence[SweepRow], title: str) -> Figure:
    """Mean wait against node-hours billed, one point per row, the Pareto front joined."""
    figure = _new_figure(9, 6)
    axes = figure.subplots()
    for policy in dict.fromkeys(row.result.policy for row in rows):
        _scatter_policy(axes, [row for row in rows if row.result.policy == policy], policy)
    front = sorted(
        (row.result.node_hours_billed, row.result.mean_wait_s) for row in rows if row.pareto
    )
    axes.plot(
        [x for x, _y in front],
        [y for _x, y in front],
        color="C2",
        linestyle="--",
        label="Pareto front (filled)",
    )
    for (x, y), text in _merged_labels(rows).items():
        axes.annotate(text, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    keys = ", ".join(rows[0].settings) if rows else ""
    axes.set_xlabel("node-hours billed")
    axes.set_ylabel("mean wait (s)")
    axes.set_title(f"{title}\npoints labelled {keys}")
    axes.margins(x=0.1, y=0.08)  # room for the labels right of the outermost points
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    return figure


def _scatter_policy(axes: Axes, rows: Sequence[SweepRow], policy: str) -> None:
    """One policy's points: filled on the front, hollow off it."""
    color = "C0" if policy == "ours" else "C1"
    axes.scatter(
        [row.result.node_hours_billed for row in rows],
        [row.result.mean_wait_s for row in rows],
        marker=MARKERS.get(policy, "o"),
        facecolors=[color if row.pareto else "none" for row in rows],
        edgecolors=color,
        label=policy,
    )


def save(figure: Figure, path: Path) -> None:
    """Write the picture in the format its name says; 73 when the file cannot be created."""
    check_target(path)
    kind = FORMATS[path.suffix.lower()]
    try:
        figure.savefig(path, format=kind, dpi=110, metadata=_metadata(kind))
    except OSError as exc:
        raise CantCreateError(f"cannot write the picture {path}: {exc.strerror or exc}") from None


def _metadata(kind: str) -> dict[str, None]:
    # Without a date (SVG) or software version the same replay gives the same file.
    return {"Date": None} if kind == "svg" else {"Software": None}
