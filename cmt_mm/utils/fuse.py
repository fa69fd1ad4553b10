"""Fold BatchNorm into neighbouring convolutions for inference, exactly where CMT allows it.

In eval mode a BatchNorm is a per-channel affine map ``y = a * x + b``. It folds exactly into

* the convolution right before it (conv -> BN): scale that conv's output channels;
* an unpadded convolution right after it (BN -> conv): scale the conv's input channels and move
  ``b`` into its bias. With zero padding this is not exact: the padded border would have to be
  ``b``, not 0.

What that allows in CMT (:func:`fuse_cmt`):

====================================  ==========================================================
folded                                into
====================================  ==========================================================
``stem.2.norm``                       the first patch embedding (2x2 stride-2 conv, no padding)
``attn.reduction.norm`` (stages 0-2)  the reduction conv before it
``ffn.dw_norm``                       the FFN's 1x1 projection conv after it
``ffn.project.norm``                  the same projection conv, before it
``CMTClsHead.norm``                   the head's 1x1 conv before it
====================================  ==========================================================

What stays: ``stem.0.norm`` and ``stem.1.norm`` (GELU sits between them and the conv before,
and the conv after pads with zeros), ``ffn.expand.norm`` (after GELU; it feeds the zero-padded
depthwise conv and the shortcut around it), the LayerNorms (their statistics depend on the
input) and ``out_norms`` (nothing inside the backbone follows them).

mmcv's generic ``fuse_conv_bn`` pairs a BatchNorm with the last convolution among its siblings,
whatever lies between: in CMT it would fold BatchNorms through GELU and the FFN's shortcut and
change the outputs. :func:`fuse_conv_bn` uses the exact folds above for CMT and mmcv's for
every other part of a model (a ResNet backbone, ...).
"""
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn as mmcv_fuse_conv_bn
from torch.nn.modules.batchnorm import _BatchNorm

from cmt_mm.models.backbones.cmt import CMT
from cmt_mm.models.heads.cmt_cls_head import CMTClsHead

CMT_MODULES = (CMT, CMTClsHead)


def _bn_affine(bn: _BatchNorm):
    """The ``(a, b)`` of the eval-mode BatchNorm ``y = a * x + b``, in float64."""
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.affine:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        shift = shift + bn.bias.double()
    return scale, shift


def _set_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> None:
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter(weight.to(dtype))
    conv.bias = nn.Parameter(bias.to(dtype))


def _conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        return conv.weight.new_zeros(conv.out_channels, dtype=torch.float64)
    return conv.bias.double()


def fold_bn_into_previous_conv(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """Make ``conv`` compute ``bn(conv(x))`` (in place)."""
    scale, shift = _bn_affine(bn)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    _set_conv(conv, weight, _conv_bias(conv) * scale + shift)


def fold_bn_into_next_conv(bn: _BatchNorm, conv: nn.Conv2d) -> None:
    """Make ``conv`` compute ``conv(bn(x))`` (in place); ``conv`` must not pad or group."""
    if conv.groups != 1 or any(conv.padding) or conv.padding_mode != 'zeros':
        raise ValueError('only an unpadded, ungrouped conv can absorb the BatchNorm before it, '
                         f'got groups={conv.groups}, padding={conv.padding}')
    scale, shift = _bn_affine(bn)
    weight = conv.weight.double()
    bias = _conv_bias(conv) + torch.einsum('oihw,i->o', weight, shift)
    _set_conv(conv, weight * scale.reshape(1, -1, 1, 1), bias)


@torch.no_grad()
def fuse_cmt(module: nn.Module) -> nn.Module:
    """Fold the foldable BatchNorms of a :class:`CMT` backbone or :class:`CMTClsHead` in place.

    The module is put in eval mode; folded norms become ``nn.Identity``, so parameter names of
    the fused model differ and it is for inference only. Returns the module.
    """
    module.eval()
    if isinstance(module, CMTClsHead):
        if isinstance(module.norm, nn.Identity):
            return module  # already fused
        fold_bn_into_previous_conv(module.conv, module.norm)
        module.norm = nn.Identity()
        return module
    if not isinstance(module, CMT):
        raise TypeError(f'expected a CMT or a CMTClsHead, got {type(module).__name__}')
    if isinstance(module.stem[-1].norm, nn.Identity):
        return module  # already fused
    fold_bn_into_next_conv(module.stem[-1].norm, module.stages[0].patch_embed.projection)
    module.stem[-1].norm = nn.Identity()
    for stage in module.stages:
        for block in stage.blocks:
            reduction = getattr(block.attn, 'reduction', None)
            if reduction is not None:
                fold_bn_into_previous_conv(reduction.conv, reduction.norm)
                reduction.norm = nn.Identity()
            ffn = block.ffn
            fold_bn_into_next_conv(ffn.dw_norm, ffn.project.conv)
            fold_bn_into_previous_conv(ffn.project.conv, ffn.project.norm)
            ffn.dw_norm = nn.Identity()
            ffn.project.norm = nn.Identity()
    return module


def _contains_cmt(module: nn.Module) -> bool:
    return any(isinstance(m, CMT_MODULES) for m in module.modules())


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold BatchNorm into convolutions anywhere in ``model`` (in place), for inference.

    CMT backbones and heads get :func:`fuse_cmt`; subtrees without them get mmcv's
    ``fuse_conv_bn``. A conv and a BatchNorm that are siblings of a CMT module stay unfused.
    Returns the model, in eval mode.
    """
    model.eval()
    if isinstance(model, CMT_MODULES):
        return fuse_cmt(model)
    if not _contains_cmt(model):
        return mmcv_fuse_conv_bn(model)
    for child in model.children():
        fuse_conv_bn(child)
    return model
