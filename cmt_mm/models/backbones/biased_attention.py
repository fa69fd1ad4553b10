"""Attention with an additive bias, with a backward pass that fills the GPU when keys are few.

CMT attends from every query to a key grid of stride 32 with a learned bias. At detection sizes
that is tens of thousands of queries against about a thousand keys per image (1280x800, stage 1:
64,000 queries, 1,000 keys, one head). The memory-efficient SDPA kernel's backward gives each
thread block 64 keys of one image and head and loops over all queries; with batch 2 and one head
that is 32 blocks on a GPU of 132 SMs. Measured on an H200 (RetinaNet CMT-S training step,
batch 2, bf16): 46.7 ms of the step's ~113 ms of GPU kernels, against 3.8 ms for the forward.

Queries do not interact, so :func:`biased_attention` then splits them into groups that SDPA sees
as more heads: ``(images, heads, queries, d)`` becomes ``(images, heads * groups, queries /
groups, d)``, with the (few) keys and values repeated for each group and the bias a view. The
backward has ``groups`` times more thread blocks, each looping over ``groups`` times fewer
queries, and autograd sums the keys' and values' gradients over the groups.

A :class:`LowRankBias` (CMT's bias at key grids larger than the learned one) is not added as a
mask: its factors extend the queries' and keys' features, so SDPA runs without one (the flash
kernel in half precision) and never forms the queries-by-keys bias or its gradient. The flash
kernels' backward gains from the split only on long query sequences (stage 1 at detection
sizes), so with such a bias the queries stay together below
:data:`LOW_RANK_MIN_QUERIES_TO_SPLIT`.
"""
import math
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

from cmt_mm.utils.cache import cache_outside_compile
from cmt_mm.utils.device import multiprocessor_count

# The memory-efficient backward's thread blocks: one per this many keys per image and head.
KEYS_PER_BACKWARD_BLOCK = 64
# Split queries until the backward has this many thread blocks per SM.
BACKWARD_BLOCKS_PER_SM = 2
# Fewer queries than this per group would leave the forward's query tiles (64 rows) part empty.
MIN_QUERIES_PER_GROUP = 64
# With a LowRankBias (flash kernels), the split pays from here on. H100, CMT-S at 1280x800,
# batch 2, bf16, forward + backward of one attention (tools/analysis_tools/attention_benchmark.py,
# docs/benchmarks.md run 6): 64,000 queries 2.80 -> 1.31 ms (10 groups), but 16,000 queries
# 1.16 -> 1.31 ms (5), 4,000 1.22 -> 1.32 ms (4), 1,000 1.19 -> 1.42 ms (2).
LOW_RANK_MIN_QUERIES_TO_SPLIT = 32768


def backward_blocks(q: torch.Tensor, k: torch.Tensor) -> int:
    """Thread blocks of the memory-efficient kernel's backward: per image, head and 64 keys."""
    return math.prod(q.shape[:-2]) * math.ceil(k.shape[-2] / KEYS_PER_BACKWARD_BLOCK)


def query_groups(q: torch.Tensor, k: torch.Tensor, sms: Optional[int] = None,
                 low_rank: bool = False) -> int:
    """The groups to split the queries into for SDPA's backward to fill ``sms`` SMs.

    1 where it already has :data:`BACKWARD_BLOCKS_PER_SM` blocks per SM (CIFAR-10 at 64x64,
    batch 1,024), on a CPU, whose SDPA backward is dense, and for the attention of a
    ``low_rank`` bias below :data:`LOW_RANK_MIN_QUERIES_TO_SPLIT` queries. ``sms`` defaults to
    the SM count of ``q``'s GPU.
    """
    if low_rank and q.shape[-2] < LOW_RANK_MIN_QUERIES_TO_SPLIT:
        return 1
    if sms is None:
        if q.device.type != 'cuda':
            return 1
        sms = multiprocessor_count(q.device)
    return _query_groups(q.shape[-2], backward_blocks(q, k), sms)


