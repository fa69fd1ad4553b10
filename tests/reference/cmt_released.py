"""Test oracle: a plain-PyTorch re-implementation of the authors' released CMT classifier.

Written only from ``shared/spec/cmt-reference.md`` (not from the authors' code), so that it is an
independent check on ``cmt_mm``: tests load the same weights into this model and into the
converted mmpretrain classifier and compare logits.

Module, parameter and buffer names reproduce the released checkpoint keys exactly (e.g.
``stem_conv1.weight``, ``relative_pos_a``, ``blocks_a.0.attn.sr.1.running_mean``, ``_fc.weight``),
so a released ``state_dict`` loads with ``strict=True``.

Like the released code, a model works only at the one resolution it was built for, because the
relative position biases are dense (heads, Nq, Nk) tensors sized for that resolution.

Depends on torch only.
"""
import torch
from torch import nn

STAGES = ('a', 'b', 'c', 'd')
NUM_HEADS = (1, 2, 4, 8)
SR_RATIOS = (8, 4, 2, 1)
STAGE_STRIDES = (4, 8, 16, 32)

# Per-variant settings, from the spec's table. ``drop_rate`` is the classifier-head dropout.
VARIANTS = {
    'ti': dict(embed_dims=(46, 92, 184, 368), depths=(2, 2, 10, 2), mlp_ratio=3.6,
               stem_channel=16, img_size=160, drop_rate=0.1),
    'xs': dict(embed_dims=(52, 104, 208, 416), depths=(3, 3, 12, 3), mlp_ratio=3.77,
               stem_channel=16, img_size=192, drop_rate=0.1),
    's': dict(embed_dims=(64, 128, 256, 512), depths=(3, 3, 16, 3), mlp_ratio=4.0,
              stem_channel=32, img_size=224, drop_rate=0.1),
    'b': dict(embed_dims=(76, 152, 304, 608), depths=(4, 4, 20, 4), mlp_ratio=4.0,
              stem_channel=38, img_size=256, drop_rate=0.3),
}

HEAD_CHANNELS = 1280


def tokens_to_map(x, h, w):
    """(B, N, C) tokens -> (B, C, h, w) feature map."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, h, w)


def map_to_tokens(x):
    """(B, C, h, w) feature map -> (B, h*w, C) tokens."""
    return x.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (identity in eval mode)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """2x2 stride-2 conv, then LayerNorm (eps 1e-5) over channels; returns tokens and grid size."""

    def __init__(self, in_channels, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(map_to_tokens(x)), (h, w)


class LightweightAttention(nn.Module):
    """LMHSA: queries at full resolution, keys/values from a depthwise-reduced map.

    The relative position bias is owned by the stage (shared by its blocks), so it is passed in.
    """

    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            # Only stages with a reduction have this module (stage d has no `sr` keys).
            self.sr = nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio, groups=dim),
                nn.BatchNorm2d(dim),
            )

    def split_heads(self, x):
        """(B, N, C) -> (B, heads, N, C / heads)."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x, h, w, relative_pos):
        b, n, c = x.shape
        q = self.split_heads(self.q(x))
        kv_tokens = x
        if self.sr_ratio > 1:
            kv_tokens = map_to_tokens(self.sr(tokens_to_map(x, h, w)))
        k = self.split_heads(self.k(kv_tokens))
        v = self.split_heads(self.v(kv_tokens))
        # Scale the raw scores first, then add the (heads, Nq, Nk) bias (broadcast over batch).
        attn = (q @ k.transpose(-2, -1)) * self.scale + relative_pos
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class IRFFN(nn.Module):
    """Inverted residual FFN on the (B, C, h, w) map; activation and BN come after each op."""

    def __init__(self, dim, mlp_ratio):
        super().__init__()
        hidden = int(dim * mlp_ratio)  # floor, as in the released code
        # Sequential indices give the released names: conv1.0 conv, conv1.1 GELU, conv1.2 BN.
        self.conv1 = nn.Sequential(
            nn.Conv2d(dim, hidden, kernel_size=1),
            nn.GELU(),
            nn.BatchNorm2d(hidden),
        )
        self.proj = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.proj_act = nn.GELU()
        self.proj_bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Sequential(
            nn.Conv2d(hidden, dim, kernel_size=1),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x, h, w):
        y = self.conv1(tokens_to_map(x, h, w))
        # The depthwise shortcut sits inside: GELU and BN act on the sum.
        y = self.proj_bn(self.proj_act(self.proj(y) + y))
        return map_to_tokens(self.conv2(y))


