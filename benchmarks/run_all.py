"""``make bench``: run every benchmark (each in its own process, one torch thread) and write
benchmarks/RESULTS.md: every figure a ratio against a baseline timed in the same run, with the command
and the machine.

    .venv/bin/python benchmarks/run_all.py [--only merge_methods ...] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "evaluation": "bench_evaluation.py",
    "population": "bench_population.py",
    "merge_methods": "bench_merge_methods.py",
    "scoop": "bench_scoop.py",
    "smollm2": "bench_smollm2.py",
    "workers_smollm2": "bench_workers_smollm2.py",
}
DEVICE_AWARE = ("evaluation", "population")


MARK = "<!-- bench: {} -->"


def previous_sections(path: Path) -> dict[str, str]:
    """The sections of an existing RESULTS.md, by benchmark name."""
    if not path.exists():
        return {}
    sections, name = {}, None
    for line in path.read_text().splitlines():
        found = [key for key in BENCHMARKS if line.strip() == MARK.format(key)]
        if found:
            name = found[0]
            sections[name] = []
        elif name is not None:
            sections[name].append(line)
    return {key: "\n".join(lines).strip() for key, lines in sections.items()}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS),
                        help="run these and keep the other sections of an existing RESULTS.md")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sections = previous_sections(args.output)
    for name, script in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        command = [sys.executable, str(HERE / script)]
        if name in DEVICE_AWARE and args.device != "cpu":
            command += ["--device", args.device]
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
            sections[name] = f"### {name}\n\nfailed: {tail[0]}"
        else:
            took, day = time.time() - started, time.strftime("%F")
            where = f"`python benchmarks/{script}`, {took:.0f} s, {day}; {machine()}"
            sections[name] = f"{done.stdout.strip()}\n\n({where})"
        print(sections[name] + "\n", flush=True)
    header = ("# Speed\n\nWritten by `make bench` (`--only` reruns some sections and keeps the others). One torch "
              "thread per process; every figure is a ratio against a baseline timed in the same run, on the machine "
              "its section names.\n")
    body = "\n\n".join(f"{MARK.format(name)}\n{sections[name]}" for name in BENCHMARKS if name in sections)
    args.output.write_text(header + "\n" + body + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
