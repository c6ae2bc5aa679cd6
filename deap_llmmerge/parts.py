"""The parts of a network that a genome decides about.

``embed`` (token and position embeddings), ``layers.<i>`` (one decoder layer each) and ``head`` (final norm
and output projection). With tied embeddings the output projection is the embedding matrix, so it travels
with ``embed``.
"""

from __future__ import annotations

from torch import nn

from .errors import SourceModelError

__all__ = ["decoder_layers", "split_parts", "layer_part", "is_layer_part", "layer_index"]


def layer_part(index: int) -> str:
    return f"layers.{index}"


def is_layer_part(part: str) -> bool:
    return part.startswith("layers.")


def layer_index(part: str) -> int:
    return int(part.split(".", 1)[1])


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Find the decoder layer list of any causal LM: ``(qualified name, ModuleList)``.

    The list is the ``nn.ModuleList`` whose length equals the config's layer count (``num_hidden_layers``,
    ``n_layer``), or the longest list of identical blocks when the config does not say.
    """
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    expected = getattr(text_config, "num_hidden_layers", None) or getattr(text_config, "n_layer", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
        and len({type(block) for block in module}) == 1
    ]
    if expected is not None:
        matching = [c for c in candidates if len(c[1]) == expected]
        if matching:
            return matching[0]
    if not candidates:
        raise SourceModelError(f"{type(model).__name__}: no decoder layer list (nn.ModuleList) found")
    return max(candidates, key=lambda c: len(c[1]))


def split_parts(model: nn.Module) -> dict[str, list[tuple[str, str]]]:
    """Group the model's parameters into parts, in network order.

    Returns ``{part: [(parameter name, name inside the part), ...]}``. Inside a layer part the names are
    relative to the layer (``self_attn.q_proj.weight``) so that a plan can build one layer from another.
    """
    prefix, layers = decoder_layers(model)
    embedding_owned = {
        id(module.weight) for module in model.modules()
        if isinstance(module, nn.Embedding)
    }
    parts: dict[str, list[tuple[str, str]]] = {"embed": []}
    parts.update({layer_part(i): [] for i in range(len(layers))})
    parts["head"] = []
    for name, param in model.named_parameters():
        if name.startswith(prefix + "."):
            index, _, rest = name[len(prefix) + 1:].partition(".")
            parts[layer_part(int(index))].append((name, rest))
        elif id(param) in embedding_owned:
            parts["embed"].append((name, name))
        else:
            parts["head"].append((name, name))
    return {part: names for part, names in parts.items() if names}
