"""The merge methods: one registered kernel each, with mergekit's parameter meanings.

A kernel receives the :class:`MergeInputs` of one parameter tensor (each source's, the base model's, and
what derives from them: task vectors and the magnitude buckets of their entries, computed once per process),
the part's parameters and, for random methods, a seeded generator. It accumulates in float32 and returns a
float32 tensor (the engine's own tensor when it offers one as ``inputs.out``, which saves a copy); the
engine writes it in the skeleton's dtype.

Per source, ``weight`` scales a source (``linear``) or its task vector (source - base); ``density`` is the
share of a task vector's entries that survive sparsification; ``gamma`` (breadcrumbs) the share of the
largest entries removed as outliers; ``epsilon`` (della) the spread of keep probabilities around
``density``. Per part, ``t`` is the slerp position from the first source (0) to the second (1). Options
fixed for a whole run: ``normalize`` (divide by the sum of weights), ``rescale`` (restore the L1 norm of a
sparsified task vector) and ``lambda`` (scale of the merged task vector), with mergekit's defaults.
"""

from .base import MergeMethod
from .inputs import DerivedCache, MergeInputs
from .registry import MERGE_METHODS, check_method_options, get_method, register_merge_method

__all__ = ["MergeMethod", "MERGE_METHODS", "register_merge_method", "get_method", "check_method_options",
           "MergeInputs", "DerivedCache"]
