"""``deap-llmmerge``: the command line. The only module that configures logging and prints."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from .config import load_config
from .errors import LLMMergeError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deap-llmmerge", description="Evolve merges of language models with DEAP.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="search for the best merge a config describes")
    run.add_argument("config", type=Path, help="YAML run config")
    run.add_argument("--output", type=Path, help="output directory (default runs/<timestamp>)")
    export = commands.add_parser("export", help="rebuild a merged model from a recipe.json")
    export.add_argument("recipe", type=Path)
    export.add_argument("--output", type=Path, required=True, help="folder for the merged model")
    export.add_argument("--no-hash-check", action="store_true", help="skip the check that sources are unchanged")
    return parser


def _run(args: argparse.Namespace) -> None:
    from .runner import run_config

    config = load_config(args.config)
    output = args.output or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    result = run_config(config, output)
    line = f"best fitness {dict(zip(result.ga.objectives, result.fitness))}"
    if result.validation is not None:
        line += f", validation {dict(zip(result.ga.objectives, result.validation))}"
    print(f"{line}\nwrote {result.output}")


def _export(args: argparse.Namespace) -> None:
    from .runner import export_recipe

    print(f"wrote {export_recipe(args.recipe, args.output, check_hashes=not args.no_hash_check)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        {"run": _run, "export": _export}[args.command](args)
    except (LLMMergeError, ValidationError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"deap-llmmerge: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
