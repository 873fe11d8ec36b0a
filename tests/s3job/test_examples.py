"""The example files users copy must load with mint-s3job's own config loader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mint_common.config import load_config
from mint_s3job.config import S3JobConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mint-s3job"


@pytest.mark.parametrize("name", ["head-node.yaml", "on-premises.yaml"], ids=str)
def test_example_config_loads(name: str) -> None:
    config = load_config(S3JobConfig, "mint-s3job", config_file=EXAMPLES / name)
    assert config.bucket == "my-mint-jobs"
    assert config.region == "ap-northeast-1"


def test_head_node_example_matches_the_seed_paths() -> None:
    config = load_config(S3JobConfig, "mint-s3job", config_file=EXAMPLES / "head-node.yaml")
    assert config.workdir == Path("/home/ubuntu/job-aws")
    assert config.sbatch == "/opt/slurm/bin/sbatch"


def test_seed_setting_names_are_accepted(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.yaml"
    legacy.write_text("S3_JOB_BUCKET_NAME: old-bucket\nITO_WORK_DIR: /home/ubuntu/job-aws\n")
    config = load_config(S3JobConfig, "mint-s3job", config_file=legacy)
    assert config.bucket == "old-bucket" and config.workdir == Path("/home/ubuntu/job-aws")


@pytest.mark.parametrize("name", ["epilog-slurmctld.sh", "mint-module.sh"], ids=str)
def test_example_scripts_parse(name: str) -> None:
    result = subprocess.run(["bash", "-n", str(EXAMPLES / name)], capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr


def _install_wrapper(tmp_path: Path, settings: str, mode: int) -> Path:
    wrapper = tmp_path / "libexec" / "mint-s3job-epilog.sh"
    wrapper.parent.mkdir()
    wrapper.write_bytes((EXAMPLES / "epilog-slurmctld.sh").read_bytes())
    wrapper.chmod(0o755)
    conf = wrapper.with_suffix(".conf")
    conf.write_text(settings)
    conf.chmod(mode)
    return wrapper


def test_epilog_wrapper_takes_its_settings_from_the_file_beside_it(tmp_path: Path) -> None:
    """slurmctld passes only SLURM_* variables, so the wrapper's settings file is the route."""
    fake = tmp_path / "mint-s3job"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@" "PATH=$PATH" "KEY=$AWS_CONFIG_FILE"\n')
    fake.chmod(0o755)
    wrapper = _install_wrapper(
        tmp_path,
        f"mint_s3job={fake}\nconfig='/etc/mint/head node.yaml'\nlog_file={tmp_path}/e.log\n"
        "export AWS_CONFIG_FILE=/etc/mint/aws-config\n",
        0o644,
    )
    done = subprocess.run(
        [str(wrapper)], env={"SLURM_JOB_ID": "7"}, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "epilog",
        "--log-file",
        f"{tmp_path}/e.log",
        "--config",
        "/etc/mint/head node.yaml",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "KEY=/etc/mint/aws-config",
    ]


def test_epilog_wrapper_refuses_settings_others_can_write(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = tmp_path / "mint-s3job"
    fake.write_text(f"#!/bin/bash\ntouch {marker}\n")
    fake.chmod(0o755)
    wrapper = _install_wrapper(tmp_path, f"mint_s3job={fake}\n", 0o666)
    done = subprocess.run([str(wrapper)], env={}, capture_output=True, text=True, timeout=10)
    assert done.returncode == 78
    assert "refusing" in done.stderr and "writable by others" in done.stderr
    assert not marker.exists()


def test_epilog_wrapper_keeps_the_epilogs_errors_in_its_log_file(tmp_path: Path) -> None:
    """slurmctld throws the epilog's stderr away: the reason of a failure must reach the log."""
    fake = tmp_path / "mint-s3job"
    fake.write_text(
        '#!/bin/bash\necho "mint-s3job: error: no usable AWS credentials" >&2\nexit 77\n'
    )
    fake.chmod(0o755)
    log = tmp_path / "e.log"
    wrapper = _install_wrapper(tmp_path, f"mint_s3job={fake}\nlog_file={log}\n", 0o644)
    done = subprocess.run([str(wrapper)], env={}, capture_output=True, text=True, timeout=10)
    assert done.returncode == 77
    assert "no usable AWS credentials" in log.read_text()


def test_epilog_wrapper_names_a_missing_command_in_its_log(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    missing = tmp_path / "no" / "mint-s3job"
    wrapper = _install_wrapper(tmp_path, f"mint_s3job={missing}\nlog_file={log}\n", 0o644)
    done = subprocess.run(
        [str(wrapper)], env={"PATH": "/nonexistent"}, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 69
    assert f"{missing} is not an executable file" in log.read_text()


def test_restarted_units_do_not_restart_on_a_config_error() -> None:
    """The daemon exits 78 only for a configuration mistake, which a restart cannot fix."""
    units = {p.name: p.read_text().splitlines() for p in EXAMPLES.glob("*.service")}
    restarted = [name for name, lines in units.items() if "Restart=on-failure" in lines]
    assert restarted == ["mint-s3job-dispatch.service"]
    for name in restarted:
        assert "RestartPreventExitStatus=78" in units[name], name
