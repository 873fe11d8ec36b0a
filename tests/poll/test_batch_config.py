"""The batch runner's settings in mint-poll.yaml and in the calculation record."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mint_common.errors import ConfigError, InputError
from mint_poll.batch import DEFAULT_MAX_IN_FLIGHT, BatchJob, BatchOverride
from mint_poll.config import load_poll_config
from mint_poll.state import CalcRecord, CalcStore
from tests.poll.conftest import write_token
from tests.poll.test_cli import EXAMPLES
from tests.poll.test_config import config_file


def test_runner_batch_section_and_a_commands_own_arguments(tmp_path: Path) -> None:
    config = load_poll_config(
        config_file(
            tmp_path,
            runner="slurm",
            batch={
                "partition": "cloud",
                "sbatch_args": ["--account=proj", "--qos=normal"],
                "watch_interval": "30s",
                "cancel_on_stop": True,
            },
            commands={
                "gpu.sh": {"run": "/bin/true", "sbatch_args": ["--gres=gpu:1"]},
                "here.sh": {"run": "/bin/true", "runner": "local"},
                "plain.sh": "/bin/true",
            },
        )
    )
    assert config.max_parallel == DEFAULT_MAX_IN_FLIGHT
    assert (config.batch.runner, config.batch.watch_interval) == ("slurm", 30.0)
    assert config.commands["gpu.sh"].batch == BatchOverride(sbatch_args=("--gres=gpu:1",))
    gpu = config.batch_for("gpu.sh")
    assert gpu is not None
    assert gpu.sbatch_args == ("--account=proj", "--qos=normal", "--gres=gpu:1")
    assert config.batch_for("here.sh") is None
    assert config.batch_for("plain.sh") == config.batch
    # A shell string from the server (allow_any_command) never becomes a job.
    assert config.batch_for("echo hi") is None


def test_local_runner_keeps_one_at_a_time_and_max_parallel_wins(tmp_path: Path) -> None:
    assert load_poll_config(config_file(tmp_path)).max_parallel == 1
    explicit = load_poll_config(config_file(tmp_path, runner="pbs", max_parallel=3))
    assert explicit.max_parallel == 3 and explicit.batch.runner == "pbs"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"runner": "lsf"}, "key 'runner': expected one of 'local', 'slurm', 'pbs'"),
        ({"batch": {"partion": "x"}}, "unknown key batch.partion"),
        ({"batch": {"watch_interval": 0}}, "batch.watch_interval"),
        ({"batch": {"runner": "slurm"}}, "top-level key 'runner'"),
        ({"commands": {"x": {"run": "/a", "runner": "lsf"}}}, "key commands['x'].runner"),
        (
            {"commands": {"x": {"run": "/a", "sbatch_args": "--gres=gpu"}}},
            "key commands['x'].sbatch_args: expected a list of strings",
        ),
    ],
    ids=["runner", "typo", "interval", "runner-in-batch", "cmd-runner", "cmd-args"],
)
def test_bad_batch_settings_name_the_key(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_poll_config(config_file(tmp_path, **settings))


def test_record_keeps_its_job_and_refuses_a_job_it_cannot_read(tmp_path: Path) -> None:
    store = CalcStore(tmp_path)
    store.ensure()
    job = BatchJob("slurm", "mint-poll-a1-0f", str(tmp_path), ["sbatch", "x"], job_id="42")
    store.save(CalcRecord("a1", "site", str(tmp_path), "", batch_job=job))
    loaded = store.load("a1")
    assert loaded is not None and loaded.batch_job == job
    path = tmp_path / "calcs" / "a1.json"
    document = json.loads(path.read_text())
    document["batch_job"] = {"name": 7}
    path.write_text(json.dumps(document))
    # Read as "no job", it would be submitted a second time.
    with pytest.raises(InputError, match="its batch job cannot be read"):
        store.load("a1")


def test_the_slurm_example_loads_with_the_tools_loader(tmp_path: Path) -> None:
    token = write_token(tmp_path)
    text = (EXAMPLES / "mint-poll-slurm.yaml").read_text()
    copy = tmp_path / "mint-poll.yaml"
    copy.write_text(text.replace("/etc/mint/mint-poll.token", str(token)))
    config = load_poll_config(copy)
    assert (config.batch.runner, config.batch.partition, config.max_parallel) == (
        "slurm",
        "cloud",
        DEFAULT_MAX_IN_FLIGHT,
    )
    fem = config.batch_for("run_fem.sh")
    assert fem is not None and fem.sbatch_args[:2] == ("--account=mat-proj", "--qos=normal")
    assert fem.sbatch_args[-1] == "--gres=gpu:1"
    assert config.batch_for("make_plot.sh") is None
    assert config.timeout_for(config.commands["run_fem.sh"]) == 86400
