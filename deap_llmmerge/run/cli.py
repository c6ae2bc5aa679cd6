"""``deap-llmmerge``: the command line. The only module that configures logging and prints."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from .. import __version__
from ..distributed.scoop import LOCK_ENV, PROGRESS_ENV, ROOT_PID_ENV, STATUS_ENV
from ..errors import ConfigError, LLMMergeError, RunInterrupted, first_line
from ..scoring.objectives import SINGLE
from .config import load_config

__all__ = ["main", "RunInterrupted"]


def _quiet_flag() -> argparse.ArgumentParser:
    """``-q`` accepted after the subcommand as well as before it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="log warnings only")
    return parent


def _parser() -> argparse.ArgumentParser:
    quiet = _quiet_flag()
    parser = argparse.ArgumentParser(prog="deap-llmmerge", description="Evolve merges of language models with DEAP.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument("--version", action="version", version=f"deap-llmmerge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("scoop-entry", parents=[quiet], help="print the script path to run under python -m scoop")
    report = commands.add_parser("report", parents=[quiet], help="draw PNG plots of a run into DIR/report/")
    report.add_argument("run", type=Path, help="the run's output directory (finished, or stopped: its checkpoint)")
    run = commands.add_parser("run", parents=[quiet], help="search for the best merge a config describes")
    run.add_argument("config", type=Path, help="YAML run config")
    run.add_argument("--output", type=Path, help="output directory (default runs/<timestamp>)")
    run.add_argument("--workers", type=int, default=1, help="score candidates in N processes (default 1)")
    run.add_argument("--backend", choices=["scoop", "pool", "ray"], default="scoop",
                     help="with --workers > 1: SCOOP workers (default) or a multiprocessing pool; ray: N Ray "
                          "actors (a local Ray, or the cluster of --address)")
    run.add_argument("--address", help="with --backend ray: an existing Ray cluster (auto, HOST:PORT, ray://HOST:PORT)")
    run.add_argument("--hostfile", type=Path, help="SCOOP hostfile for multi-host runs")
    run.add_argument("--scoop-args", default="", metavar="ARGS",
                     help="more options for python -m scoop, e.g. '--tunnel' (workers reach the broker through ssh) "
                          "or '--external-hostname HOST'")
    run.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    run.add_argument("--force", action="store_true",
                     help="start afresh in a non-empty --output; with --resume, accept a changed config or inputs")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="let models with their own code (auto_map) run it (as trust_remote_code: true does)")
    export = commands.add_parser("export", parents=[quiet], help="rebuild a merged model from a recipe.json")
    export.add_argument("recipe", type=Path, help="a run's recipe.json, or the run folder holding it")
    export.add_argument("--output", type=Path, required=True, help="folder for the merged model (must not exist)")
    export.add_argument("--member", type=int, help="member K (from 0, best first) of the recipe's Pareto front "
                        "(NSGA-II runs) or hall of fame (tournament runs)")
    export.add_argument("--models-from", type=Path, metavar="DIR",
                        help="the folder that holds the sources now, if they moved (each found by its name)")
    export.add_argument("--no-hash-check", action="store_true", help="skip the check that sources are unchanged")
    export.add_argument("--trust-remote-code", action="store_true",
                        help="run the source models' own code (never done on a recipe's word alone)")
    data = commands.add_parser("data", parents=[quiet], help="benchmark files")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser("build", parents=[quiet],
                                     help="tokenize a JSONL / Parquet / text file into benchmark tensors")
    build.add_argument("kind", choices=["completion", "multiple_choice", "text"], help="what the file holds")
    build.add_argument("file", type=Path, help="the JSONL, Parquet or text file")
    build.add_argument("--tokenizer", type=Path, required=True, help="model folder (or .gguf) whose tokenizer to use")
    build.add_argument("--output", type=Path, required=True, help="the .pt file to write (must not exist)")
    build.add_argument("--window", type=int, default=128, help="text: tokens per window (default 128)")
    build.add_argument("--normalization", choices=["chars", "tokens"], default="chars",
                       help="multiple_choice: acc_norm per character (default) or per token")
    build.add_argument("--max-items", type=int, help="keep only the first N items (text: windows)")
    return parser


def _rounded(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items())


