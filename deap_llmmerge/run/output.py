"""The run's output directory, written so that nothing is ever half-written or overwritten."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deap import tools
from torch import nn

from ..errors import LLMMergeError
from ..models.loading import no_progress_bars

__all__ = ["prepare_output_dir", "atomic_write_text", "atomic_write_bytes", "move_into_place", "save_model",
           "logbook_csv", "TOKENIZER_FILES", "RUN_FILES", "tokenizer_folder"]

# What a run writes into its output directory; a forced start removes them first.
RUN_FILES = ("best", "recipe.json", "logbook.csv", "checkpoint.json", "item_results.npz", "mergekit.yaml", "report")

# A tokenizer's files: copied into a saved merge; a folder with none of them has no tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "spiece.model",
    "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json", "chat_template.jinja",
)


def tokenizer_folder(candidates: list[Path | None]) -> Path | None:
    """The first of ``candidates`` that holds tokenizer files (a PEFT adapter folder usually holds none: its
    base does), else the first given."""
    given = [Path(path) for path in candidates if path is not None]
    found = next((path for path in given if path.is_dir() and any((path / n).is_file() for n in TOKENIZER_FILES)),
                 None)
    return found or (given[0] if given else None)


def prepare_output_dir(path: Path, force: bool = False) -> Path:
    """Create ``path``; an existing non-empty directory is refused unless ``force``, which removes the
    previous run's files (:data:`RUN_FILES`) and leaves any other file alone."""
    if path.exists() and not path.is_dir():
        raise LLMMergeError(f"output path {path} exists and is not a directory")
    if path.exists() and any(path.iterdir()):
        if not force:
            if (path / "checkpoint.json").is_file() and not (path / "recipe.json").is_file():
                advice = "it holds an unfinished run: --resume continues it, --force starts a new one there"
            elif (path / "recipe.json").is_file():
                advice = "it holds a finished run: choose another --output, or --force to replace that run"
            else:
                advice = "choose another --output, or --force to start a run there (other files are left alone)"
            raise LLMMergeError(f"output directory {path} exists and is not empty; {advice}")
        for name in RUN_FILES:
            old = path / name
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def move_into_place(temporary: str | Path, path: Path) -> None:
    """Give a finished temporary file or folder the usual permissions and rename it to ``path``.

    (``mkstemp`` and ``mkdtemp`` create them private to their owner.)
    """
    os.chmod(temporary, (0o777 if Path(temporary).is_dir() else 0o666) & ~_umask())
    os.replace(temporary, path)


def atomic_write_bytes(path: Path, content: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        move_into_place(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    atomic_write_bytes(path, text.encode())


def save_model(model: nn.Module, folder: Path, tokenizer_from: Path | None = None, replace: bool = False,
               files: dict[str, str] | None = None) -> None:
    """``save_pretrained`` into a temporary folder, copy the tokenizer files, write ``files`` (name -> text:
    the model card), then rename it to ``folder``.

    An existing ``folder`` is refused, or with ``replace`` swapped out only once the new one is complete.
    """
    if folder.exists() and not replace:
        raise LLMMergeError(f"{folder} already exists; refusing to overwrite it")
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with no_progress_bars():
            model.save_pretrained(temporary)
        for name, text in (files or {}).items():
            (temporary / name).write_text(text)
        if tokenizer_from is not None and tokenizer_from.is_dir():
            for name in TOKENIZER_FILES:
                if (tokenizer_from / name).is_file():
                    shutil.copy2(tokenizer_from / name, temporary / name)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            os.rename(folder, old)
            move_into_place(temporary, folder)
            shutil.rmtree(old)
        else:
            move_into_place(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def logbook_csv(logbook: tools.Logbook, objectives: Sequence[str]) -> str:
    """One row per generation: gen, evals, max/mean/min of every objective (over the candidates that scored;
    failed ones are left out), the share of distinct merges, the mutation rate used next; CMA-ES runs add
    its step size and the generation's mean repair penalty, cheap-fitness runs the items scored and the
    candidates racing has stopped so far. The last column, ``utilisation``, is the share of the workers' time
    that went to scoring in the generation (empty where nothing new was scored): timing, so the one column
    that differs between runs of one seed."""
    stats = ("max", "mean", "min")
    extra = [name for name in ("sigma", "penalty", "item_scorings", "stopped") if logbook and name in logbook[-1]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["gen", "evals", *(f"{name}_{stat}" for name in objectives for stat in stats),
                     "diversity", "mutation_rate", *extra, "utilisation"])
    for i, record in enumerate(logbook):
        chapters = [logbook.chapters[name][i] for name in objectives]
        writer.writerow([record["gen"], record["evals"],
                         *(repr(float(chapter[stat])) for chapter in chapters for stat in stats),
                         repr(float(record["diversity"])), repr(float(record["mutation_rate"])),
                         *(repr(float(record.get(name, 0.0))) for name in extra),
                         "" if record.get("utilisation") is None else f"{record['utilisation']:.3f}"])
    return out.getvalue()
