"""Everything under examples/ is something a user copies: it must at least parse.

It must also run our programs from the one place the README installs them
(`/opt/mint-tools/bin/mint-*`); paths of the site's own programs are the site's.
Each tool's own tests also load its example configs with its config schema.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent
TOOLS = ("mint-poll", "mint-ssh", "mint-s3job", "mint-burst")
PREFIX = "/opt/mint-tools/bin/"
# A path whose last component is one of our programs: /opt/mint/bin/mint-s3job, ./mint-poll.
PROGRAM_PATH = re.compile(
    r"(?<![\w.$-])[\w.~$/{}-]*/s?bin/(mint-(?:poll|ssh|s3job|burst))(?![\w./-])"
)


def examples(*suffixes: str) -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def _id(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


def _mint_invocations(command_line: str) -> list[list[str]]:
    """The argv of each mint tool a shell line runs (words after the tool up to an operator)."""
    try:
        words = shlex.split(command_line, comments=True)
    except ValueError:
        return []
    calls: list[list[str]] = []
    for index, word in enumerate(words):
        if Path(word).name in TOOLS:
            argv = [Path(word).name]
            for rest in words[index + 1 :]:
                if rest in ("|", "||", "&&", ";", ">", ">>", "2>&1"):
                    break
                argv.append(rest)
            calls.append(argv)
    return calls


def shell_lines(text: str) -> list[str]:
    """The lines of a shell script, with backslash-continued lines joined into one."""
    return text.replace("\\\n", " ").splitlines()


def _subcommand(argv: list[str]) -> str | None:
    for word in argv[1:]:
        if not word.startswith("-"):
            return word
    return None


def assert_tool_command_exists(argv: list[str]) -> None:
    """`<tool> <subcommand> --help` must succeed: the example names a real command."""
    tool = BIN / argv[0]
    if not tool.exists():
        pytest.fail(f"{argv[0]} is not installed in this venv")
    sub = _subcommand(argv)
    probe = [str(tool), sub, "--help"] if sub else [str(tool), "--help"]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(probe)} failed: {result.stderr}"


@pytest.mark.parametrize("path", examples(".yaml", ".yml"), ids=_id)
def test_yaml_examples_parse(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} should hold a mapping"


@pytest.mark.parametrize("path", examples(".json"), ids=_id)
def test_json_examples_parse(path: Path) -> None:
    json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", examples(".sh"), ids=_id)
def test_shell_examples_have_valid_syntax(path: Path) -> None:
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for line in shell_lines(path.read_text(encoding="utf-8")):
        for argv in _mint_invocations(line):
            assert_tool_command_exists(argv)


def _read_unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


@pytest.mark.parametrize("path", examples(".service"), ids=_id)
def test_systemd_services_are_well_formed(path: Path) -> None:
    unit = _read_unit(path)
    assert unit.has_section("Unit") and unit.has_section("Service"), path
    exec_start = unit.get("Service", "ExecStart", fallback="")
    assert exec_start.startswith("/"), f"ExecStart must be an absolute path: {exec_start!r}"
    for argv in _mint_invocations(exec_start):
        assert_tool_command_exists(argv)


@pytest.mark.parametrize("path", examples(".timer"), ids=_id)
def test_systemd_timers_are_well_formed(path: Path) -> None:
    unit = _read_unit(path)
    assert unit.has_section("Timer") and unit.has_section("Install"), path
    keys = set(unit.options("Timer"))
    assert keys & {"OnCalendar", "OnBootSec", "OnUnitActiveSec", "OnActiveSec"}, path
    service = unit.get("Timer", "Unit", fallback=path.stem + ".service")
    assert (path.parent / service).exists(), f"{path} triggers {service}, which is not in examples"


_CRON_FIELD = re.compile(r"^[\d*/,\-]+$")


def cron_examples() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*cron*") if p.is_file())


@pytest.mark.parametrize("path", cron_examples(), ids=_id)
def test_cron_lines_are_well_formed(path: Path) -> None:
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines, f"{path} has no cron line"
    for line in lines:
        if re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"expected 5 time fields and a command: {line!r}"
        assert all(_CRON_FIELD.match(f) for f in fields[:5]), line
        for argv in _mint_invocations(fields[5]):
            assert_tool_command_exists(argv)


def test_mint_invocations_are_found_in_shell_lines() -> None:
    line = "MINT=1 /usr/local/bin/mint-poll once --config /etc/x.yaml >> /var/log/x 2>&1"
    assert _mint_invocations(line) == [["mint-poll", "once", "--config", "/etc/x.yaml"]]
    assert _subcommand(["mint-poll", "-v", "once"]) == "once"
    assert _mint_invocations("echo 'unbalanced") == []
    script = "x=1\n/opt/mint-tools/bin/mint-poll submit \\\n    --site s \\\n    --json\n"
    assert shell_lines(script)[1].split() == [
        "/opt/mint-tools/bin/mint-poll",
        "submit",
        "--site",
        "s",
        "--json",
    ]


def _unit_exec_lines(path: Path) -> list[str]:
    unit = _read_unit(path)
    return [
        unit.get("Service", key)
        for key in ("ExecStart", "ExecStop", "ExecReload")
        if unit.has_option("Service", key)
    ]


def _lines_that_run_commands(path: Path) -> list[str]:
    """The lines of an example that a shell, cron or systemd runs."""
    if path.name.endswith(".service"):
        return _unit_exec_lines(path)
    if path.name.endswith(".sh") or "cron" in path.name:
        return shell_lines(path.read_text(encoding="utf-8"))
    return []


def tools_run_from_elsewhere(line: str) -> list[str]:
    """Words of a shell line that run one of our programs, not from /opt/mint-tools/bin."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    wrong = []
    for index, word in enumerate(words):
        # `x=$(prog ...)` and `var=prog`: the program is what follows the last `$(` or `=`.
        program = re.split(r"\$\(|^\w+=", word)[-1]
        if Path(program).name not in TOOLS:
            continue
        before = words[max(0, index - 2) : index]
        if len(before) == 2 and before[1] == "-v" and before[0].split("$(")[-1] == "command":
            continue  # a PATH lookup: the epilog wrapper's fallback
        if re.match(r"^\w+=", word) and "$(" not in word:
            continue  # an assignment names the program; test_examples_name_... checks its path
        if program != PREFIX + Path(program).name:
            wrong.append(word)
    return wrong