def _interrupted_line(output: Path, signum: int) -> str:
    from .checkpoint import CHECKPOINT_NAME

    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    if (output / "recipe.json").is_file():
        return f"interrupted ({name}) after the run had finished; its results are in {output}"
    try:
        content = json.loads((output / CHECKPOINT_NAME).read_text())
        done, total = content["state"]["generation"], content["config"]["ga"]["max_generations"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"interrupted ({name}) before the first generation was saved; nothing to resume: run it again"
    return f"interrupted ({name}) after generation {done} of {total}; continue with --resume --output {output}"


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM raise RunInterrupted where the run is, so that it unwinds (pools closed, no
    half-written file: every file is renamed into place whole) and the checkpoint on disk is the last one."""
    def stop(signum: int, frame: object) -> None:
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, base_map: Callable | None) -> None:
    from ..distributed import PoolMap, RayMap, make_map
    from ..distributed.scoop import LaunchInterrupted, launch_scoop
    from .lock import RunLock
    from .runner import run_config

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.address is not None and args.backend != "ray":
        raise ConfigError("--address names a Ray cluster; it needs --backend ray")
    config = load_config(args.config)
    if args.trust_remote_code:
        config = config.model_copy(update={"trust_remote_code": True})
    if args.resume and args.output is None:
        raise ConfigError("--resume needs the --output directory of the run to continue")
    output = (args.output or Path("runs") / time.strftime("%Y%m%d-%H%M%S")).absolute()
    held_by_launcher = os.environ.get(LOCK_ENV) == str(output)
    with contextlib.nullcontext() if held_by_launcher else RunLock(output), _stop_on_signals():
        try:
            if base_map is None and args.workers > 1 and args.backend == "scoop":
                flags = [flag for flag, on in (("--resume", args.resume), ("--force", args.force),
                                               ("--trust-remote-code", args.trust_remote_code)) if on]
                argv = [*(["--quiet"] if args.quiet else []), "run", str(args.config), "--output", str(output), *flags]
                try:
                    print(launch_scoop(argv, args.workers, args.hostfile, {LOCK_ENV: str(output)},
                                       shlex.split(args.scoop_args)), end="")
                except LaunchInterrupted as exc:
                    raise RunInterrupted(exc.signum, str(exc)) from None
                return
            if base_map is None and args.backend == "ray":
                base_map = make_map("ray", args.workers, args.address,
                                    gpus_per_worker=1.0 if str(config.device).startswith("cuda") else 0.0)
            if base_map is None:
                base_map = make_map("pool" if args.workers > 1 else "serial", args.workers)
            try:
                progress = "always" if os.environ.get(PROGRESS_ENV) == "1" else not args.quiet
                result = run_config(config, output, base_map, resume=args.resume, force=args.force,
                                    progress=False if args.quiet else progress)
            finally:
                if isinstance(base_map, (PoolMap, RayMap)):
                    base_map.terminate()
        except RunInterrupted as exc:
            raise RunInterrupted(exc.signum, exc.args[0] if exc.args[0] != "interrupted" else
                                 _interrupted_line(output, exc.signum)) from None
    line = f"best fitness: {_rounded(dict(zip(result.ga.objectives, result.fitness)))}"
    if result.validation is not None:
        held_out = [_rounded(values) if name == SINGLE else f"{name}: {_rounded(values)}"
                    for name, values in result.validation.items()]
        line += "; validation: " + "; ".join(held_out)
    print(f"{line}\nwrote {result.output}")


def _export(args: argparse.Namespace, base_map: Callable | None) -> None:
    from .export import export_recipe, read_member

    written = export_recipe(args.recipe, args.output, check_hashes=not args.no_hash_check, member=args.member,
                            trust_remote_code=args.trust_remote_code, models_from=args.models_from)
    _, recipe, chosen = read_member(args.recipe, args.member)
    which = "the best" if args.member is None else f"member {args.member}"
    fitness = dict(zip(recipe.get("objectives", []), chosen.get("fitness") or []))
    print(f"{which}: fitness {_rounded(fitness)}\nwrote {written}")


def _data(args: argparse.Namespace, base_map: Callable | None) -> None:
    import torch

    from ..scoring.benchmark_files import build_benchmark
    from .output import atomic_write_bytes

    if args.output.exists():
        raise LLMMergeError(f"{args.output} already exists; refusing to overwrite it")
    data = build_benchmark(args.kind, args.file, args.tokenizer, window=args.window, normalization=args.normalization,
                           max_items=args.max_items)
    buffer = io.BytesIO()
    torch.save(data.to_dict(), buffer)
    atomic_write_bytes(args.output, buffer.getvalue())
    print(f"wrote {args.output}: {len(data)} rows of {data.input_ids.shape[1]} tokens, "
          f"{data.num_labeled} scored positions ({data.kind})")


def _scoop_entry(args: argparse.Namespace, base_map: Callable | None) -> None:
    from ..distributed.scoop import scoop_entry_path

    print(scoop_entry_path())


def _report(args: argparse.Namespace, base_map: Callable | None) -> None:
    from .report import write_report

    for path in write_report(args.run):
        print(f"wrote {path}")


def _write_status(error: str | None, signum: int | None = None) -> None:
    """For a launcher that cannot trust the exit status (SCOOP's): where the run says how it ended."""
    path = os.environ.get(STATUS_ENV)
    if path:
        Path(path).write_text(json.dumps({"ok": error is None, "error": error, "signal": signum}))


def main(argv: Sequence[str] | None = None, base_map: Callable | None = None) -> int:
    args = _parser().parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    commands = {"run": _run, "export": _export, "scoop-entry": _scoop_entry, "report": _report, "data": _data}
    launched = os.environ.get(STATUS_ENV) is not None  # the launcher prints how the run ended
    if os.environ.get(ROOT_PID_ENV):
        Path(os.environ[ROOT_PID_ENV]).write_text(str(os.getpid()))
    try:
        commands[args.command](args, base_map)
    except RunInterrupted as exc:
        if not launched:
            print(f"deap-llmmerge: {exc}", file=sys.stderr)
        _write_status(str(exc), exc.signum)
        return 128 + exc.signum
    except (LLMMergeError, ValidationError, OSError) as exc:
        message = first_line(exc)
        if not launched:
            print(f"deap-llmmerge: error: {message}", file=sys.stderr)
        _write_status(message)
        return 1
    _write_status(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
