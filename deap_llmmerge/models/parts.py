"""The parts of a network that a genome decides about.

``embed`` (token and position embeddings), ``layers.<i>`` (one decoder layer each) and ``head`` (final norm
and output projection). With tied embeddings the output projection is the embedding matrix, so it travels
with ``embed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import SourceModelError

__all__ = ["decoder_layers", "split_parts", "layer_part", "is_layer_part", "layer_index", "plain_attributes",
           "per_layer_fields", "LayerLayout"]


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


def plain_attributes(module: nn.Module) -> dict[str, object]:
    """A module's public attributes of plain types (what it derived from the config: attention type, sliding
    window, ...), without ``training``."""
    return {key: value for key, value in vars(module).items() if not key.startswith("_") and key != "training"
            and isinstance(value, (int, float, str, bool, type(None), tuple))}


def per_layer_fields(config, depth: int) -> dict[str, list]:
    """The config's lists with one entry per layer (``layer_types``, ``no_rope_layers``, ...)."""
    return {key: list(value) for key, value in vars(config).items()
            if isinstance(value, list) and len(value) == depth and not key.startswith("_")}


@dataclass(frozen=True)
class LayerLayout:
    """What a model derives from its config at construction, read once from an untouched model: per decoder
    layer, the plain attributes of its modules and its entries of the per-layer config lists, and the plain
    attributes of the modules outside the layers (``has_sliding_layers``). A model whose output layer i is
    built from source layer j must compute as layer j does: :meth:`follow` makes it so."""

    prefix: str
    layers: tuple[tuple[dict, ...], ...]
    per_layer: dict[str, list]
    outside: dict[str, dict]

    @classmethod
    def of(cls, model: nn.Module) -> LayerLayout:
        prefix, layers = decoder_layers(model)
        return cls(prefix, tuple(tuple(plain_attributes(m) for m in layer.modules()) for layer in layers),
                   per_layer_fields(model.config, len(layers)),
                   {name: plain_attributes(m) for name, m in model.named_modules()
                    if name != prefix and not name.startswith(prefix + ".")})

    def config_lists(self, depth: int) -> dict[str, list]:
        """The per-layer lists for a model of ``depth`` layers before any layer is chosen: the sources'
        entries repeated."""
        return {key: [values[i % len(values)] for i in range(depth)] for key, values in self.per_layer.items()}

    def adopt_outside(self, model: nn.Module) -> None:
        """Give ``model``'s modules outside the layers the reference's attributes: a model built with fewer
        layers would otherwise lack what the reference derived from all of them (the sliding-window mask
        of a stack of sliding layers)."""
        modules = dict(model.named_modules())
        for name, attributes in self.outside.items():
            if name in modules:
                for key, value in attributes.items():
                    if hasattr(modules[name], key):
                        setattr(modules[name], key, value)

    def follow(self, model: nn.Module, output: int, source: int) -> None:
        """Make ``model``'s layer ``output`` compute as source layer ``source``: its modules' attributes and its
        per-layer config entries, keeping the output position's own ``layer_idx``."""
        layer = decoder_layers(model)[1][output]
        for module, attributes in zip(layer.modules(), self.layers[source]):
            for key, value in attributes.items():
                if key != "layer_idx" and hasattr(module, key):
                    setattr(module, key, value)
        for key, values in self.per_layer.items():
            getattr(model.config, key)[output] = values[source]
