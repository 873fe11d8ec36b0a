"""The workflow-side examples under examples/mint-poll/ load and parse as shipped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mint_common.config import Secret
from mint_poll.config import load_poll_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mint-poll"


def test_workflow_config_example_loads_with_the_poll_config_loader() -> None:
    token_file = Path.home() / ".config" / "mint" / "api-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("a" * 64 + "\n")
    token_file.chmod(0o600)
    config = load_poll_config(EXAMPLES / "submit-workflow.yaml")
    assert config.url == "https://nims.mintsys.jp"
    assert config.site_id == "nims-dev"
    assert config.token == Secret("a" * 64)
    # retry:5,60 is the first try and 5 retries, 60 s apart
    assert config.retry.max_attempts == 6 and config.retry.base_delay == 60
    assert config.read_timeout == 300


def test_module_script_example_is_valid_bash_and_executable() -> None:
    script = EXAMPLES / "submit-module.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
