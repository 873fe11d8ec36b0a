"""Generate the three example job traces of mint-burst (fixed seed, so they are reproducible).

    python benchmarks/burst_traces.py [OUTPUT_DIR]   (default examples/mint-burst/traces)

Each file is in the format of
`sacct --parsable2 --noheader --format=JobID,Submit,Start,End,NNodes,Partition,State`:
- burst.sacct:   ~200 short jobs within two minutes, three hours of silence, ~100 more;
- trickle.sacct: ~300 Poisson arrivals over ~15 h, lognormal runtimes with median 15 min;
- mix.sacct:     1-, 2- and 4-node jobs arriving over 8 h.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import sys
from pathlib import Path

SEED = 20261121
ORIGIN = dt.datetime(2026, 11, 2, 8, 0, 0)


def _lognormal(rng: random.Random, median_s: float, sigma: float, low: float = 30.0) -> float:
    return max(low, rng.lognormvariate(math.log(median_s), sigma))


def _line(job_id: int, submit: float, runtime: float, nodes: int) -> str:
    start = ORIGIN + dt.timedelta(seconds=round(submit))
    end = start + dt.timedelta(seconds=round(runtime))
    iso = "%Y-%m-%dT%H:%M:%S"
    return (
        f"{job_id}|{start.strftime(iso)}|{start.strftime(iso)}|{end.strftime(iso)}|{nodes}"
        "|cloud|COMPLETED"
    )


def burst(rng: random.Random) -> list[str]:
    lines: list[str] = []
    job_id = 1000
    for offset, count in ((0.0, 200), (4 * 3600.0, 100)):
        for _ in range(count):
            submit = offset + rng.uniform(0, 120)
            lines.append(_line(job_id, submit, _lognormal(rng, 300, 0.4), 1))
            job_id += 1
    return lines


def trickle(rng: random.Random) -> list[str]:
    lines: list[str] = []
    now, job_id = 0.0, 5000
    rate = 300 / (15 * 3600)
    while len(lines) < 300:
        now += rng.expovariate(rate)
        lines.append(_line(job_id, now, _lognormal(rng, 900, 0.8), 1))
        job_id += 1
    return lines


def mix(rng: random.Random) -> list[str]:
    lines: list[str] = []
    now, job_id = 0.0, 9000
    while True:
        now += rng.expovariate(12 / 3600)
        if now > 8 * 3600:
            return lines
        nodes = rng.choices((1, 2, 4), weights=(0.6, 0.25, 0.15))[0]
        lines.append(_line(job_id, now, _lognormal(rng, 1800, 0.7), nodes))
        job_id += 1


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/mint-burst/traces")
    out.mkdir(parents=True, exist_ok=True)
    for name, make in (("burst", burst), ("trickle", trickle), ("mix", mix)):
        lines = sorted(make(random.Random(f"{SEED}-{name}")), key=lambda s: s.split("|")[1])
        (out / f"{name}.sacct").write_text("\n".join(lines) + "\n")
        print(f"{out / (name + '.sacct')}: {len(lines)} jobs")


if __name__ == "__main__":
    main()
