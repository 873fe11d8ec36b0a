"""mint-burst against garbled scheduler commands and provider scripts (issue 12, item 11),
launches whose outcome is unknown (item 4) and a daemon step that throws (run survives).

The scheduler commands here are small scripts on PATH that print what a broken or hostile
squeue/scontrol/sinfo could print: the real Slurm cannot be made to print these bytes, so
a fake is the only way to produce them. Each output bound is injected small, and the
scripts print far more than it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mint_burst import command_provider, service
from mint_burst.cli import main
from mint_burst.command_provider import CommandProvider
from mint_burst.config import BurstConfig, CommandSettings, Ec2Settings
from mint_burst.engine import Engine
from mint_burst.hostlist import expand_hostlist
from mint_burst.model import REQUESTED, Host, QueueStatus
from mint_burst.pbs import parse_pbsnodes_json, parse_qstat_json, parse_qstat_xml
from mint_burst.policy import PolicySettings
from mint_burst.scheduler import CommandRunner, last_line
from mint_burst.slurm import SlurmScheduler, parse_partition, parse_sinfo, parse_squeue
from mint_burst.state import FileStore
from mint_common.errors import ConfigError, InputError, MintError, UnavailableError
from mint_common.proc import run_command
from tests.burst.test_command_provider import CLOUD_SCRIPT
from tests.burst.test_e2e_slurm import Burst, job_state, one_busy_one_idle, slurmd_running
from tests.burst.test_engine import Clock, QueueDouble
from tests.slurm_support import SlurmCluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mint-burst"
PARTITION = b"PartitionName=cloud MaxNodes=UNLIMITED Nodes=c[1-2] TotalNodes=2\n"
SQUEUE_OK = b"7|PENDING|1|100|N/A|N/A|N/A|||(null)|Resources\n"
SINFO_OK = b"c1|idle~\nc2|idle~\n"
HOSTS = (Host("10.0.1.11", "c1"), Host("10.0.1.12", "c2"))

# Prints the file named after the command (scontrol.out, ...) from $GARBLE_DIR, raw bytes;
# with $GARBLE_REPEAT, that many times (a flood).
PRINTER = """
import os, sys
name = os.path.basename(sys.argv[0])
data = open(os.path.join(os.environ["GARBLE_DIR"], name + ".out"), "rb").read()
for _ in range(int(os.environ.get("GARBLE_REPEAT_" + name, "1"))):
    sys.stdout.buffer.write(data)
"""


def make_script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


class Garbled:
    """squeue, sinfo and scontrol on PATH that print whatever the test sets."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        self.monkeypatch = monkeypatch
        for name in ("squeue", "sinfo", "scontrol"):
            make_script(directory / name, PRINTER)
        self.set(scontrol=PARTITION, squeue=SQUEUE_OK, sinfo=SINFO_OK)

    def set(self, **outputs: bytes) -> None:
        for name, data in outputs.items():
            (self.directory / f"{name}.out").write_bytes(data)

    def repeat(self, name: str, times: int) -> None:
        self.monkeypatch.setenv(f"GARBLE_REPEAT_{name}", str(times))

    def scheduler(self, max_output: Optional[int] = None) -> SlurmScheduler:
        if max_output is None:  # the default bound, as mint-burst runs it
            return SlurmScheduler("cloud", CommandRunner(timeout=60))
        return SlurmScheduler("cloud", CommandRunner(timeout=60, max_output=max_output))


@pytest.fixture
def garbled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Garbled:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("GARBLE_DIR", str(bin_dir))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return Garbled(bin_dir, monkeypatch)


def test_non_utf8_bytes_from_squeue_do_not_crash_the_read(garbled: Garbled) -> None:
    garbled.set(squeue=b"7|PENDING|1|100|N/A|N/A|N/A|||(null)|Reason\xff\xfe\x80\n")
    [job] = garbled.scheduler().get_status().jobs
    assert job.reason == "Reason\ufffd\ufffd\ufffd"
    garbled.set(squeue=b"\xff|\xc3(|1|||||||\n")
    with pytest.raises(InputError, match="squeue output line 1"):
        garbled.scheduler().get_status()


