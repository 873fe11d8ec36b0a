"""The Japanese documentation stays true to the tools and to the English pages.

Every tool of `[project.scripts]` has `docs/getting-started/<tool>.md` and its
Japanese mirror `docs/ja/<tool>.md`; a Japanese page has exactly the code
blocks of its English page; every `mint-xxx SUBCOMMAND --option` the pages name
exists in the click command tree; every YAML block loads as the tool's
configuration; every relative link points at a file.
Each test collects all problems and reports them at once.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from mint_burst.config import BurstConfig
from mint_common.config import load_config
from mint_common.errors import ConfigError
from mint_poll.config import PollConfig
from mint_s3job.config import S3JobConfig
from mint_ssh.config import SshToolConfig

ROOT = Path(__file__).resolve().parent.parent
JA_DIR = ROOT / "docs" / "ja"
EN_DIR = ROOT / "docs" / "getting-started"
README_JA = ROOT / "README.ja.md"

_SCRIPT_LINE = re.compile(r'^(mint-[a-z0-9]+)\s*=\s*"([\w.]+):(\w+)"\s*$', re.MULTILINE)
_FENCE = re.compile(r"^(`{3,})[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Shell punctuation that ends one command and may start another.
_SEPARATORS = re.compile(r"\|\||&&|[|;()`]|\$\(")
_VALUE_OPTIONS = ("--config", "--log-format", "--log-file")
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
CONFIG_SCHEMAS: dict[str, type] = {
    "mint-ssh": SshToolConfig,
    "mint-poll": PollConfig,
    "mint-burst": BurstConfig,
    "mint-s3job": S3JobConfig,
}


def _tools() -> dict[str, click.Command]:
    """Each `mint-*` program of pyproject.toml's [project.scripts], loaded."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    tools: dict[str, click.Command] = {}
    for name, module, attr in _SCRIPT_LINE.findall(scripts):
        tools[name] = getattr(importlib.import_module(module), attr)
    return tools


TOOLS = _tools()


def _pages() -> list[Path]:
    pages = [*sorted(JA_DIR.glob("*.md")), README_JA, *sorted(EN_DIR.glob("*.md"))]
    return [page for page in pages if page.is_file()]


def _code_blocks(text: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(text)]


def _without_code_blocks(text: str) -> str:
    return _FENCE.sub("", text)


def _option_names(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _snippets(text: str) -> list[str]:
    """Every code-block line and every inline code span of a page."""
    lines = [line for block in _code_blocks(text) for line in block.splitlines()]
    for line in _without_code_blocks(text).splitlines():
        lines.extend(m.group(2) for m in _INLINE.finditer(line))
    return lines


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment, comments=True)
    except ValueError:
        return segment.split()


def _command_problems(segment: str) -> list[str]:
    """What is wrong with the `mint-xxx ...` invocations in one shell segment."""
    words = _words(segment)
    problems: list[str] = []
    for index, word in enumerate(words):
        program = word.rsplit("=", 1)[-1]
        tool_name = program.rsplit("/", 1)[-1]
        # A program, not a path such as /var/lib/mint-poll: bare, or in a bin/ directory.
        if word.startswith("-") or tool_name not in TOOLS:
            continue
        if program != tool_name and not program.endswith(f"/bin/{tool_name}"):
            continue
        problems.extend(_invocation_problems(tool_name, words[index + 1 :]))
    return problems


def _invocation_problems(tool_name: str, args: list[str]) -> list[str]:
    group = TOOLS[tool_name]
    global_options = _option_names(group)
    command: click.Command = group
    label = tool_name
    problems: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            break
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if name not in global_options | _option_names(command):
                problems.append(f"{label}: no option {name}")
            elif command is group and name in _VALUE_OPTIONS and "=" not in arg:
                next(rest, None)
            continue
        if command is group and isinstance(group, click.Group):
            sub = group.commands.get(arg)
            if sub is None:
                problems.append(f"{tool_name}: no command {arg!r}")
                break
            command, label = sub, f"{tool_name} {arg}"
    return problems


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_has_an_english_and_a_japanese_page(tool: str) -> None:
    missing = [
        str(path.relative_to(ROOT))
        for path in (EN_DIR / f"{tool}.md", JA_DIR / f"{tool}.md")
        if not path.is_file()
    ]
    assert missing == []


