"""PEFT adapter folders as sources: a LoRA (or other PEFT) adapter is merged into its base model on load
(``PeftModel.from_pretrained(base, adapter).merge_and_unload()``, with ``peft``, the optional extra), so a
user's adapters merge without a manual step.

The base model an adapter is merged into is the one its ``adapter_config.json`` names
(``base_model_name_or_path``) when that is a local model folder (as written, or beside the adapter), else the
run's ``base`` (``base:`` in the config, ``base_model=`` in the API): adapters trained from a hub model name
it by its hub id, which cannot be fetched here.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..errors import SourceModelError, first_line
from .loading import Source, load_model, no_progress_bars

__all__ = ["is_adapter", "merged_adapter", "with_adapter_merged"]


def is_adapter(path: Path | None) -> bool:
    """A PEFT adapter folder: ``adapter_config.json`` and no ``config.json``."""
    return path is not None and path.is_dir() and (path / "adapter_config.json").is_file() and \
        not (path / "config.json").is_file()


def _base_of(path: Path, named: str | None, base: Path | None) -> Path:
    candidates = [Path(named), path / named] if named else []
    for candidate in candidates + ([base] if base is not None else []):
        if candidate.is_dir() and (candidate / "config.json").is_file() or candidate.suffix == ".gguf" and \
                candidate.is_file():
            return candidate
    what = f"of {named!r}, which is not a local model folder" if named else \
        "whose adapter_config.json names no base model"
    raise SourceModelError(f"source model {path} is a PEFT adapter {what}: name the base model's folder with base: "
                           "in the config (base_model= in the API)")


def merged_adapter(path: Path, base: Path | None = None, trust_remote_code: bool = False) -> nn.Module:
    """The base model with the adapter at ``path`` merged into its weights (see the module docstring)."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise SourceModelError(f"source model {path} is a PEFT adapter; merging it on load needs peft: "
                               "pip install 'deap-llmmerge[peft]'") from exc
    try:
        named = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as exc:
        raise SourceModelError(f"PEFT adapter {path}: adapter_config.json is not valid ({first_line(exc)})") from exc
    folder = _base_of(path, named, base)
    model = load_model(Source(folder.name, folder), trust_remote_code)
    try:
        with no_progress_bars():
            merged = PeftModel.from_pretrained(model, str(path), is_trainable=False).merge_and_unload()
    except Exception as exc:  # peft raises many types for a bad adapter; the user needs the one line
        raise SourceModelError(f"cannot merge PEFT adapter {path} into {folder}: {first_line(exc)}") from exc
    merged.config._name_or_path = str(path)
    return merged.eval()


def with_adapter_merged(source: Source, base: Path | None, trust_remote_code: bool = False) -> Source:
    """``source`` itself, or, for an adapter folder, the same source holding its merged model."""
    if source.model is not None or not is_adapter(source.path):
        return source
    return Source(source.name, source.path, merged_adapter(source.path, base, trust_remote_code))
