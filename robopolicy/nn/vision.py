"""ResNet-18 with GroupNorm, spatial-softmax keypoints and random/center crop, in plain torch.

torchvision does not install beside the CPU torch build we target, and BatchNorm is a poor fit for
small-batch BC and for EMA weights, so this is diffusion_policy's GroupNorm variant written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int, groups_per: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // groups_per), channels)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, groups_per: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out, groups_per)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out, groups_per)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out, groups_per))
            if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.skip(x))


class ResNet18GN(nn.Module):
    """ResNet-18 trunk (no pooling/fc head): (N, 3, H, W) -> (N, 512, H/32, W/32)."""

    def __init__(self, groups_per: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), _norm(64, groups_per), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        layers, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(c_in, c_out, stride, groups_per), BasicBlock(c_out, c_out, 1, groups_per)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.out_channels = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


class SpatialSoftmax(nn.Module):
    """Expected 2-D image coordinates of K learned keypoints: (N, C, H, W) -> (N, 2K)."""

    def __init__(self, channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.proj(features)
        n, k, h, w = logits.shape
        attn = logits.flatten(2).softmax(-1)
        ys = torch.linspace(-1.0, 1.0, h, device=features.device, dtype=features.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=features.device, dtype=features.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        ex = (attn * grid_x.reshape(1, 1, -1)).sum(-1)
        ey = (attn * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.stack([ex, ey], -1).reshape(n, 2 * k)


class Crop(nn.Module):
    """Random crop per sample while training (augmentation), center crop in eval mode (deployment)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ch, cw = self.size
        if (ch, cw) == (h, w):
            return x
        if ch > h or cw > w:
            raise ValueError(f"crop {self.size} is larger than the image {(h, w)}")
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return x[:, :, top:top + ch, left:left + cw]
        tops = torch.randint(0, h - ch + 1, (n,), device=x.device)
        lefts = torch.randint(0, w - cw + 1, (n,), device=x.device)
        rows = (tops[:, None] + torch.arange(ch, device=x.device))[:, :, None]
        cols = (lefts[:, None] + torch.arange(cw, device=x.device))[:, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None]
        return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
