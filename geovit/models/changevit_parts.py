"""ChangeViT building blocks: detail-capture branch, feature injector, difference decoder.

Zhu et al., "ChangeViT: Unleashing Plain Vision Transformers for Change Detection"
(arXiv 2406.12847), method section: detail-capture module, feature injector, decoder. The layer
shapes follow the reference code as documented in ``specs/changevit.md`` §1.2-1.4 (facts only;
this is an independent implementation).
Everything here is applied per time step with shared weights except :class:`ChangeDecoder`,
where the two time steps first meet.
"""
from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.resnet import BasicBlock, make_blocks
from torch import nn

from geovit.errors import GeovitError
from geovit.models.layers import attention

#: Channel widths of the detail-capture features c2 (1/2), c3 (1/4) and c4 (1/8).
DETAIL_DIMS: tuple[int, int, int] = (64, 128, 256)


class DetailCapture(nn.Module):
    """ResNet-18 stem + layer1-3 without the max-pool (spec §1.2).

    Returns the fine-grained features ``(c2, c3, c4)`` at strides 2, 4, 8 with 64, 128, 256
    channels. A light dropout (p=0.01, active in training only) follows ``layer1`` as in the
    reference. Parameter names match torchvision/timm ``resnet18`` so ImageNet or official
    weights load with their own keys (``layer4``/``fc`` are never built).
    """

    def __init__(self, in_chans: int = 3, dropout: float = 0.01):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        stages, _ = make_blocks((BasicBlock,) * 3, channels=DETAIL_DIMS, block_repeats=(2, 2, 2),
                                inplanes=64, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
        for name, stage in stages:  # layer1, layer2, layer3
            self.add_module(name, stage)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, in_chans, H, W) -> ``(c2, c3, c4)`` at strides 2, 4, 8."""
        x = self.act1(self.bn1(self.conv1(x)))  # no max-pool: stays at 1/2
        c2 = self.drop(self.layer1(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return c2, c3, c4


class CrossAttention(nn.Module):
    """Multi-head attention from ViT tokens (queries) to detail tokens (keys/values), no qkv bias.

    ``fused_attn`` selects ``F.scaled_dot_product_attention`` (default) or the materialised
    ``softmax((q @ kᵀ) * scale) @ v`` path; :func:`geovit.models.layers.set_fused_attention`
    toggles it together with the ViT's self-attention.
    """

    def __init__(self, dim: int, detail_dim: int, num_heads: int = 8):
        super().__init__()
        if dim % num_heads:
            raise GeovitError(f"embed_dim {dim} is not divisible by injector_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(detail_dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.fused_attn = True

    def forward(self, tokens: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
        """ViT tokens (B, N, C) attend to detail tokens (B, M, detail_dim) -> (B, N, C)."""
        b, n, c = tokens.shape
        q = self.q(tokens).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(details).reshape(b, details.shape[1], 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        x = attention(q, k, v, fused=self.fused_attn)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class InjectorBlock(nn.Module):
    """One cross-attention block of the feature injector (spec §1.3).

    ``x = c5 + CA(LN1(c5), LN2(details));  x = x + MLP(LN3(x))`` with a ReLU MLP of ratio 4.
    """

    def __init__(self, dim: int, detail_dim: int, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(detail_dim)
        self.attn = CrossAttention(dim, detail_dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU)

    def forward(self, tokens: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) with the details (B, M, detail_dim) injected -> (B, N, C)."""
        x = tokens + self.attn(self.norm1(tokens), self.norm2(details))
        return x + self.mlp(self.norm3(x))


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major."""
    return x.flatten(2).transpose(1, 2)


class FeatureInjector(nn.Module):
    """Inject c2, c3, c4 details into the ViT map c5 (paper: feature injector; spec §1.3).

    Three parallel :class:`InjectorBlock` s (``c2_c5``, ``c3_c5``, ``c4_c5``) all query the same
    original c5 tokens; their outputs are concatenated and fused by a bias-free 1x1 conv.
    """

    def __init__(self, dim: int, detail_dims=DETAIL_DIMS, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.c2_c5 = InjectorBlock(dim, detail_dims[0], num_heads, mlp_ratio)
        self.c3_c5 = InjectorBlock(dim, detail_dims[1], num_heads, mlp_ratio)
        self.c4_c5 = InjectorBlock(dim, detail_dims[2], num_heads, mlp_ratio)
        self.fuse = nn.Conv2d(3 * dim, dim, kernel_size=1, bias=False)

    def forward(self, c5: torch.Tensor, details) -> torch.Tensor:
        """c5 (B, C, h, w) and the details ``(c2, c3, c4)`` -> injected c5 (B, C, h, w)."""
        b, c, h, w = c5.shape
        tokens = _tokens(c5)
        blocks = (self.c2_c5, self.c3_c5, self.c4_c5)
        injected = [blk(tokens, _tokens(d)).transpose(1, 2).reshape(b, c, h, w)
                    for blk, d in zip(blocks, details)]
        return self.fuse(torch.cat(injected, dim=1))


def difference_block(dim: int, decay: int = 4) -> nn.Sequential:
    """Per-level difference MLP on ``[x, y, |x - y|]`` (3·dim -> dim), spec §1.4.

    1x1 conv -> BN -> ReLU -> (3x3 conv -> ReLU) x2 -> 3x3 conv, all convs bias-free.
    """
    hidden = dim // decay
    return nn.Sequential(
        nn.Conv2d(3 * dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, dim, 3, padding=1, bias=False),
    )


def upsample_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """1x1 projection then a stride-2 transposed conv (k4, p1): exact x2 upsampling."""
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, bias=False),
                         nn.ConvTranspose2d(out_dim, out_dim, 4, stride=2, padding=1))


class ChangeDecoder(nn.Module):
    """Difference modelling + top-down decoder (paper: decoder; spec §1.4); returns logits.

    Each level l in (c2, c3, c4, injected c5) gives ``f_l = difference[l]([x_l, y_l, |x_l-y_l|])``;
    the coarser map is upsampled x2 and added, down to 1/2 resolution; ``head`` (transposed conv
    + 3x3 conv) brings it to full resolution with ``num_classes`` output channels (the change logits;
    1 as the paper).
    """

    def __init__(self, embed_dim: int, detail_dims=DETAIL_DIMS, decay: int = 4, num_classes: int = 1):
        super().__init__()
        dims = (*detail_dims, embed_dim)
        self.difference = nn.ModuleList(difference_block(d, decay) for d in dims)
        self.up_c5 = upsample_block(embed_dim, detail_dims[2])
        self.up_c4 = upsample_block(detail_dims[2], detail_dims[1])
        self.up_c3 = upsample_block(detail_dims[1], detail_dims[0])
        self.head = nn.Sequential(
            nn.ConvTranspose2d(detail_dims[0], detail_dims[0], 4, stride=2, padding=1),
            nn.Conv2d(detail_dims[0], num_classes, 3, padding=1, bias=False),
        )

    def difference_map(self, level: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``difference[level]([x, y, |x - y|])``: the two time steps' features of one level, fused."""
        return self.difference[level](torch.cat([x, y, (x - y).abs()], dim=1))

    def forward(self, feats1, feats2) -> torch.Tensor:
        """``(c2, c3, c4, c5)`` of both time steps -> change logits (B, num_classes, H, W)."""
        return self.fuse(*(self.difference_map(i, x, y) for i, (x, y) in enumerate(zip(feats1, feats2))))

    def fuse(self, f2: torch.Tensor, f3: torch.Tensor, f4: torch.Tensor, f5: torch.Tensor) -> torch.Tensor:
        """The four difference maps (strides 2, 4, 8, 16), fused top-down -> logits (B, num_classes, H, W)."""
        c4 = f4 + self.up_c5(f5)
        c3 = f3 + self.up_c4(c4)
        c2 = f2 + self.up_c3(c3)
        return self.head(c2)
