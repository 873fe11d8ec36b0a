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