def test_a_flood_from_squeue_is_cut_at_the_bound(garbled: Garbled) -> None:
    garbled.repeat("squeue", 200_000)  # 9 MB against a 64 KiB bound
    with pytest.raises(InputError, match="squeue printed more than 65536 bytes"):
        garbled.scheduler(max_output=64 * 1024).get_status()
    garbled.repeat("squeue", 1)
    assert len(garbled.scheduler(max_output=len(PARTITION)).get_status().jobs) == 1


def test_a_flood_on_stderr_keeps_only_its_tail(tmp_path: Path) -> None:
    noisy = make_script(
        tmp_path / "noisy",
        "import sys\nsys.stderr.write('x' * 3_000_000 + '\\nlast words\\n')\nsys.exit(1)\n",
    )
    result = run_command([noisy], timeout=60, max_output=1000)
    assert result.return_code == 1
    assert len(result.stderr) == 1000 and result.stderr.endswith("\nlast words\n")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"7|PENDING|\xc2\xb2|100|N/A|N/A|N/A|||(null)|Resources\n", "bad job id or node count"),
        (b"7|PENDING|\xd9\xa3|100|N/A|N/A|N/A|||(null)|Resources\n", "bad job id or node count"),
        (b"7|PENDING|" + b"9" * 5000 + b"|1|N/A|N/A|N/A|||(null)|R\n", "bad job id or node"),
        (b"7|RUNNING|1|1|N/A|N/A|N/A|c[0-99999][0-9]||(null)|None\n", "more than 100000"),
        (b"7|RUNNING|1|1|N/A|N/A|N/A|c" + b"[1]" * 5000 + b"||(null)|None\n", "longer than"),
        (b"7_[1-3]|PENDING|1|1|7|\xd9\xa3-\xd9\xa5|N/A|||(null)|Resources\n", "array task"),
    ],
    ids=[
        "superscript-count",
        "arabic-digit-count",
        "5000-digit-count",
        "nested-host-list",
        "5000-bracket-groups",
        "arabic-digit-array",
    ],
)
def test_hostile_squeue_lines_are_refused(garbled: Garbled, line: bytes, message: str) -> None:
    garbled.set(squeue=line)
    with pytest.raises(InputError, match=message):
        garbled.scheduler().get_status()


def test_a_nested_host_list_is_sized_before_it_is_expanded() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than 100000 names"):
            expand_hostlist("c[0-99999][0-9]")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_host_lists_of_one_answer_share_one_budget() -> None:
    line = "{n}|RUNNING|1|1|N/A|N/A|N/A|c[1-600]||(null)|None"
    text = "\n".join(line.format(n=n) for n in range(1, 5))
    assert len(parse_squeue(text, max_names=2400)) == 4
    with pytest.raises(InputError, match="host lists of one answer expand to more than 2399 names"):
        parse_squeue(text, max_names=2399)


