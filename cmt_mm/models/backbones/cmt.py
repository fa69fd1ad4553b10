"""CMT: Convolutional Neural Networks Meet Vision Transformers (Guo et al., CVPR 2022).

A hybrid backbone: a convolutional stem, then four stages, each a 2x2 patch embedding followed by
CMT blocks (local perception unit, lightweight attention with a spatially reduced key/value map and
a learned relative position bias, inverted-residual FFN). The forward pass returns NCHW maps with
strides 4, 8, 16 and 32, for any input of at least 32x32 pixels.

The position bias is a dense query-by-key table per stage, learned at one pretraining resolution.
It is kept at that shape (so released checkpoints load unchanged) and resized to the actual query
and key grids at run time.
"""
import math
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from cmt_mm.registry import MODELS
from cmt_mm.utils.checkpoint import load_backbone_weights
from .biased_attention import LowRankBias, biased_attention
from .fast_layer_norm import FastLayerNorm
from .position_bias import (bias_in_dtype, low_rank_position_bias, resize_position_bias,
                            square_grid)
from .weight_cast import CastWeightsOnce

# Spatial reduction of keys/values per stage: every stage attends to a key grid of stride 32.
SR_RATIOS = (8, 4, 2, 1)
NUM_HEADS = (1, 2, 4, 8)
MIN_INPUT_SIZE = 32


def tokens_to_map(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, H, W) map: contiguous tokens give a channels_last view."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, N, C) tokens: a view of a channels_last map.

    Convolutions, BatchNorm and GELU keep the channels_last layout of their input, so inside a
    stage the conversions between tokens and maps copy nothing.
    """
    return x.flatten(2).transpose(1, 2)


def attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention will run in for input ``x``: autocast's when it is on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def align_rows(bias: torch.Tensor, alignment: int = 8) -> torch.Tensor:
    """``bias`` stored with every row starting at a multiple of ``alignment`` elements.

    The memory-efficient SDPA kernel needs its additive mask aligned so; given an unaligned one
    (CMT's key grid has 49 cells at 224), it pads a copy on every call, i.e. in every block.
    """
    pad = -bias.shape[-1] % alignment
    return F.pad(bias, (0, pad))[..., :bias.shape[-1]] if pad else bias


class StochasticDepth(nn.Module):
    """Stochastic depth for a stage: per-sample scales for the two residual branches (attention,
    FFN) of each of its blocks, drawn together.

    A block's branches are dropped for a sample with the block's probability, and kept ones are
    scaled by 1 / the keep probability. Eager training draws a stage's scales with three
    operators (allocate, draw, rescale) where drawing per branch took three per branch (50
    branches in CMT-S). The blocks take their scales as an input: under ``torch.compile``
    blocks of one shape share a graph whatever their probabilities (``cmt_mm.CompileHook``'s
    ``regional``), and recomputing a block (``with_cp``) drops the same samples.

    Args:
        drop_probs (Sequence[float]): each block's probability, in [0, 1).
    """

    def __init__(self, drop_probs: Sequence[float]):
        super().__init__()
        for prob in drop_probs:
            if not 0 <= prob < 1:
                raise ValueError(f'a drop path probability must be in [0, 1), got {prob}')
        self.active = any(prob > 0 for prob in drop_probs)
        keep = 1 - torch.tensor(drop_probs, dtype=torch.float32)
        self.register_buffer('keep_probs', keep[:, None, None].repeat(1, 2, 1), persistent=False)

    @property
    def drop_probs(self) -> List[float]:
        return (1 - self.keep_probs[:, 0, 0]).tolist()

    def forward(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Scales ``(blocks, 2, B, 1, 1)`` for the ``(B, N, C)`` branch outputs of a stage with
        input ``x``, in attention's dtype; None in eval mode or when no block drops."""
        if not (self.training and self.active):
            return None
        shape = (*self.keep_probs.shape[:2], x.shape[0])
        scales = torch.empty(shape, dtype=attention_dtype(x), device=x.device)
        return scales.bernoulli_(self.keep_probs).div_(self.keep_probs)[..., None, None]

    def extra_repr(self) -> str:
        return 'drop_probs=[' + ', '.join(f'{p:.3f}' for p in self.drop_probs) + ']'


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution computed as a matmul over the channels of each pixel.

    On a channels_last map the pixels' channel vectors are the rows of a matrix, so no data
    moves. The GEMM adds the bias in its epilogue, where cuDNN's convolution adds it in a
    separate pass over the output. The parameters are those of the plain conv.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # 2-D, so that F.linear is a single addmm (for more dims it may add the bias apart).
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, self.in_channels)
        # Through (O, 1, 1, C), so that the gradient comes back channels_last like the weight.
        weight = self.weight.permute(0, 2, 3, 1).reshape(self.out_channels, self.in_channels)
        out = F.linear(rows, weight, self.bias)
        return out.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)


