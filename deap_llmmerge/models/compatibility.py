"""Can two source models be merged part by part, so that the pure genome of each gives that model back?

Three checks, each naming what differs: the parameter names (both ways: missing and extra), the shapes of
every part, and the config fields that change what the network computes (``rms_norm_eps``, ``rope_theta``,
``tie_word_embeddings``, ``attention_bias``, ...). Names, token ids and bookkeeping fields are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch

__all__ = ["CompatibilityCheck", "is_compatible", "first_mismatch", "config_difference", "names_difference",
           "IGNORED_CONFIG_FIELDS"]

CompatibilityCheck = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], bool]

# Config fields that do not change the function a causal LM computes in evaluation mode.
IGNORED_CONFIG_FIELDS = frozenset({
    "_name_or_path", "name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version",
    "_commit_hash", "_attn_implementation", "_attn_implementation_autoset", "attn_implementation",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "id2label", "label2id", "num_labels", "problem_type", "finetuning_task", "task_specific_params",
    "tokenizer_class", "prefix", "return_dict", "output_attentions", "output_hidden_states", "use_cache",
    "torchscript", "initializer_range", "chunk_size_feed_forward", "keys_to_ignore_at_inference",
    "quantization_config", "num_hidden_layers", "n_layer",
    # generation settings that old configs carry
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "temperature",
    "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "diversity_penalty",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "tf_legacy_loss", "pruned_heads", "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder",
})
_IGNORED_PATTERN = re.compile(r"(dropout|_pdrop$|^summary_)")


def first_mismatch(reference: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor]) -> str | None:
    """Describe the first parameter that differs in name or shape, or None when the two match."""
    for name, tensor in reference.items():
        if name not in candidate:
            return f"parameter {name!r} is missing"
        if tuple(candidate[name].shape) != tuple(tensor.shape):
            return f"parameter {name!r} has shape {tuple(tensor.shape)} vs {tuple(candidate[name].shape)}"
    for name in candidate:
        if name not in reference:
            return f"parameter {name!r} is extra"
    return None


def is_compatible(reference: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor]) -> bool:
    """Default compatibility rule for one part: identical parameter names and shapes."""
    return first_mismatch(reference, candidate) is None


def names_difference(reference: set[str], candidate: set[str]) -> str | None:
    """The first parameter that one model has and the other lacks, both ways."""
    missing = sorted(reference - candidate)
    if missing:
        return f"parameter {missing[0]!r} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    extra = sorted(candidate - reference)
    if extra:
        return f"parameter {extra[0]!r} is extra" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    return None


def _ignored(key: str) -> bool:
    return key in IGNORED_CONFIG_FIELDS or bool(_IGNORED_PATTERN.search(key))


def _same_number(a: object, b: object) -> bool:
    """Two numbers equal to float32 precision: a GGUF file stores its floats in float32 (``rms_norm_eps``
    1e-06 comes back as 9.999999974752427e-07), and no config means anything by a difference that small."""
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return numbers and math.isclose(a, b, rel_tol=1e-6)


def config_difference(reference: Mapping, candidate: Mapping, prefix: str = "") -> str | None:
    """The first config field, in sorted order, whose value changes the computation: ``"'rms_norm_eps' is 0.5
    vs 1e-06"`` (candidate first), or None. Nested configs are compared field by field."""
    for key in sorted(set(reference) | set(candidate), key=str):
        if _ignored(str(key)):
            continue
        mine, theirs = reference.get(key), candidate.get(key)
        name = f"{prefix}{key}"
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            found = config_difference(mine, theirs, f"{name}.")
            if found:
                return found
        elif mine != theirs and not _same_number(mine, theirs):
            return f"config field {name!r} is {theirs!r} vs {mine!r}"
    return None
