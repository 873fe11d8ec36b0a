"""Pictures of a replay and of a sweep: the figure holds the simulation's numbers, the file is valid."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from matplotlib.colors import to_rgba

from mint_burst.cli import main
from mint_burst.plot import check_target, save, sweep_figure, timeline_figure
from mint_burst.simulate import Timeline, compare, parse_sacct
from mint_burst.sweep import parse_sweeps, run_sweep
from mint_common.errors import CantCreateError, UsageError
from tests.burst.test_simulate import sacct_line

REPO = Path(__file__).resolve().parents[2]
TRACES = REPO / "examples" / "mint-burst" / "traces"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Jobs arriving in two waves, so nodes come, go and come back.
WAVES = "\n".join(
    [sacct_line(str(i), i * 20, 1200) for i in range(6)]
    + [sacct_line(str(10 + i), 3 * 3600 + i * 20, 600) for i in range(3)]
)


def step_area(timeline: Timeline) -> float:
    """Node-hours under the step curve the figure draws."""
    hours, nodes = timeline.hours, timeline.nodes
    return sum(n * (b - a) for a, b, n in zip(hours, hours[1:], nodes))


def value_at(timeline: Timeline, hour: float) -> int:
    """Nodes up at `hour` on the step curve: the last sample at or before it."""
    return [n for h, n in zip(timeline.hours, timeline.nodes) if h <= hour][-1]


def test_timeline_figure_draws_the_replays_numbers() -> None:
    results = compare(parse_sacct(WAVES), "both", max_nodes=8, idle_timeout=600, record=True)
    figure = timeline_figure(results, "waves")
    nodes_axes, pending_axes = figure.axes
    assert [line.get_label() for line in nodes_axes.get_lines()] == ["ours", "legacy"]
    for result, nodes_line, pending_line in zip(
        results, nodes_axes.get_lines(), pending_axes.get_lines()
    ):
        timeline = result.timeline
        assert timeline is not None
        assert list(nodes_line.get_xdata()) == timeline.hours
        assert list(nodes_line.get_ydata()) == timeline.nodes
        assert list(pending_line.get_ydata()) == timeline.pending
        assert nodes_line.get_drawstyle() == "steps-post"
        # The curve is the bill: its area is the node-hours billed, its peak the most nodes.
        assert step_area(timeline) == pytest.approx(result.node_hours_billed)
        assert max(timeline.nodes) == result.max_nodes
        assert timeline.hours[-1] == pytest.approx(result.makespan_h)
        assert timeline.nodes[-1] == timeline.pending[-1] == 0
        # Nine jobs, six at once: the pending curve starts from the first wave.
        assert 1 <= max(timeline.pending) <= 6
        # Both let the nodes go between the waves and bring them back for the second.
        assert value_at(timeline, 2.5) == 0
        assert max(n for h, n in zip(timeline.hours, timeline.nodes) if h > 3) > 0


def test_sweep_figure_draws_each_row_and_the_front() -> None:
    jobs = parse_sacct(WAVES)
    rows = run_sweep(jobs, parse_sweeps(["idle_timeout=5m,30m", "max_nodes=3,6"]), "both")
    figure = sweep_figure(rows, "waves")
    [axes] = figure.axes
    ours_points, legacy_points = axes.collections
    for policy, points in (("ours", ours_points), ("legacy", legacy_points)):
        mine = [r for r in rows if r.result.policy == policy]
        assert points.get_offsets().tolist() == [
            [r.result.node_hours_billed, r.result.mean_wait_s] for r in mine
        ]
        # Rows on the front are filled, the others hollow.
        filled = [face[3] > 0 for face in points.get_facecolors()]
        assert filled == [r.pareto for r in mine]
    [front_line] = axes.get_lines()
    front = sorted((r.result.node_hours_billed, r.result.mean_wait_s) for r in rows if r.pareto)
    assert list(zip(front_line.get_xdata(), front_line.get_ydata())) == front
    texts = {tuple(t.xy): t.get_text() for t in axes.texts}
    for row in rows:
        label = ", ".join(
            ("5m" if v == 300 else "30m") if k == "idle_timeout" else str(v)
            for k, v in row.settings.items()
        )
        assert label in texts[row.result.node_hours_billed, row.result.mean_wait_s].split(" | ")
    assert to_rgba(legacy_points.get_edgecolors()[0]) != to_rgba(ours_points.get_edgecolors()[0])


def test_saved_files_are_valid_png_and_svg(tmp_path: Path) -> None:
    results = compare(parse_sacct(WAVES), "ours", record=True)
    figure = timeline_figure(results, "waves")
    save(figure, tmp_path / "t.png")
    save(figure, tmp_path / "t.SVG")
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG_SIGNATURE
    root = ET.parse(tmp_path / "t.SVG").getroot()  # noqa: S314 (our own file)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    with pytest.raises(CantCreateError, match="no directory"):
        save(figure, tmp_path / "missing" / "t.png")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(CantCreateError, match="cannot write the picture"):
        save(figure, tmp_path / "taken.png")
    with pytest.raises(UsageError, match=r"must end in \.png or \.svg"):
        check_target(tmp_path / "t.jpg")


def test_timeline_figure_needs_recorded_replays() -> None:
    results = compare(parse_sacct(WAVES), "ours")
    with pytest.raises(ValueError, match="without record=True"):
        timeline_figure(results, "waves")


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ([], "nodes up or booting"),
        (["--sweep", "idle_timeout=5m,10m", "--sweep", "max_nodes=8,16"], "mean wait (s)"),
    ],
    ids=["timeline", "sweep"],
)
def test_cli_plot_writes_the_picture(extra: list[str], check: str, tmp_path: Path) -> None:
    picture = tmp_path / "out.svg"
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--trace",
            str(TRACES / "trickle.sacct"),
            "--policy",
            "both",
            *extra,
            "--plot",
            str(picture),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert check in picture.read_text()
    assert result.stdout.startswith("policy\t")


def test_without_the_plot_extra_plot_exits_69_and_names_it(
    base_only_venv: Path, tmp_path: Path
) -> None:
    tool = base_only_venv.parent / "mint-burst"
    argv = [str(tool), "simulate", "--trace", str(TRACES / "mix.sacct")]
    refused = subprocess.run(
        [*argv, "--plot", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 69
    assert "needs the 'plot' extra" in refused.stderr
    assert "pip install 'mint-tools[plot]'" in refused.stderr
    assert not (tmp_path / "x.png").exists()
    plain = subprocess.run(
        [*argv, "--sweep", "idle_timeout=5m,10m"], capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 0 and plain.stdout.startswith("policy\t")
