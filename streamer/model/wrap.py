"""The pipeline-facing model: uint8 NHWC BGR images in, softmax scores out, normalisation inside.

Used by the ONNX export and by a PyTorch runtime alike, so both compute exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PipelineModel(nn.Module):
    """Wraps a net taking normalised float NCHW RGB so that it takes uint8 ``[N, H, W, 3]`` BGR.

    The uint8 input is cast to float32 *first*: TensorRT-RTX rejects a Transpose on UInt8. With
    ``dtype=torch.float16`` the net runs in half precision (the net must already be half); the logits are cast
    back to float32 before the softmax, so ``scores`` is float32 either way.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x/255 - mean)/std == x * scale + shift, one multiply-add per pixel
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        x = x.permute(0, 3, 1, 2)
        x = torch.flip(x, dims=(1,))  # BGR → RGB
        x = x * self.scale + self.shift
        logits = self.net(x.to(self.dtype))
        return torch.softmax(logits.to(torch.float32), dim=1)


def normalise_rgb(images_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Training-side twin of :class:`PipelineModel`'s prologue for uint8 NHWC **RGB** batches."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images_u8.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images_u8.device).view(1, 3, 1, 1)
    x = images_u8.to(torch.float32).permute(0, 3, 1, 2)
    return x * (1.0 / (255.0 * std_t)) - mean_t / std_t