def traced_peak(action: Callable[[], object]) -> int:
    """Peak bytes Python allocated while `action` ran (an exception it raises passes through)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_last_line_reads_only_the_end_of_a_flood() -> None:
    flood = "ab\n" * 1_000_000 + "  last words  \n\n"
    assert traced_peak(lambda: last_line(flood)) < 500_000
    assert last_line(flood) == "last words"
    assert last_line("x" * 100_000) == "x" * 300
    assert last_line("\n \n\n") == ""


def test_squeue_and_sinfo_stop_at_the_first_bad_line_without_splitting_the_rest() -> None:
    flood = "ab\n" * 1_000_000
    for parse, what in ((parse_squeue, "squeue"), (parse_sinfo, "sinfo")):
        with pytest.raises(InputError, match=f"{what} output line 1:") as caught:
            tracemalloc.start()
            try:
                parse(flood)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        assert caught.value.message.startswith(f"{what} output line 1")
        assert peak < 500_000, what


def test_an_answer_of_more_lines_than_the_bound_is_refused_naming_the_bound() -> None:
    jobs = "".join(f"{n}|PENDING|1|100|N/A|N/A|N/A|||(null)|Resources\n" for n in range(1, 12))
    nodes = "".join(f"c{n}|idle~\n" for n in range(1, 12))
    assert len(parse_squeue(jobs, max_lines=11)) == 11
    assert len(parse_sinfo(nodes, max_lines=11)) == 11
    with pytest.raises(InputError, match=r"squeue printed more than 10 lines.*MAX_LINES"):
        parse_squeue(jobs, max_lines=10)
    with pytest.raises(InputError, match=r"sinfo printed more than 10 lines.*MAX_LINES"):
        parse_sinfo(nodes, max_lines=10)


def test_pbs_answers_are_sized_before_they_are_parsed() -> None:
    job = '"{n}.head": {{"job_state": "Q", "queue": "cloud", "Resource_List": {{"nodect": 1}}}}'
    qstat = '{"Jobs": {' + ", ".join(job.format(n=n) for n in range(100)) + "}}"
    marks = sum(qstat.count(c) for c in ",[{")  # what the bound counts
    assert len(parse_qstat_json(qstat, "cloud", max_values=marks)) == 100
    with pytest.raises(InputError, match=rf"more than {marks - 1} values.*MAX_JSON_VALUES"):
        parse_qstat_json(qstat, "cloud", max_values=marks - 1)
    with pytest.raises(InputError, match="pbsnodes -F json printed JSON of more than 1,000"):
        parse_pbsnodes_json('{"nodes": {"c1": ' + "[]," * 100_000, max_values=1000)
    xml = "<Data>" + "<Job><Job_Id>1.head</Job_Id><job_state>Q</job_state></Job>" * 10 + "</Data>"
    tags = xml.count("<")
    assert len(parse_qstat_xml(xml, "cloud", max_tags=tags)) == 10
    with pytest.raises(InputError, match=rf"more than {tags - 1} XML tags.*MAX_XML_TAGS"):
        parse_qstat_xml(xml, "cloud", max_tags=tags - 1)


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=2000)
def test_random_bytes_as_scheduler_output_raise_only_input_errors(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    for parse in (parse_squeue, parse_sinfo, lambda t: parse_partition(t, "cloud")):
        with contextlib.suppress(InputError):
            parse(text)


@given(st.text(alphabet="c0123456789[]-,", max_size=60))
@settings(max_examples=500, deadline=2000)
def test_random_host_lists_expand_within_the_bound_or_raise_value_error(text: str) -> None:
    try:
        names = expand_hostlist(text)
    except ValueError:
        return
    assert len(names) <= 100_000


# ---- provider scripts ------------------------------------------------------------------


def provider_with(tmp_path: Path, body: str, **bound: int) -> CommandProvider:
    path = make_script(tmp_path / "site-script", body)
    config = BurstConfig(
        provider="command", command=CommandSettings(create=[path], list=[path], delete=[path])
    )
    return CommandProvider(config, **bound)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ("import sys; sys.stdout.buffer.write(b'\\xff\\xfe{}')", InputError, "did not print JSON"),
        (
            "import sys; sys.stderr.buffer.write(b'bad \\xff'); sys.exit(3)",
            UnavailableError,
            "exited with status 3: bad \ufffd",
        ),
        ("print('[' * 20000 + ']' * 20000)", InputError, "nested too deeply"),
        ("print('{\"instances\": ' + '1' * 5000 + '}')", InputError, "unusable JSON"),
    ],
    ids=["non-utf8-stdout", "non-utf8-stderr", "deep-nesting", "huge-number"],
)
def test_garbled_provider_scripts_are_refused(
    tmp_path: Path, body: str, error: type[MintError], message: str
) -> None:
    with pytest.raises(error, match=message):
        provider_with(tmp_path, body + "\n").list_instances()


def test_a_flood_from_a_provider_script_is_cut_at_the_bound(tmp_path: Path) -> None:
    flood = "import sys\nfor _ in range(1000): sys.stdout.write(' ' * 65536)\n"
    with pytest.raises(InputError, match="printed more than 65536 bytes"):
        provider_with(tmp_path, flood, max_output=64 * 1024).list_instances()


@pytest.mark.parametrize("action", ["list", "delete"])
def test_a_flood_from_a_provider_script_names_the_action(tmp_path: Path, action: str) -> None:
    flood = "import sys\nfor _ in range(100): sys.stdout.write(' ' * 65536)\n"
    provider = provider_with(tmp_path, flood, max_output=64 * 1024)
    with pytest.raises(InputError, match=f"^{action} script: .*printed more than 65536 bytes"):
        provider.list_instances() if action == "list" else provider.terminate(["i-1"])


def test_a_provider_answer_is_sized_before_json_builds_it(tmp_path: Path) -> None:
    many = "print('{\"instances\": [' + '[],' * 100_000)\n"
    with pytest.raises(InputError, match=r"list script .* more than 1,000 values.*MAX_JSON_VALUES"):
        provider_with(tmp_path, many, max_values=1000).list_instances()
    valid = json.dumps(
        {"instances": [{"instance_id": f"i-{n}", "node": f"c{n}"} for n in range(300)]}
    )
    body = f"print({valid!r})\n"
    assert len(provider_with(tmp_path, body, max_values=1000).list_instances()) == 300


def test_a_successful_provider_answer_leaves_its_stderr_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unexpected(text: str) -> str:
        raise AssertionError("stderr of a successful answer was scanned")

    monkeypatch.setattr(command_provider, "last_line", unexpected)
    body = "import sys; sys.stderr.write('ab\\n' * 100_000); print('{\"instances\": []}')\n"
    assert provider_with(tmp_path, body).list_instances() == []


def test_non_utf8_bytes_in_an_instance_id_are_replaced_not_fatal(tmp_path: Path) -> None:
    body = (
        "import sys\n"
        'sys.stdout.buffer.write(b\'{"instances": [{"instance_id": "vm-\\xff", "node": "c1"}]}\')\n'
    )
    [instance] = provider_with(tmp_path, body).list_instances()
    assert instance.instance_id == "vm-\ufffd"


@given(st.binary(max_size=4000))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_bytes_from_a_provider_script_raise_only_mint_errors(
    tmp_path: Path, data: bytes
) -> None:
    (tmp_path / "answer").write_bytes(data)
    body = f"import sys; sys.stdout.buffer.write(open({str(tmp_path / 'answer')!r}, 'rb').read())\n"
    with contextlib.suppress(MintError):
        provider_with(tmp_path, body).list_instances()


# ---- launches whose outcome is unknown (item 4) --------------------------------------


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUD_DB", str(tmp_path / "cloud.json"))
    return tmp_path / "cloud.json"


def cloud_vms(db: Path) -> dict[str, Any]:
    return dict(json.loads(db.read_text())["vms"]) if db.exists() else {}


# The site's create script makes the VM, then fails: it dies, hangs, or loses the answer.
AFTER_CREATE = {
    "exit-3": "import sys; sys.exit(3)",
    "hang": "import time; time.sleep(60)",
    "garbage": "print('created, probably')",
}


def engine_with(tmp_path: Path, create: list[str], timeout: float, queue: QueueDouble) -> Engine:
    cloud_script = make_script(tmp_path / "cloud.py", CLOUD_SCRIPT)
    config = BurstConfig(
        provider="command",
        state_file=tmp_path / "state.json",
        command=CommandSettings(
            create=create, list=[cloud_script], delete=[cloud_script], timeout=timeout
        ),
    )
    return Engine(
        scheduler=queue,
        provider=CommandProvider(config),
        store=FileStore(config.state_file),
        settings=PolicySettings(hosts=HOSTS, max_nodes=2),
        user_data=lambda host: "",
        clock=Clock(),
    )


def status_text(tmp_path: Path) -> str:
    """`mint-burst status` as an operator reads it, over the test's state file."""
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({h.ip: h.name for h in HOSTS}))
    config = tmp_path / "status.yaml"
    config.write_text(
        json.dumps(
            {
                "provider": "command",
                "hosts_file": str(hosts),
                "state_file": str(tmp_path / "state.json"),
                "command": {"create": ["true"], "list": ["true"], "delete": ["true"]},
            }
        )
    )
    result = CliRunner().invoke(main, ["status", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("after", list(AFTER_CREATE), ids=list(AFTER_CREATE))
def test_a_create_script_that_fails_after_creating_leaks_no_vm(
    tmp_path: Path, cloud: Path, after: str
) -> None:
    # The create script makes the VM like the cloud script, then fails in its own way.
    body = CLOUD_SCRIPT.replace(
        'print(json.dumps({"instance_id": vm}))',
        f"json.dump(db, open(db_path, 'w'))\n    {AFTER_CREATE[after]}",
    )
    create = make_script(tmp_path / "create.py", body)
    queue = QueueDouble(pending=1)
    report = engine_with(tmp_path, [create], 2, queue).step()
    assert (
        report.errors and "kept until a listing shows it or launch_grace passes" in report.errors[0]
    )
    [vm] = cloud_vms(cloud)
    status = service.StatusView(FileStore(tmp_path / "state.json").load(), 0.0, 60).to_json()
    [node] = status["nodes"]
    assert (node["name"], node["phase"], node["instance_id"]) == ("c1", REQUESTED, None)
    assert node["launch_error"]
    if after == "exit-3":
        text = status_text(tmp_path)
        assert "launch of c1 failed, the instance may exist" in text
        assert "exited with status 3" in text
    report = engine_with(tmp_path, [create], 2, queue).step()
    assert list(cloud_vms(cloud)) == [vm]
    assert report.actions == [] and report.orphans == []
    assert FileStore(tmp_path / "state.json").load().records["c1"].instance_id == vm


def test_a_launch_is_adopted_by_its_token_when_the_cloud_names_the_vm_itself(
    tmp_path: Path, cloud: Path
) -> None:
    # A cloud that ignores our node name but keeps the request's token, then times out.
    create = make_script(
        tmp_path / "create.py",
        "import json, os, sys, time\n"
        "request = json.load(sys.stdin)\n"
        "json.dump({'next': 2, 'vms': {'vm-1': {'node': 'auto-x1', 'ip': '',"
        " 'token': request['token']}}}, open(os.environ['CLOUD_DB'], 'w'))\n"
        "time.sleep(60)\n",
    )
    queue = QueueDouble(pending=1)
    engine_with(tmp_path, [create], 2, queue).step()
    listing = make_script(
        tmp_path / "list.py",
        "import json, os\n"
        "db = json.load(open(os.environ['CLOUD_DB']))\n"
        "print(json.dumps({'instances': [{'instance_id': k, **v} for k, v in db['vms'].items()]}))\n",
    )
    engine = engine_with(tmp_path, [create], 2, queue)
    assert isinstance(engine.provider, CommandProvider)
    engine.provider.settings = CommandSettings(create=[create], list=[listing], delete=[listing])
    report = engine.step()
    assert FileStore(tmp_path / "state.json").load().records["c1"].instance_id == "vm-1"
    assert report.actions == [] and report.orphans == []


# ---- the daemon goes on after any exception ------------------------------------------


class Surprise(Exception):
    """An exception type no code in mint-burst knows about."""


class SurprisingScheduler(QueueDouble):
    """Throws Surprise at every read; at the second read, asks the daemon to stop."""

    def get_status(self) -> QueueStatus:
        self.calls.append("get_status")
        if len(self.calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        raise Surprise("the scheduler said something nobody expected")


def daemon_config(tmp_path: Path, **changes: Any) -> BurstConfig:
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({h.ip: h.name for h in HOSTS}))
    cloud_script = make_script(tmp_path / "cloud.py", CLOUD_SCRIPT)
    return BurstConfig(
        provider="command",
        hosts_file=hosts,
        state_file=tmp_path / "state.json",
        poll_interval=0.01,
        command=CommandSettings(create=[cloud_script], list=[cloud_script], delete=[cloud_script]),
        **changes,
    )


def test_run_survives_an_unexpected_exception_and_status_shows_it(
    tmp_path: Path, cloud: Path, garbled: Garbled, caplog: pytest.LogCaptureFixture
) -> None:
    config = daemon_config(tmp_path)
    engine = service.build_engine(config)
    engine.scheduler = scheduler = SurprisingScheduler()
    with caplog.at_level(logging.DEBUG):
        steps = service.run_loop(config, dry_run=False, reap_orphans=False, engine=engine)
    assert steps == 2 and scheduler.calls == ["get_status", "get_status"]
    failures = [r for r in caplog.records if r.getMessage().startswith("step failed")]
    assert len(failures) == 2
    assert "unexpected Surprise: the scheduler said" in failures[0].getMessage()
    assert failures[0].exc_info is not None  # the traceback, with -v
    view = service.status(config, read_scheduler=False).to_json()
    assert view["last_error"] == "unexpected Surprise: the scheduler said something nobody expected"


def test_run_finds_a_bad_user_data_template_before_the_loop(
    tmp_path: Path, cloud: Path, garbled: Garbled
) -> None:
    template = tmp_path / "user-data.sh"
    template.write_text("#!/bin/sh\nhostname $nodename\n")
    config = daemon_config(tmp_path, ec2=Ec2Settings(user_data_file=template))
    engine = service.build_engine(config)
    engine.scheduler = scheduler = SurprisingScheduler()
    with pytest.raises(ConfigError, match="unknown or bad placeholder"):
        service.run_loop(config, dry_run=False, reap_orphans=False, engine=engine)
    assert scheduler.calls == []
    assert not config.state_file.exists()


def test_every_restarting_burst_unit_stops_restarting_on_a_config_error() -> None:
    units = sorted(EXAMPLES.glob("*.service"))
    assert units
    for unit in units:
        lines = unit.read_text().splitlines()
        if any(line.startswith("Restart=") and line != "Restart=no" for line in lines):
            assert "RestartPreventExitStatus=78" in lines, unit.name


# ---- --reap-orphans against the real Slurm (item 3) ----------------------------------


@pytest.mark.slurm
def test_reap_orphans_after_a_lost_state_file_spares_the_busy_node(
    slurm_cluster: Callable[..., SlurmCluster], tmp_path: Path
) -> None:
    cluster = slurm_cluster(nodes=("c1@cloud", "c2@cloud"))
    burst = Burst(tmp_path, cluster, {h.ip: h.name for h in HOSTS}, idle_timeout=600)
    long_job, busy, idle = one_busy_one_idle(burst, cluster)
    # The state file is corrupt and moved aside, as the tool's own error message suggests.
    burst.state_file.rename(burst.state_file.with_suffix(".bad"))
    ids = burst.instances()

    report = json.loads(burst.run("once", "--reap-orphans", "--json").stdout)
    assert list(burst.instances()) == [busy]
    assert slurmd_running(cluster, busy) and not slurmd_running(cluster, idle)
    assert job_state(cluster, long_job) == "RUNNING"
    assert report["done"] == [f"reaped orphan {ids[idle]}"]
    assert [o.split(" ")[0] for o in report["orphans"]] == [ids[busy]]

    cluster.run("scancel", long_job)
    cluster.wait_job_state(long_job, "CANCELLED")
    cluster.wait_for(lambda: cluster.node_state(busy) == "idle", f"{busy} to be idle")
    burst.run("once", "--reap-orphans", "--json")
    assert burst.instances() == {}
