"""mmdet's ResNet with a faster stem pooling on a CPU: ``type='StemPoolResNet'`` (the tiny profile's).

ResNet's stem ends in a 3 × 3, stride-2 max pooling of the stem's 64 × 64 map (at the tiny profile's
128-pixel images). torch's CPU kernel for a map in the default (NCHW) layout takes about 2.3 ms for the
tiny profile's batch of 4 × 16 × 64 × 64, 1.5 to 2.5 % of a training step; its kernel for a channels-last
map, vectorised across the channels, takes about a tenth of that. :class:`ChannelsLastMaxPool2d` pools a
CPU map through the channels-last kernel (the map copied to that layout and the result copied back, about
0.4 ms) and leaves the backward pass to the usual NCHW kernel, fed with the channels-last kernel's
indices: a training step's pooling 2.5 -> 1 ms. Both kernels scan a window row by row and keep the first
maximum (a later value wins only when it is greater, or NaN), and index a position the same way (row x
width + column within its map), so the outputs, the indices and therefore the gradients are equal bit for
bit; ``tests/test_stem_pool.py`` checks the pooling on maps full of ties (ReLU's zeros) and trains cells
with and without it. A CUDA map (or any other device) takes ``F.max_pool2d`` unchanged.

:class:`StemPoolResNet` is mmdet's ``ResNet``, same arguments and weights (its state dict has the same
keys), with that pooling in its stem. The tiny profile names it; the paper profile keeps mmdet's
``ResNet``, as the official configs do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.utils import _pair


class _ChannelsLastPool(torch.autograd.Function):
    """Max pooling through the channels-last CPU kernel; the gradient by the NCHW kernel from its indices."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        out, indices = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel_size, stride, padding)
        out = out.contiguous(memory_format=torch.contiguous_format)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, indices.contiguous(memory_format=torch.contiguous_format))
            ctx.window = (kernel_size, stride, padding)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, indices = ctx.saved_tensors
        kernel_size, stride, padding = ctx.window
        grad = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out.contiguous(), x, kernel_size, stride, padding, [1, 1], False, indices)
        return grad, None, None, None


class ChannelsLastMaxPool2d(nn.Module):
    """``nn.MaxPool2d(kernel_size, stride, padding)`` (no dilation, floor mode): the same values and
    gradients, computed through the channels-last kernel for a 4-d CPU map in the default layout."""

    def __init__(self, kernel_size=3, stride=2, padding=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding = (list(_pair(v)) for v in (kernel_size, stride, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous():
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        return _ChannelsLastPool.apply(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, channels last on CPU"


@MODELS.register_module()
class StemPoolResNet(ResNet):
    """mmdet's ``ResNet`` whose stem pools through :class:`ChannelsLastMaxPool2d` (same values, faster on
    a CPU)."""

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        super()._make_stem_layer(in_channels, stem_channels)
        pool = self.maxpool
        self.maxpool = ChannelsLastMaxPool2d(pool.kernel_size, pool.stride, pool.padding)
