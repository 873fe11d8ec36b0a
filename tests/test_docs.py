"""The documentation a new user reads holds up: its links lead somewhere, it speaks the users' words.

- every relative link (and its `#anchor`) in the README, `docs/` and `examples/` leads to
  a file, directory or heading inside this repository, and no link leaves it;
- every repository path the text names (`docs/mint-ssh.md`, `tests/ssh/test_gate.py`,
  `examples/mint-s3job/`, ...) exists;
- no word that only this project's history gives a meaning ("seed", "quirk 7", a path
  into the development workspace outside the repository) appears in the README, the
  docs or any command's `--help`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mint_burst.cli import main as burst_main
from mint_poll.cli import main as poll_main
from mint_s3job.cli import main as s3job_main
from mint_ssh.cli import main as ssh_main

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A repository path named in running text or code: it starts at a top-level directory.
TOP_DIRS = r"(?:docs|examples|tests|scripts|benchmarks|common|mint_[a-z0-9]+|\.ci)"
REPO_PATH = re.compile(rf"(?<![\w./~$-]){TOP_DIRS}/[\w./-]*[\w/]")
# Words that mean something only to the people who built the tools.
PROJECT_ONLY = (
    (re.compile(r"(?<!random )\bseeds?\b", re.IGNORECASE), "seed"),
    (re.compile(r"\bquirks?\b", re.IGNORECASE), "quirk"),
    (re.compile(r"shared/protocols"), "shared/protocols"),
    (re.compile(r"\.\./shared\b"), "../shared"),
)
TOOLS = {
    "mint-ssh": ssh_main,
    "mint-poll": poll_main,
    "mint-s3job": s3job_main,
    "mint-burst": burst_main,
}


def markdown_files() -> list[Path]:
    files = sorted(REPO.glob("README*.md")) + sorted((REPO / "docs").rglob("*.md"))
    return files + sorted(p for p in (REPO / "examples").rglob("*.md"))


def example_files() -> list[Path]:
    return sorted(p for p in (REPO / "examples").rglob("*") if p.is_file())


def user_text_files() -> list[Path]:
    """The README and docs, without the CHANGELOG (a record of history, in its words)."""
    return [p for p in markdown_files() if p.name != "CHANGELOG.md"]


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Line number and text of each line outside fenced code blocks."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield number, line


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = (
        ch
        for ch in text
        if ch in " -_" or unicodedata.category(ch)[0] in "LNM"  # letters, digits, marks
    )
    return "".join(kept).replace(" ", "-")


def link_problem(source: Path, target: str) -> str | None:
    """Why the link `target` in `source` is broken, or None when it is fine."""
    if re.match(r"^(https?|mailto):", target):
        return None
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("/"):
        return "points outside the repository"
    path_part, _, anchor = target.partition("#")
    destination = (source.parent / path_part).resolve() if path_part else source
    if REPO not in destination.parents and destination != REPO:
        return "leaves the repository"
    if not destination.exists():
        return "does not exist"
    if anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination):
        return f"has no heading for #{anchor}"
    return None


def named_paths(text: str) -> list[str]:
    return [match.group(0) for match in REPO_PATH.finditer(text)]


@pytest.mark.parametrize("path", markdown_files(), ids=_id)
def test_every_relative_link_leads_to_a_file_in_the_repository(path: Path) -> None:
    broken = [
        f"line {number}: ({target}) {problem}"
        for number, line in _prose_lines(path.read_text(encoding="utf-8"))
        for target in LINK.findall(line)
        if (problem := link_problem(path, target))
    ]
    assert not broken, f"{_id(path)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("path", markdown_files() + example_files(), ids=_id)
def test_every_repository_path_named_exists(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    missing = sorted({name for name in named_paths(text) if not (REPO / name).exists()})
    assert not missing, f"{_id(path)} names paths that are not in the repository: {missing}"


@pytest.mark.parametrize("path", user_text_files(), ids=_id)
def test_docs_use_no_project_only_words(path: Path) -> None:
    found = [
        f"line {number}: {word!r} in {line.strip()[:100]!r}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for pattern, word in PROJECT_ONLY
        if pattern.search(line)
    ]
    assert not found, f"{_id(path)}:\n" + "\n".join(found)


def command_paths(group: click.Command, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The argv of every command under `group`, the group itself first."""
    yield prefix
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            if not command.hidden:
                yield from command_paths(command, (*prefix, name))


def help_cases() -> list[tuple[str, tuple[str, ...]]]:
    return [(tool, argv) for tool, group in TOOLS.items() for argv in command_paths(group)]


@pytest.mark.parametrize(
    ("tool", "argv"), help_cases(), ids=[" ".join((t, *a)) for t, a in help_cases()]
)
def test_help_uses_no_project_only_words(tool: str, argv: tuple[str, ...]) -> None:
    result = CliRunner().invoke(TOOLS[tool], [*argv, "--help"], prog_name=tool)
    assert result.exit_code == 0, result.output
    found = sorted({word for pattern, word in PROJECT_ONLY if pattern.search(result.output)})
    assert not found, f"`{tool} {' '.join(argv)} --help` says {found}:\n{result.output}"


def test_the_help_walk_reaches_subcommands() -> None:
    walked = {argv for tool, argv in help_cases() if tool == "mint-ssh"}
    assert {(), ("run",), ("resume",), ("gate",)} <= walked


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("docs/mint-ssh.md", None),
        ("docs/mint-poll.md#proxies-and-ca-certificates", None),
        ("docs/mint-poll.md#no-such-heading", "has no heading for #no-such-heading"),
        ("docs/nosuch.md", "does not exist"),
        ("../shared/protocols/mi-distcomp-api.md", "leaves the repository"),
        ("/etc/passwd", "points outside the repository"),
        ("file:///etc/passwd", "points outside the repository"),
        ("https://slurm.schedmd.com/", None),
        ("#install", None),
    ],
    ids=["file", "anchor", "bad-anchor", "missing", "escape", "absolute", "file-url", "web", "own"],
)
def test_link_checker_tells_good_links_from_broken_ones(target: str, problem: str | None) -> None:
    assert link_problem(REPO / "README.md", target) == problem


def test_path_finder_reads_paths_out_of_prose() -> None:
    text = (
        "see docs/mint-burst.md, and `tests/ssh/test_gate.py`; run "
        "install -D examples/mint-s3job/epilog-slurmctld.sh /x; not workdir/.mint-s3job/jobs/"
    )
    assert named_paths(text) == [
        "docs/mint-burst.md",
        "tests/ssh/test_gate.py",
        "examples/mint-s3job/epilog-slurmctld.sh",
    ]


def test_project_only_words_are_found_and_ordinary_ones_pass() -> None:
    def flagged(line: str) -> list[str]:
        return [word for pattern, word in PROJECT_ONLY if pattern.search(line)]

    assert flagged("replaces seed 004's procedure") == ["seed"]
    assert flagged("quirk 7 of the server") == ["quirk"]
    assert flagged("see ../shared/protocols/mi-distcomp-api.md") == [
        "shared/protocols",
        "../shared",
    ]
    assert flagged("traces made with a fixed random seed 20261121") == []
    assert flagged("the seeded test data; proceed") == []