def test_the_tools_are_found() -> None:
    assert {"mint-ssh", "mint-poll", "mint-burst", "mint-s3job"} <= set(TOOLS)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_japanese_code_blocks_are_the_english_ones(tool: str) -> None:
    english = _code_blocks((EN_DIR / f"{tool}.md").read_text(encoding="utf-8"))
    japanese = _code_blocks((JA_DIR / f"{tool}.md").read_text(encoding="utf-8"))
    assert english, f"docs/getting-started/{tool}.md has no code block"
    assert japanese == english


def test_readme_ja_code_blocks_come_from_the_getting_started_pages() -> None:
    english = {
        block
        for page in EN_DIR.glob("*.md")
        for block in _code_blocks(page.read_text(encoding="utf-8"))
    }
    blocks = _code_blocks(README_JA.read_text(encoding="utf-8"))
    assert blocks, "README.ja.md has no code block"
    assert [block for block in blocks if block not in english] == []


def test_readme_ja_links_every_japanese_page() -> None:
    text = README_JA.read_text(encoding="utf-8")
    assert [tool for tool in sorted(TOOLS) if f"(docs/ja/{tool}.md)" not in text] == []


def test_pages_name_only_commands_and_options_that_exist() -> None:
    problems: list[str] = []
    for page in _pages():
        for snippet in _snippets(page.read_text(encoding="utf-8")):
            for segment in _SEPARATORS.split(snippet):
                problems.extend(
                    f"{page.relative_to(ROOT)}: {problem} in {snippet.strip()!r}"
                    for problem in _command_problems(segment)
                )
    assert problems == []


def test_relative_links_point_at_existing_files() -> None:
    broken: list[str] = []
    for page in _pages():
        for target in _LINK.findall(_without_code_blocks(page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


@pytest.mark.parametrize("tool", sorted(CONFIG_SCHEMAS))
def test_first_configurations_load(tool: str, tmp_path: Path) -> None:
    """Each YAML block of a getting-started page is a valid config of its tool."""
    token = tmp_path / "token"
    token.write_text("t" * 64 + "\n", encoding="utf-8")
    token.chmod(0o600)
    text = (EN_DIR / f"{tool}.md").read_text(encoding="utf-8")
    blocks = _YAML_BLOCK.findall(text)
    assert blocks, f"docs/getting-started/{tool}.md shows no configuration"
    errors: list[str] = []
    for index, block in enumerate(blocks):
        settings = yaml.safe_load(block)
        if "token_file" in settings:
            # The page's token file does not exist here; one that does stands in for it.
            settings["token_file"] = str(token)
        config_file = tmp_path / f"{index}.yaml"
        config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
        try:
            load_config(
                CONFIG_SCHEMAS[tool],
                tool,
                config_file=config_file,
                environ={},
                system_dir=tmp_path / "no-system",
                user_dir=tmp_path / "no-user",
            )
        except ConfigError as error:
            errors.append(f"block {index + 1}: {error}")
    assert errors == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("mint-ssh run host --input a -- ./x --not-ours", []),
        ("/opt/mint-tools/bin/mint-ssh --config f.yaml run h --json-nope", ["no option"]),
        ("mint-ssh frobnicate", ["no command"]),
        ("ExecStart=/opt/mint-tools/bin/mint-poll once --log-format plain", []),
        ("cat /etc/mint/mint-ssh.yaml", []),
        ("ls /var/lib/mint-poll --nope", []),
    ],
    ids=[
        "after-double-dash",
        "unknown-option",
        "unknown-command",
        "unit-line",
        "file-name",
        "state-dir-path",
    ],
)
def test_the_command_checker_itself(snippet: str, expected: list[str]) -> None:
    problems = [p for segment in _SEPARATORS.split(snippet) for p in _command_problems(segment)]
    assert len(problems) == len(expected)
    assert all(want in got for want, got in zip(expected, problems))
