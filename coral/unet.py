"""Class-conditional epsilon-prediction UNet of DDPM/CBDM (docs/method.md §2).

The class embedding is added to the time embedding; label -1 means "unconditional"
(the embedding is simply not added, there is no null token). `forward` can also return
the bottleneck: the middle blocks' output, global-average-pooled to (B, C_mid).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from coral.sections import ModelConfig

NORM_GROUPS = 32


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) of integer timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, attention: bool):
        super().__init__()
        self.block1 = nn.Sequential(nn.GroupNorm(NORM_GROUPS, in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.temb_proj = nn.Sequential(nn.SiLU(), nn.Linear(temb_dim, out_ch))
        self.block2 = nn.Sequential(nn.GroupNorm(NORM_GROUPS, out_ch), nn.SiLU(), nn.Dropout(dropout),
                                    nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attn = SelfAttention(out_ch) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.temb_proj(temb)[:, :, None, None]
        h = self.block2(h) + self.shortcut(x)
        return self.attn(h)


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(NORM_GROUPS, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), scale C^-1/2
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, ch: int, ch_mult: list[int],
                 attn: list[int], num_res_blocks: int, dropout: float):
        super().__init__()
        temb_dim = 4 * ch
        self.ch = ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.class_embedding = nn.Embedding(num_classes, temb_dim)
        self.head = nn.Conv2d(in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [ch]
        cur = ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(cur, ch * mult, temb_dim, dropout, level in attn))
                cur = ch * mult
                skip_channels.append(cur)
            if level != len(ch_mult) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skip_channels.append(cur)
        self.middle = nn.ModuleList([ResBlock(cur, cur, temb_dim, dropout, True),
                                     ResBlock(cur, cur, temb_dim, dropout, False)])
        self.bottleneck_dim = cur

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(skip_channels.pop() + cur, ch * mult, temb_dim, dropout, level in attn))
                cur = ch * mult
            if level != 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(cur, cur, 3, padding=1)))
        self.tail = nn.Sequential(nn.GroupNorm(NORM_GROUPS, cur), nn.SiLU(), nn.Conv2d(cur, in_channels, 3, padding=1))
        self._initialize()

    def _initialize(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Near-zero init of every residual branch's output and of the output conv.
        for module in self.modules():
            if isinstance(module, ResBlock):
                nn.init.xavier_uniform_(module.block2[-1].weight, gain=1e-5)
            if isinstance(module, SelfAttention):
                nn.init.xavier_uniform_(module.proj.weight, gain=1e-5)
        nn.init.xavier_uniform_(self.tail[-1].weight, gain=1e-5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, return_bottleneck: bool = False):
        """x (B, C, H, W) in [-1, 1]; t (B,) int; y (B,) int, -1 = unconditional.

        Returns eps (B, C, H, W), and with return_bottleneck also the pooled bottleneck (B, C_mid).
        """
        temb = self.time_mlp(timestep_embedding(t, self.ch))
        keep = (y >= 0).unsqueeze(1)
        temb = temb + self.class_embedding(y.clamp(min=0)) * keep.to(temb.dtype)

        h = self.head(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, temb)
        bottleneck = h.mean(dim=(2, 3))
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), temb)
            else:
                h = layer(h)
        eps = self.tail(h)
        return (eps, bottleneck) if return_bottleneck else eps


def build_unet(model_cfg: Mapping, in_channels: int, num_classes: int) -> UNet:
    """The UNet of a run record's `model` section."""
    model = ModelConfig.of(model_cfg, "model")
    return UNet(in_channels=in_channels, num_classes=num_classes, ch=model.ch, ch_mult=list(model.ch_mult),
                attn=list(model.attn), num_res_blocks=model.num_res_blocks, dropout=model.dropout)