class ConvGeluBN(nn.Sequential):
    """Convolution, GELU, then BatchNorm: CMT puts the activation before the norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1):
        conv = PointwiseConv(in_channels, out_channels) if kernel_size == 1 and stride == 1 \
            else nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                           padding=kernel_size // 2)
        super().__init__(OrderedDict(conv=conv, act=nn.GELU(), norm=nn.BatchNorm2d(out_channels)))


class DepthwiseConvWithShortcut(nn.Conv2d):
    """``conv(x) + x`` for a depthwise conv, computed as one convolution.

    The shortcut is folded into the kernel (1 added to each centre tap), which spares a pass over
    the map in the forward and in the backward. The parameters are those of the plain conv, so
    checkpoints are unchanged.
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2,
                         groups=channels)
        identity = torch.zeros_like(self.weight)
        identity[:, :, kernel_size // 2, kernel_size // 2] = 1
        self.register_buffer('identity', identity, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight + self.identity, self.bias)


class PatchEmbed(nn.Module):
    """Halve the resolution with a 2x2 stride-2 convolution, then LayerNorm over channels."""

    def __init__(self, in_channels: int, embed_dims: int):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size=2, stride=2)
        self.norm = FastLayerNorm(embed_dims, eps=1e-5)  # the float32 residual stream

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.projection(x)
        hw = x.shape[2:]
        return self.norm(map_to_tokens(x)), (hw[0], hw[1])


class LightweightAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a map reduced by ``sr_ratio``.

    Queries keep the full resolution; a depthwise conv with kernel = stride = ``sr_ratio`` and a
    BatchNorm shrink the key/value map. A relative position bias, passed in by the stage, is added
    to the scaled attention logits.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} must be divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(embed_dims, embed_dims)
        self.k = nn.Linear(embed_dims, embed_dims)
        self.v = nn.Linear(embed_dims, embed_dims)
        self.proj = nn.Linear(embed_dims, embed_dims)
        if sr_ratio > 1:
            self.reduction = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(embed_dims, embed_dims, sr_ratio, sr_ratio, groups=embed_dims),
                norm=nn.BatchNorm2d(embed_dims)))

    def key_grid(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        return hw[0] // self.sr_ratio, hw[1] // self.sr_ratio

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, C / heads)."""
        return x.unflatten(2, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                position_bias: Union[torch.Tensor, LowRankBias]) -> torch.Tensor:
        kv = x
        if self.sr_ratio > 1:
            kv = map_to_tokens(self.reduction(tokens_to_map(x, hw)))
        q = self.split_heads(self.q(x))
        k = self.split_heads(self.k(kv))
        v = self.split_heads(self.v(kv))
        # The scale is (C / heads)^-0.5, as in the reference.
        out = biased_attention(q, k, v, bias_in_dtype(position_bias, q.dtype))
        return self.proj(out.transpose(1, 2).flatten(2))


class InvertedResidualFFN(nn.Module):
    """1x1 expansion, a residual depthwise 3x3, then a 1x1 projection, all with BatchNorm."""

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        self.expand = ConvGeluBN(embed_dims, hidden_dims)
        self.dwconv = DepthwiseConvWithShortcut(hidden_dims)
        self.dw_act = nn.GELU()
        self.dw_norm = nn.BatchNorm2d(hidden_dims)
        self.project = nn.Sequential(OrderedDict(
            conv=PointwiseConv(hidden_dims, embed_dims),
            norm=nn.BatchNorm2d(embed_dims)))

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        x = self.expand(tokens_to_map(x, hw))
        # The depthwise conv adds its input: the shortcut sits inside the activation and norm.
        x = self.dw_norm(self.dw_act(self.dwconv(x)))
        return map_to_tokens(self.project(x))


class CMTBlock(nn.Module):
    """Local perception unit, then attention and FFN, each pre-normed with a residual."""

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, mlp_ratio: float,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.local_perception = nn.Conv2d(embed_dims, embed_dims, 3, padding=1, groups=embed_dims)
        # The norms feed only linear layers and convolutions: under autocast they write its dtype.
        self.norm1 = FastLayerNorm(embed_dims, eps=1e-6, autocast_output=True)
        self.attn = LightweightAttention(embed_dims, num_heads, sr_ratio)
        self.norm2 = FastLayerNorm(embed_dims, eps=1e-6, autocast_output=True)
        self.ffn = InvertedResidualFFN(embed_dims, int(embed_dims * mlp_ratio))

    def _forward(self, x: torch.Tensor, hw: Tuple[int, int],
                 position_bias: Union[torch.Tensor, LowRankBias],
                 branch_scales: Optional[torch.Tensor]) -> torch.Tensor:
        # The unit's shortcut stays a separate add (unlike the FFN's): under autocast the
        # residual stream is float32, and a shortcut folded into the conv would round it to bf16.
        x_map = tokens_to_map(x, hw)
        x = map_to_tokens(self.local_perception(x_map) + x_map)
        attn = self.attn(self.norm1(x), hw, position_bias)
        x = x + (attn if branch_scales is None else attn * branch_scales[0])
        ffn = self.ffn(self.norm2(x), hw)
        return x + (ffn if branch_scales is None else ffn * branch_scales[1])

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                position_bias: Union[torch.Tensor, LowRankBias],
                branch_scales: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``branch_scales``: the stochastic depth scales ``(2, B, 1, 1)`` of the attention and
        FFN branches (:class:`StochasticDepth`), or None."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw, position_bias, branch_scales,
                                 use_reentrant=False)
        return self._forward(x, hw, position_bias, branch_scales)


class CMTStage(nn.Module):
    """A patch embedding, then CMT blocks that share one relative position bias.

    ``position_bias`` has its pretraining shape ``(heads, Hq0 * Wq0, Hk0 * Wk0)``; each forward
    resizes it to the actual grids, once for all blocks, in the dtype attention runs in. When the
    bias needs no gradient (inference, a frozen stage) the result is cached per input size and
    dtype, since it only changes when the weights do.
    """

    bias_cache_size = 4

    def __init__(self, in_channels: int, embed_dims: int, depth: int, num_heads: int,
                 sr_ratio: int, mlp_ratio: float, query_grid: int, key_grid: int,
                 drop_paths: Sequence[float], with_cp: bool = False):
        super().__init__()
        self.patch_embed = PatchEmbed(in_channels, embed_dims)
        self.blocks = nn.ModuleList([
            CMTBlock(embed_dims, num_heads, sr_ratio, mlp_ratio, with_cp) for _ in range(depth)
        ])
        self.stochastic_depth = StochasticDepth(drop_paths)
        self.head_dims = embed_dims // num_heads
        self.position_bias = nn.Parameter(
            torch.randn(num_heads, query_grid**2, key_grid**2))
        self._bias_cache: Dict[tuple, Union[torch.Tensor, LowRankBias]] = OrderedDict()

    def resized_position_bias(self, query_hw: Tuple[int, int], key_hw: Tuple[int, int],
                              dtype: Optional[torch.dtype] = None
                              ) -> Union[torch.Tensor, LowRankBias]:
        """The bias at the given grids in ``dtype`` (default: its own).

        Dense, with rows aligned for SDPA, where the key grid is no larger than the learned one.
        Resized to a larger key grid (detection sizes), the bias has no more than the learned
        grid's number of keys as its rank: it is then a :class:`LowRankBias`, the bias resized
        over the queries only and the key resize matrix, which attention applies far more
        cheaply than a dense bias (1280x800, stage 1: 64,000 x 49 numbers instead of
        64,000 x 1,000, and no gradient of that size), aligned for the heads once for all blocks.
        """
        bias = self.position_bias
        dtype = dtype or bias.dtype

        def resize():
            if math.prod(key_hw) <= bias.shape[2]:
                return align_rows(
                    bias_in_dtype(resize_position_bias(bias, query_hw, key_hw), dtype))
            return bias_in_dtype(low_rank_position_bias(bias, query_hw, key_hw),
                                 dtype).aligned(self.head_dims)

        # Under torch.compile the bias is part of the graph: the cache lookup would split it.
        if (torch.is_grad_enabled() and bias.requires_grad) or torch.compiler.is_compiling():
            return resize()
        # The version counter moves with every in-place update (optimizer step, loading).
        key = (query_hw, key_hw, bias.device, dtype, bias._version)
        if key not in self._bias_cache:
            self._bias_cache[key] = resize()
            while len(self._bias_cache) > self.bias_cache_size:
                self._bias_cache.popitem(last=False)
        return self._bias_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the (B, C, H, W) map, channels_last in memory."""
        x, hw = self.patch_embed(x)
        key_hw = self.blocks[0].attn.key_grid(hw)
        if min(key_hw) < 1:
            raise ValueError(f'the stage input {tuple(hw)} is too small for a spatial reduction '
                             f'of {self.blocks[0].attn.sr_ratio}')
        bias = self.resized_position_bias(hw, key_hw, attention_dtype(x))
        scales = self.stochastic_depth(x)
        for i, block in enumerate(self.blocks):
            x = block(x, hw, bias, None if scales is None else scales[i])
        return tokens_to_map(x, hw)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Resize a position bias saved at another pretraining resolution to this one."""
        name = prefix + 'position_bias'
        saved = state_dict.get(name)
        if saved is not None and saved.shape != self.position_bias.shape \
                and saved.shape[0] == self.position_bias.shape[0]:
            state_dict[name] = resize_position_bias(
                saved, square_grid(self.position_bias.shape[1]),
                square_grid(self.position_bias.shape[2]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@MODELS.register_module()
class CMT(BaseModule):
    """CMT backbone.

    Args:
        arch (str | dict): ``'ti'``, ``'xs'``, ``'s'``, ``'b'`` (or their long names), or a dict
            with ``embed_dims`` (4 ints), ``depths`` (4 ints), ``mlp_ratio``, ``stem_channels``
            and, optionally, ``img_size`` (the pretraining resolution).
        pretrain_img_size (int, optional): the resolution the relative position biases are shaped
            for; must be a multiple of 32. Defaults to the arch's ImageNet resolution
            (160 / 192 / 224 / 256). Any input size works at run time.
        in_channels (int): input channels. Defaults to 3.
        out_indices (Sequence[int]): stages whose outputs are returned, in 0..3.
            Defaults to all four (strides 4, 8, 16, 32).
        frozen_stages (int): -1 freezes nothing; 0 freezes the stem; k >= 1 freezes the stem
            and the first k stages. Defaults to -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training. Defaults to False.
        with_cp (bool): recompute each block in the backward pass to save memory.
        drop_path_rate (float): stochastic depth, rising linearly over all blocks to this value.
        out_norm_cfg (dict, optional): a norm layer applied to each returned map, such as
            ``dict(type='BN')``. The released model has none (its residual stream is never
            normalised at the end), which is right for fine-tuning pretrained weights; from
            scratch the un-normalised outputs grow and destabilise detection heads.
            Defaults to None.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)`` loads a released
            CMT checkpoint, a converted classifier checkpoint or a plain backbone state dict
            (``prefix`` optional); other mmengine init configs work as usual.
    """

    arch_zoo = {
        **dict.fromkeys(['ti', 'tiny'], dict(
            embed_dims=[46, 92, 184, 368], depths=[2, 2, 10, 2], mlp_ratio=3.6,
            stem_channels=16, img_size=160)),
        **dict.fromkeys(['xs', 'extra-small'], dict(
            embed_dims=[52, 104, 208, 416], depths=[3, 3, 12, 3], mlp_ratio=3.77,
            stem_channels=16, img_size=192)),
        **dict.fromkeys(['s', 'small'], dict(
            embed_dims=[64, 128, 256, 512], depths=[3, 3, 16, 3], mlp_ratio=4.,
            stem_channels=32, img_size=224)),
        **dict.fromkeys(['b', 'base'], dict(
            embed_dims=[76, 152, 304, 608], depths=[4, 4, 20, 4], mlp_ratio=4.,
            stem_channels=38, img_size=256)),
    }
    num_stages = 4

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 pretrain_img_size: Optional[int] = None,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 drop_path_rate: float = 0.,
                 out_norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = list(self.arch_settings['embed_dims'])
        self.depths = list(self.arch_settings['depths'])
        self.pretrain_img_size = pretrain_img_size or self.arch_settings.get('img_size', 224)
        if self.pretrain_img_size % 32 or self.pretrain_img_size < 32:
            raise ValueError('pretrain_img_size must be a positive multiple of 32, '
                             f'got {self.pretrain_img_size}')
        self.out_indices = self._parse_out_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in -1..{self.num_stages}, '
                             f'got {frozen_stages}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        stem_channels = self.arch_settings['stem_channels']
        self.stem = nn.Sequential(
            ConvGeluBN(in_channels, stem_channels, 3, stride=2),
            ConvGeluBN(stem_channels, stem_channels, 3),
            ConvGeluBN(stem_channels, stem_channels, 3))

        drop_paths = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        key_grid = self.pretrain_img_size // 32
        self.stages = nn.ModuleList()
        channels = stem_channels
        for i, (dims, depth) in enumerate(zip(self.embed_dims, self.depths)):
            first = sum(self.depths[:i])
            self.stages.append(CMTStage(
                channels, dims, depth, NUM_HEADS[i], SR_RATIOS[i],
                self.arch_settings['mlp_ratio'],
                query_grid=self.pretrain_img_size // 2**(i + 2), key_grid=key_grid,
                drop_paths=drop_paths[first:first + depth], with_cp=with_cp))
            channels = dims
        self.out_norms = nn.ModuleDict({
            str(i): build_norm_layer(out_norm_cfg, self.embed_dims[i])[1] if out_norm_cfg
            else nn.Identity() for i in self.out_indices})
        # The stages run their convolutions channels_last (see map_to_tokens), so gradients come
        # out in that layout; weights in it too spare DDP a copy of each into its buckets.
        self.to(memory_format=torch.channels_last)
        self._freeze_stages()
        # One cast per stage (not one for all): DDP can reduce a stage's gradients as soon as
        # the backward leaves it. The depthwise conv adds its shortcut to its float32 weight
        # first, so only its bias joins.
        casts = {nn.Conv2d: None, nn.Linear: None, PointwiseConv: None,
                 DepthwiseConvWithShortcut: ('bias', )}
        self._stem_cast_once = CastWeightsOnce(self.stem, casts)
        self._stages_cast_once = [CastWeightsOnce(stage, casts) for stage in self.stages]

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(f'unknown CMT arch {arch!r}; choose one of '
                                 f'{sorted(set(self.arch_zoo))} or pass a dict')
            return dict(self.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        required = {'embed_dims', 'depths', 'mlp_ratio', 'stem_channels'}
        missing = required - set(arch)
        if missing:
            raise ValueError(f'a custom CMT arch needs the keys {sorted(required)}; '
                             f'missing {sorted(missing)}')
        for key in ('embed_dims', 'depths'):
            if len(arch[key]) != self.num_stages or min(arch[key]) < 1:
                raise ValueError(f'arch[{key!r}] must be {self.num_stages} positive ints, '
                                 f'got {arch[key]}')
        for dims, heads in zip(arch['embed_dims'], NUM_HEADS):
            if dims % heads:
                raise ValueError(f'arch embed_dims {arch["embed_dims"]} must be divisible by '
                                 f'the heads per stage {NUM_HEADS}')
        return dict(arch)

    def _parse_out_indices(self, out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        indices = []
        for index in out_indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(f'out_indices must be in 0..{self.num_stages - 1} '
                                 f'(or negative), got {tuple(out_indices)}')
            indices.append(index % self.num_stages)
        return tuple(indices)

    def init_weights(self):
        init_cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if init_cfg is not None and init_cfg.get('type') == 'Pretrained':
            self._init_from_scratch()  # anything the checkpoint lacks starts sensibly
            load_backbone_weights(self, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'),
                                  map_location=init_cfg.get('map_location', 'cpu'))
            self._is_init = True
        elif self.init_cfg is None:
            self._init_from_scratch()
            self._is_init = True
        else:
            super().init_weights()

    def _init_from_scratch(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                # Kaiming normal over the fan-out of one group, as in the reference.
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stage in self.stages:
            nn.init.normal_(stage.position_bias)
            for block in stage.blocks:
                # The local perception unit is the one residual branch without a norm in front.
                # The reference's fan-out init (std sqrt(2/9) for a 3x3 depthwise conv) makes it
                # triple the residual stream's variance in every block: at init CMT-S's third
                # stage reaches ~3e5, past fp16's range. At std 0.1 each block adds 9% to the
                # variance, which keeps the stream's scale yet lets the unit start useful.
                trunc_normal_(block.local_perception.weight, std=.1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f'CMT needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} '
                             f'pixels, got {tuple(x.shape[-2:])}; pad the input (a multiple of '
                             '32 keeps every stride exact)')
        # Under autocast each stage runs with its weights cast once (see CastWeightsOnce).
        x = self._stem_cast_once(x)
        outs = []
        for i, stage in enumerate(self._stages_cast_once):
            x = stage(x)
            if i in self.out_indices:
                # Contiguous NCHW: mmcv's compiled ops (RoIAlign, ...) read their input as such.
                outs.append(self.out_norms[str(i)](x).contiguous())
        return tuple(outs)

    def _freeze_stages(self):
        frozen = [self.stem] if self.frozen_stages >= 0 else []
        frozen += list(self.stages[:max(self.frozen_stages, 0)])
        frozen += [norm for i, norm in self.out_norms.items() if int(i) < self.frozen_stages]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay.

        The stem and the first patch embedding are layer 0; block j of stage i is
        ``sum(depths[:i]) + j + 1``; a stage's patch embedding and its position bias share the id
        of the stage's first block; the output norms and everything outside the backbone (neck,
        heads) are the last layer, ``sum(depths) + 1``.

        Returns:
            tuple[int, int]: the layer id and the number of layers.
        """
        num_layers = sum(self.depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):].split('.')
        if name[0] == 'stem':
            return 0, num_layers
        if name[0] == 'stages':
            stage = int(name[1])
            first = sum(self.depths[:stage])
            if name[2] == 'blocks':
                return first + int(name[3]) + 1, num_layers
            if stage == 0 and name[2] == 'patch_embed':
                return 0, num_layers
            return first + 1, num_layers
        return num_layers - 1, num_layers