class CMTBlock(nn.Module):
    """LPU, then pre-norm LMHSA and pre-norm IRFFN residual branches."""

    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio, drop_path=0.0):
        super().__init__()
        # LPU: depthwise 3x3 conv with an identity shortcut, no norm, no drop-path.
        self.proj = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = LightweightAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = IRFFN(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, h, w, relative_pos):
        feat = tokens_to_map(x, h, w)
        x = map_to_tokens(self.proj(feat) + feat)
        x = x + self.drop_path(self.attn(self.norm1(x), h, w, relative_pos))
        x = x + self.drop_path(self.mlp(self.norm2(x), h, w))
        return x


class CMTReleased(nn.Module):
    """The released CMT ImageNet classifier; ``forward(x)`` returns logits."""

    def __init__(self, embed_dims, depths, mlp_ratio, stem_channel, img_size,
                 num_classes=1000, drop_rate=0.1, drop_path_rate=0.0):
        super().__init__()
        self.img_size = img_size

        # Stem: three 3x3 convs, each followed by GELU and then BN (activation before norm).
        self.stem_conv1 = nn.Conv2d(3, stem_channel, kernel_size=3, stride=2, padding=1)
        self.stem_act1 = nn.GELU()
        self.stem_norm1 = nn.BatchNorm2d(stem_channel)
        self.stem_conv2 = nn.Conv2d(stem_channel, stem_channel, kernel_size=3, padding=1)
        self.stem_act2 = nn.GELU()
        self.stem_norm2 = nn.BatchNorm2d(stem_channel)
        self.stem_conv3 = nn.Conv2d(stem_channel, stem_channel, kernel_size=3, padding=1)
        self.stem_act3 = nn.GELU()
        self.stem_norm3 = nn.BatchNorm2d(stem_channel)

        # Drop-path rates rise linearly over all blocks of all stages.
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        key_tokens = (img_size // 32) ** 2  # sr cancels the extra downsampling in every stage
        in_channels = stem_channel
        for i, stage in enumerate(STAGES):
            dim = embed_dims[i]
            query_tokens = (img_size // STAGE_STRIDES[i]) ** 2
            setattr(self, f'patch_embed_{stage}', PatchEmbed(in_channels, dim))
            # One dense (heads, Nq, Nk) bias per stage, shared by all of its blocks.
            setattr(self, f'relative_pos_{stage}', nn.Parameter(
                torch.randn(NUM_HEADS[i], query_tokens, key_tokens)))
            start = sum(depths[:i])
            setattr(self, f'blocks_{stage}', nn.ModuleList(
                CMTBlock(dim, NUM_HEADS[i], SR_RATIOS[i], mlp_ratio, rates[start + j])
                for j in range(depths[i])))
            in_channels = dim

        # Classifier head: 1x1 conv -> BN -> Swish -> global average pool -> dropout -> Linear.
        self._fc = nn.Conv2d(embed_dims[-1], HEAD_CHANNELS, kernel_size=1)
        self._bn = nn.BatchNorm2d(HEAD_CHANNELS)
        self._swish = nn.SiLU()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(HEAD_CHANNELS, num_classes)

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        # The spec's init; tests overwrite it, but it keeps fresh models well-behaved.
        # (relative_pos_* keep their standard-normal init from construction.)
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out')
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_stem(self, x):
        x = self.stem_norm1(self.stem_act1(self.stem_conv1(x)))
        x = self.stem_norm2(self.stem_act2(self.stem_conv2(x)))
        x = self.stem_norm3(self.stem_act3(self.stem_conv3(x)))
        return x

    def forward_features(self, x):
        """Image -> last-stage feature map (B, C4, H/32, W/32). No norm after any stage."""
        if tuple(x.shape[2:]) != (self.img_size, self.img_size):
            raise ValueError(f'this model only runs at {self.img_size}x{self.img_size}, '
                             f'got {tuple(x.shape[2:])}')
        x = self.forward_stem(x)
        for stage in STAGES:
            x, (h, w) = getattr(self, f'patch_embed_{stage}')(x)
            relative_pos = getattr(self, f'relative_pos_{stage}')
            for block in getattr(self, f'blocks_{stage}'):
                x = block(x, h, w, relative_pos)
            x = tokens_to_map(x, h, w)
        return x

    def forward(self, x):
        x = self._swish(self._bn(self._fc(self.forward_features(x))))
        x = self._drop(torch.flatten(self._avg_pooling(x), 1))
        return self.head(x)


def build_released_cmt(variant, num_classes=1000, drop_path_rate=0.0):
    """Build the released classifier for ``variant`` in 'ti', 'xs', 's', 'b'."""
    try:
        cfg = VARIANTS[variant.lower()]
    except KeyError:
        raise ValueError(f'unknown CMT variant {variant!r}; expected one of {sorted(VARIANTS)}')
    return CMTReleased(num_classes=num_classes, drop_path_rate=drop_path_rate, **cfg)
