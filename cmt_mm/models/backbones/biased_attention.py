"""Attention with an additive bias, with a backward pass that stays fast when keys are few.

CMT attends from every query to a key grid of stride 32 with a learned bias. At detection sizes
that is tens of thousands of queries against about a thousand keys per image (1280x800, stage 1:
64,000 queries, 1,000 keys, one head). The memory-efficient SDPA kernel's backward gives each
thread block 64 keys of one image and head and loops over all queries; with batch 2 and one head
that is 32 blocks on a GPU of 132 SMs. Measured on an H200 (RetinaNet CMT-S training step,
batch 2, bf16): 46.7 ms of the step's ~113 ms of GPU kernels, against 3.8 ms for the forward.

:func:`biased_attention` keeps SDPA's forward and, in that case, computes the backward from
the saved inputs and output as dense batched GEMMs in float32, with the scores of at most
:data:`DENSE_CHUNK_ELEMENTS` entries alive at once.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F

# Scores held at once by the dense backward (float32: 1 GiB per tensor), split over images.
DENSE_CHUNK_ELEMENTS = 2**28
# The memory-efficient backward's thread blocks: one per this many keys per image and head.
KEYS_PER_BACKWARD_BLOCK = 64


def backward_blocks(q: torch.Tensor, k: torch.Tensor) -> int:
    """Thread blocks of the memory-efficient kernel's backward: per image, head and 64 keys."""
    return math.prod(q.shape[:-2]) * math.ceil(k.shape[-2] / KEYS_PER_BACKWARD_BLOCK)


def dense_backward_pays(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether the memory-efficient kernel's backward would leave most of the GPU idle: fewer
    than two of its thread blocks per SM (CIFAR-10 at 64x64, batch 1,024, keeps SDPA's backward;
    detection at batch 2 does not). Never on a CPU, whose SDPA backward is already dense."""
    if q.device.type != 'cuda':
        return False
    return backward_blocks(q, k) < 2 * torch.cuda.get_device_properties(
        q.device).multi_processor_count


class _DenseBackwardAttention(torch.autograd.Function):
    """``softmax(q k^T / sqrt(d) + bias) v``: SDPA forward, dense float32 backward."""

    @staticmethod
    def forward(ctx, q, k, v, bias):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        ctx.save_for_backward(q, k, v, bias, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, out = ctx.saved_tensors
        scale = q.shape[-1]**-0.5
        images, heads, num_queries, _ = q.shape
        num_keys = k.shape[-2]
        compute = torch.promote_types(q.dtype, torch.float32)  # float32 for bf16 / fp16 inputs
        grad_bias = None
        if ctx.needs_input_grad[3]:
            grad_bias = q.new_zeros((1, heads, num_queries, num_keys), dtype=compute)
        grads_q, grads_k, grads_v = [], [], []
        chunk = max(1, DENSE_CHUNK_ELEMENTS // (heads * num_queries * num_keys))
        with torch.autocast(q.device.type, enabled=False):
            for start in range(0, images, chunk):
                qc, kc, vc, gc, oc = (t[start:start + chunk].to(compute)
                                      for t in (q, k, v, grad_out, out))
                logits = torch.matmul(qc, kc.transpose(-1, -2)).mul_(scale).add_(bias)
                probs = logits.softmax(-1)
                del logits
                grads_v.append(torch.matmul(probs.transpose(-1, -2), gc))
                # Softmax backward; sum_j p_ij dp_ij equals the row dot of dO and O.
                grad_logits = torch.matmul(gc, vc.transpose(-1, -2))
                grad_logits.sub_((gc * oc).sum(-1, keepdim=True)).mul_(probs)
                del probs
                grads_q.append(torch.matmul(grad_logits, kc).mul_(scale))
                grads_k.append(torch.matmul(grad_logits.transpose(-1, -2), qc).mul_(scale))
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0, keepdim=True)
        if grad_bias is not None:
            grad_bias = grad_bias.sum_to_size(bias.shape).to(bias.dtype)
        return (torch.cat(grads_q).to(q.dtype), torch.cat(grads_k).to(k.dtype),
                torch.cat(grads_v).to(v.dtype), grad_bias)


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     dense_backward: Optional[bool] = None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` for ``(images, heads, tokens, d)`` inputs.

    ``bias``, ``(heads, queries, keys)`` or broadcastable to it, is shared by the images.
    ``dense_backward`` chooses the backward: None decides by :func:`dense_backward_pays`;
    without gradients SDPA runs alone.
    """
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, bias))
    if dense_backward is None:
        dense_backward = needs_grad and dense_backward_pays(q, k)
    if not (needs_grad and dense_backward):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return _DenseBackwardAttention.apply(q, k, v, bias)
