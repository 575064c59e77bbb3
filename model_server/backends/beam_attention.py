"""Cross-attention that reads each source sentence's keys and values once for all of its beams.

In beam search every hypothesis of a sentence attends over the same source: transformers keeps one copy of
the cross-attention keys and values per beam, and each decoding step multiplies every beam's single query
row by its own copy. That is memory traffic, not arithmetic: for an mT5 chunk of 509 tokens at beam 4 the
decoder's cross-attention reads 37 MB of bfloat16 keys and values per step (from the shapes), and took 0.60
of 2.29 s of a trimmed mT5's generate (one measurement with forward hooks, 2-core Zen 4); 0.46 s grouped. Here the cross-attention cache holds one copy per sentence (torch_backend fills it so),
and attention stacks the beams' queries of a sentence as query rows of that one copy: the same dot products
and softmaxes, each row independent of the others, computed by the same eager or sdpa function.

It is registered with transformers' attention interface as `model_server_beams_<base>`, one name per base
implementation (eager, sdpa), with the base's mask function, and the model is loaded with that name. Any
call whose keys have as many rows as its queries (the encoder, self-attention, greedy search, a plain
`model.generate`) goes to the base function unchanged. Where transformers has no attention registry (older
releases), `grouped_implementation` returns None and the backend keeps a copy per beam."""

from __future__ import annotations

import functools
import sys
from typing import Any

PREFIX = "model_server_beams_"


def base_implementation(name: str) -> str:
    """The attention implementation a (possibly beam-grouped) name computes with: eager or sdpa."""
    return name.removeprefix(PREFIX)


def is_grouped(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


@functools.cache
def grouped_implementation(base: str) -> str | None:
    """Register (once) and return the beam-grouped variant of `base`, or None where this transformers cannot
    register one or has no mask function for `base`."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:
        return None
    mask_function = AttentionMaskInterface._global_mapping.get(base)
    if mask_function is None:
        return None
    name = PREFIX + base
    AttentionInterface.register(name, functools.partial(_grouped_attention, base))
    AttentionMaskInterface.register(name, mask_function)
    return name


def _base_function(base: str, module):
    """The function transformers would call for `base` in this module's model."""
    if base == "eager":  # each model family defines its own eager attention (T5 adds its position bias)
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[base]


def _grouped_attention(base: str, module, query, key, value, attention_mask, **kwargs: Any):
    """transformers' attention signature: query (rows, heads, q, d), key and value (sentences, heads, k, d),
    rows = sentences x beams with a sentence's beams adjacent (as generate expands them); returns the
    output (rows, q, heads, d) and the weights (rows, heads, q, k) or None."""
    function = _base_function(base, module)
    rows, sentences = query.shape[0], key.shape[0]
    if rows == sentences:
        return function(module, query, key, value, attention_mask, **kwargs)
    if rows % sentences:
        raise ValueError(f"{rows} query rows cannot share keys of {sentences} sentences")
    beams, queries = rows // sentences, query.shape[2]
    if attention_mask is not None:
        attention_mask = _beams_as_queries(attention_mask, beams, queries)
    if kwargs.get("position_bias") is not None:
        kwargs["position_bias"] = _beams_as_queries(kwargs["position_bias"], beams, queries)
    output, weights = function(module, _beams_as_queries(query, beams, queries), key, value, attention_mask,
                               **kwargs)
    # output (sentences, beams x q, heads, d): beam-major query rows, back to one row per beam
    output = output.reshape(rows, queries, *output.shape[2:])
    if weights is not None:
        weights = _queries_as_beams(weights, beams, queries)
    return output, weights


def _beams_as_queries(tensor, beams: int, queries: int):
    """(sentences x beams or 1, h, q or 1, k) -> (sentences or 1, h, beams x q, k), beam-major."""
    rows, heads, _, width = tensor.shape
    tensor = tensor.expand(rows, heads, queries, width)
    if rows == 1:  # broadcast over every row (a position bias): the same for each beam
        return tensor.repeat(1, 1, beams, 1)
    return (tensor.reshape(rows // beams, beams, heads, queries, width).transpose(1, 2)
            .reshape(rows // beams, heads, beams * queries, width))


def _queries_as_beams(tensor, beams: int, queries: int):
    """The inverse of _beams_as_queries: (sentences, h, beams x q, k) -> (sentences x beams, h, q, k)."""
    sentences, heads, _, width = tensor.shape
    return (tensor.reshape(sentences, heads, beams, queries, width).transpose(1, 2)
            .reshape(sentences * beams, heads, queries, width))