def run_examples() -> list[Path]:
    return [p for p in EXAMPLES.rglob("*") if p.is_file() and _lines_that_run_commands(p)]


@pytest.mark.parametrize("path", sorted(run_examples()), ids=_id)
def test_examples_run_our_programs_from_the_install_prefix(path: Path) -> None:
    wrong = [w for line in _lines_that_run_commands(path) for w in tools_run_from_elsewhere(line)]
    assert not wrong, f"{_id(path)} runs {wrong}; the README installs them in {PREFIX}"


@pytest.mark.parametrize("path", sorted(p for p in EXAMPLES.rglob("*") if p.is_file()), ids=_id)
def test_examples_name_our_programs_only_under_the_install_prefix(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    elsewhere = sorted(
        {m.group(0) for m in PROGRAM_PATH.finditer(text) if m.group(0) != PREFIX + m.group(1)}
    )
    assert not elsewhere, f"{_id(path)} names {elsewhere}; use {PREFIX}mint-*"


def test_every_tool_run_by_a_unit_comes_from_the_install_prefix() -> None:
    run = {
        Path(word).name
        for path in EXAMPLES.rglob("*.service")
        for line in _unit_exec_lines(path)
        for word in shlex.split(line)
        if word.startswith(PREFIX)
    }
    assert run == {"mint-poll", "mint-s3job", "mint-burst"}


def test_program_paths_outside_the_prefix_are_found() -> None:
    assert tools_run_from_elsewhere("* * * * * /opt/mint/bin/mint-s3job dispatch") == [
        "/opt/mint/bin/mint-s3job"
    ]
    assert tools_run_from_elsewhere("x=$(mint-s3job submit a)") == ["x=$(mint-s3job"]
    assert tools_run_from_elsewhere("exec mint-ssh run h") == ["mint-ssh"]
    assert tools_run_from_elsewhere("x=$(/opt/mint-tools/bin/mint-s3job submit a)") == []
    assert tools_run_from_elsewhere("found=$(command -v mint-s3job || true)") == []
    found = [
        m.group(0)
        for m in PROGRAM_PATH.finditer(
            "mint_s3job=/opt/mint/bin/mint-s3job /var/lib/mint-poll/calc /etc/mint/mint-poll.token "
            "/opt/mint-tools/bin/mint-ssh /var/log/mint-s3job-epilog.log"
        )
    ]
    assert found == ["/opt/mint/bin/mint-s3job", "/opt/mint-tools/bin/mint-ssh"]
