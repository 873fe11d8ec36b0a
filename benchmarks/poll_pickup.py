"""Pickup delay of a chain of calculations, adaptive polling against the legacy 30 s.

    python benchmarks/poll_pickup.py [--chain 10] [--legacy-chain 4] [--idle-window 180]

Two `mint-poll run` agents poll one rehearsal server, each as its own site:
"adaptive" on the defaults (poll_min 2 s, poll_interval 60 s, poll_jitter 0.1) and
"legacy" at a fixed 30 s (poll_min = poll_interval = 30 s, no jitter), as the legacy
client polled. The workflow side is `mint-poll submit` (one process per calculation,
started when the previous one exits, as a module script chains remote steps): on the
defaults for the adaptive site, at the legacy client's fixed 10 s progress poll for the
legacy one. The command is /bin/true, so the figures are the wait, not the work.

The server runs in this process (the same Broker and DistcompServer that `mint-poll
serve` runs), so that every request is timed to the millisecond:

- pickup delay: allow-wait-calc -> the agent's calc-params for that calculation;
- end to end: the wall time of each `mint-poll submit` process (start to exit,
  Python start-up included), that is the time a chained step costs the workflow;
- requests per idle hour: the agents' calc-request count over `--idle-window` seconds
  after each one's last delivery, set beside what the schedule (mint_poll.pacing)
  predicts for that window; the hour figures come from the schedule (worst-case
  jitter, and the mean over 20 random seeds), which the measured window checks,
  since an hour of measurement would not fit a benchmark. The legacy count per hour
  is the window's count scaled to the hour (its pace is fixed).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from mint_poll.pacing import HOT_WINDOW, POLL_MIN, Pacer, SimulatedClock, idle_polls
from mint_poll.server import Answer, Broker, DistcompServer

BIN = Path(sys.executable).parent
TOKEN = "c" * 64
COMMAND = "true.sh"
SITES = ("adaptive", "legacy")
HOUR = 3600.0
DEFAULT_INTERVAL = 60.0
DEFAULT_JITTER = 0.1


class TimedBroker(Broker):
    """The rehearsal broker, noting when each request came: (monotonic time, endpoint,
    accept_id or None, site_id or None)."""

    def __init__(self, sites: Mapping[str, list[str]]) -> None:
        super().__init__(sites)
        self.requests: list[tuple[float, str, Optional[str], Optional[str]]] = []
        self._noted = threading.Lock()

    def handle(self, method: str, endpoint: str, query: Mapping[str, str], body: Any) -> Answer:
        fields = body if isinstance(body, dict) else {}
        accept_id = query.get("accept_id") or fields.get("accept_id")
        site_id = query.get("site_id") or fields.get("site_id")
        with self._noted:
            self.requests.append((time.monotonic(), endpoint, accept_id, site_id))
        return super().handle(method, endpoint, query, body)

    def first(self, endpoint: str, accept_id: str) -> float:
        return min(t for t, e, a, _s in self.requests if e == endpoint and a == accept_id)

    def polls(self, site: str, after: float, until: float) -> int:
        return sum(
            1
            for t, e, _a, s in self.requests
            if e == "calc-request" and s == site and after < t <= until
        )


@dataclass
class Chain:
    site: str
    pickups: list[float]
    end_to_end: list[float]
    last_delivery: float


def write_yaml(path: Path, settings: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(settings)))
    return path


@contextmanager
def agent(work: Path, url: str, site: str, pace: Mapping[str, Any]) -> Iterator[None]:
    home = work / site
    (home / "calc").mkdir(parents=True)
    config = write_yaml(
        home / "agent.yaml",
        {
            "url": url,
            "site_id": site,
            "token_file": str(work / "token"),
            "calc_base": str(home / "calc"),
            "state_dir": str(home / "state"),
            "commands": {COMMAND: "/bin/true"},
            **pace,
        },
    )
    with open(home / "agent.log", "w") as log:
        process = subprocess.Popen(
            [str(BIN / "mint-poll"), "--config", str(config), "--log-format", "plain", "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield
        finally:
            process.terminate()
            process.wait(timeout=60)


def run_chain(
    work: Path, url: str, broker: TimedBroker, site: str, count: int, pace: Mapping[str, Any]
) -> Chain:
    config = write_yaml(
        work / f"workflow-{site}.yaml",
        {"url": url, "site_id": site, "token_file": str(work / "token"), **pace},
    )
    pickups: list[float] = []
    end_to_end: list[float] = []
    last_delivery = 0.0
    for index in range(count):
        out_dir = work / f"out-{site}-{index}"
        started = time.monotonic()
        done = subprocess.run(
            [
                str(BIN / "mint-poll"),
                "-q",
                "--config",
                str(config),
                "submit",
                "--command",
                COMMAND,
                "--out-dir",
                str(out_dir),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        end_to_end.append(time.monotonic() - started)
        accept_id = yaml.safe_load(done.stdout)["accept_id"]
        pickups.append(
            broker.first("calc-params", accept_id) - broker.first("allow-wait-calc", accept_id)
        )
        last_delivery = broker.first("end-send", accept_id)
        print(
            f"  {site} {index + 1}/{count}: pickup {pickups[-1]:.2f} s,"
            f" end to end {end_to_end[-1]:.2f} s",
            flush=True,
        )
    return Chain(site, pickups, end_to_end, last_delivery)


def scheduled(window: float, start: float = 0.0, worst: bool = False, seeds: int = 20) -> float:
    """Polls of the default schedule in (start, start + window] after an activity."""

    class Worst(random.Random):
        def random(self) -> float:
            return 1 - 1e-12

    counts = []
    for seed in range(1 if worst else seeds):
        clock = SimulatedClock()
        rng = Worst() if worst else random.Random(seed)
        pacer = Pacer(POLL_MIN, DEFAULT_INTERVAL, jitter=DEFAULT_JITTER, clock=clock, rng=rng)
        counts.append(idle_polls(pacer, start, window, clock))
    return statistics.mean(counts)


def report(chain: Chain) -> None:
    pickups, e2e = chain.pickups, chain.end_to_end
    print(
        f"{chain.site}: {len(pickups)} chained calculations; pickup mean"
        f" {statistics.mean(pickups):.2f} s (min {min(pickups):.2f}, max {max(pickups):.2f});"
        f" end to end mean {statistics.mean(e2e):.2f} s (min {min(e2e):.2f},"
        f" max {max(e2e):.2f}); chain total {sum(e2e):.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=10, help="calculations, adaptive side")
    parser.add_argument("--legacy-chain", type=int, default=4, help="calculations, legacy side")
    parser.add_argument("--idle-window", type=float, default=180.0, help="seconds idle measured")
    args = parser.parse_args()
    legacy_agent = {"poll_min": 30, "poll_interval": 30, "poll_jitter": 0}
    legacy_submit = {"poll_min": 10, "progress_interval": 10}
    with tempfile.TemporaryDirectory(prefix="mint-poll-pickup-") as tmp:
        work = Path(tmp)
        (work / "token").write_text(TOKEN)
        (work / "token").chmod(0o600)
        broker = TimedBroker({site: [COMMAND] for site in SITES})
        with (
            DistcompServer(broker, TOKEN) as server,
            agent(work, server.url, "adaptive", {}),
            agent(work, server.url, "legacy", legacy_agent),
        ):
            ours = run_chain(work, server.url, broker, "adaptive", args.chain, {})
            legacy = run_chain(work, server.url, broker, "legacy", args.legacy_chain, legacy_submit)
            idle_end = max(ours.last_delivery, legacy.last_delivery) + args.idle_window
            time.sleep(max(0.0, idle_end - time.monotonic()))
            window = args.idle_window
            measured_ours = broker.polls(
                "adaptive", ours.last_delivery, ours.last_delivery + window
            )
            measured_legacy = broker.polls(
                "legacy", legacy.last_delivery, legacy.last_delivery + window
            )
    print()
    report(ours)
    report(legacy)
    print(
        f"idle window of {window:g} s after the last delivery: adaptive {measured_ours}"
        f" calc-requests (the schedule predicts {scheduled(window):.1f} on average,"
        f" {scheduled(window, worst=True):.0f} at worst, plus the one poll right after a"
        f" calculation was taken); legacy {measured_legacy}"
    )
    print(
        "requests per idle hour, adaptive (from the schedule): first hour after the last"
        f" delivery {scheduled(HOUR):.1f} mean / {scheduled(HOUR, worst=True):.0f} worst;"
        f" after the hot {HOT_WINDOW:g} s {scheduled(HOUR, HOT_WINDOW):.1f} /"
        f" {scheduled(HOUR, HOT_WINDOW, worst=True):.0f}; a later hour"
        f" {scheduled(HOUR, 5 * HOUR):.1f} / {scheduled(HOUR, 5 * HOUR, worst=True):.0f}"
    )
    print(
        f"requests per idle hour, legacy (measured, scaled): {measured_legacy * HOUR / window:.0f}"
    )


if __name__ == "__main__":
    main()