@cache_outside_compile(maxsize=256)
def _query_groups(num_queries: int, blocks: int, sms: int) -> int:
    """The smallest divisor of ``num_queries`` that gives enough blocks; where none does up to
    twice that many groups (or groups of :data:`MIN_QUERIES_PER_GROUP` queries), the largest
    divisor below it."""
    needed = math.ceil(BACKWARD_BLOCKS_PER_SM * sms / blocks)
    limit = max(1, min(2 * needed, num_queries // MIN_QUERIES_PER_GROUP))
    divisors = [g for g in range(1, limit + 1) if num_queries % g == 0]
    return next((g for g in divisors if g >= needed), divisors[-1])


class LowRankBias(NamedTuple):
    """An attention bias as the product of two factors: ``bias[h, i, j] = query_factor[h, i] .
    key_factor[j]``, where the rows of ``key_factor`` sum to 1 (an interpolation matrix).

    CMT's bias resized to a larger key grid is one: its ``rank`` columns are the pretraining
    grid's keys, and the key side is a resize matrix shared by all heads (see
    ``CMTStage.resized_position_bias``). Added to the logits, such a bias is a dot product, so
    :func:`biased_attention` appends it to the queries' and keys' features: the attention runs
    without a mask, never forming a queries-by-keys bias or its gradient.

    Args:
        query_factor: ``(heads, queries, rank)``.
        key_factor: ``(keys, rank)``.
    """
    query_factor: torch.Tensor
    key_factor: torch.Tensor

    def aligned(self, head_dims: int) -> 'LowRankBias':
        """The same bias with zero columns appended to both factors so that ``head_dims`` plus
        the rank is a multiple of 8, the head size the flash kernel takes; itself if it is.

        Attention aligns the bias it gets, in every block: a bias shared by blocks is better
        aligned once, before them.
        """
        pad = -(head_dims + self.key_factor.shape[-1]) % 8
        if not pad:
            return self
        return LowRankBias(F.pad(self.query_factor, (0, pad)), F.pad(self.key_factor, (0, pad)))


def _grouped_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  mask: Optional[torch.Tensor], groups: int,
                  scale: Optional[float] = None) -> torch.Tensor:
    """SDPA with the queries split into ``groups`` that it sees as more heads."""
    if groups == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    images, heads, num_queries, _ = q.shape
    if num_queries % groups:
        raise ValueError(f'{num_queries} queries do not split into {groups} groups')
    grouped_heads = heads * groups
    q = q.reshape(images, grouped_heads, num_queries // groups, q.shape[-1])
    k, v = (t.unsqueeze(2).expand(-1, -1, groups, -1, -1).reshape(
        images, grouped_heads, t.shape[-2], t.shape[-1]) for t in (k, v))
    if mask is not None:
        # A view for CMT's (heads, queries, keys) bias: its rows keep their alignment.
        mask = mask.expand(1, heads, num_queries, k.shape[-2])[0].reshape(
            grouped_heads, num_queries // groups, k.shape[-2])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.reshape(images, heads, num_queries, v.shape[-1])


def _low_rank_biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               bias: LowRankBias, groups: int) -> torch.Tensor:
    """``q k^T / sqrt(d) + bias`` as ``[q, query_factor] [k, key_factor sqrt(d)]^T / sqrt(d)``.

    The factors are zero-padded so that the head size is a multiple of 8
    (:meth:`LowRankBias.aligned`), and the values to the same size (the flash kernel wants one
    size for all three); the padded part of the output is dropped.
    """
    images, heads, _, dims = q.shape
    scale = dims**-0.5
    bias = bias.aligned(dims)
    q = torch.cat([q, bias.query_factor.expand(images, heads, -1, -1)], -1)
    k = torch.cat([k, (bias.key_factor / scale).expand(images, heads, -1, -1)], -1)
    v = F.pad(v, (0, q.shape[-1] - dims))
    return _grouped_sdpa(q, k, v, None, groups, scale)[..., :dims]


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: Union[torch.Tensor, LowRankBias],
                     groups: Optional[int] = None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` for ``(images, heads, tokens, d)`` inputs.

    ``bias``, ``(heads, queries, keys)`` or broadcastable to it, or a :class:`LowRankBias`, is
    shared by the images. ``groups`` splits the queries (see the module's docstring); None
    chooses by :func:`query_groups` when gradients are needed, and 1 (no split) without them.
    """
    low_rank = isinstance(bias, LowRankBias)
    if groups is None:
        inputs = (q, k, v, *bias) if low_rank else (q, k, v, bias)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        groups = query_groups(q, k, low_rank=low_rank) if needs_grad else 1
    if low_rank:
        return _low_rank_biased_attention(q, k, v, bias, groups)
    return _grouped_sdpa(q, k, v, bias, groups)
