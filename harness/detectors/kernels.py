"""No compiled mmcv kernel on a cell's path: NMS and RoIAlign go through ``torchvision.ops``.

mmcv 2.1.0 has no wheel on PyPI; the one the harness builds (or takes from a wheelhouse) has CPU kernels
only. On a GPU node its ops fail for CUDA tensors. The seven detectors of the grid reach ``mmcv._ext``
at exactly these places:

============================  ==========================================  =================================
mmcv function                 who calls it                                routed to
============================  ==========================================  =================================
``nms``                       every detector's NMS (``batched_nms``,      ``torchvision.ops.nms``
                              ``multiclass_nms``): Faster, Cascade,
                              Mask R-CNN, ATSS, PAA
``roi_align_forward`` /       ``RoIAlign`` (the R-CNN RoI extractors) and ``torchvision.ops.roi_align`` and
``roi_align_backward``        ``roi_align`` (Mask R-CNN's mask targets,   its backward kernel
                              ``BitmapMasks.crop_and_resize``)
``sigmoid_focal_loss_*``      mmdet's ``FocalLoss`` with label targets,   the same loss in plain torch
                              on CUDA only (on CPU mmdet takes its own
                              Python path): every Focal cell, PAA's
                              scoring loss
============================  ==========================================  =================================

torchvision ships CPU and CUDA kernels in every torch build, so with :func:`install` an mmcv built
without CUDA serves GPU nodes and a cluster needs no CUDA toolkit. :func:`install` replaces the
``ext_module`` global of ``mmcv.ops.nms``, ``mmcv.ops.roi_align`` and ``mmcv.ops.focal_loss`` (the name
their Python wrappers call the extension by) with a :class:`RoutedExtension`: the functions above are
answered here, anything else is looked up on ``mmcv._ext`` at call time. The wrappers themselves
(``mmcv.ops.nms``'s score filtering and ``max_num``, ``RoIAlignFunction``'s autograd, ...) are unchanged,
so every caller, whatever name it imported, is routed. RoIAlign with ``pool_mode='max'`` (no torchvision
kernel; no cell uses it) stays on mmcv's kernel. mmcv's own switch ``RoIAlign(use_torchvision=True)``
calls torchvision directly and gives the same values (``tests/test_kernels.py``).

**RoIAlign's backward on a CPU.** torchvision's CPU backward kernel recomputes every sample's bilinear
weights for every channel, one scalar at a time: at the tiny profile it took about half of a Cascade
R-CNN training step (35 ms for the 400 RoIs of a 32 × 32 feature map, six times its forward).
:func:`install` registers :func:`roi_align_backward_cpu` as the CPU kernel of
``torchvision::_roi_align_backward`` (the op behind ``torchvision.ops.roi_align``'s gradient and the
routed mmcv backward below): the same gradient, computed as matrix products, since RoIAlign's average of
bilinear samples is separable, ``out[r] = A_y[r] · F[image of r] · A_x[r]ᵀ`` with ``A_y`` (pooled
height × H) and ``A_x`` (pooled width × W) each RoI's row and column weights. At the tiny profile's
sizes it is 3-9 times faster (CPU time, one thread: 8.5 ms against 36 ms for 420 RoIs of a 32 × 32 map,
8.4 against 52 ms for 200 mask RoIs of 14 × 14) and equal to torchvision's kernel to float64 precision
(``tests/test_kernels.py``). On a large map (the paper profile's: 200 × 304 cells at stride 4) the dense
product over every row and column is most of the work, although a RoI touches only its own window: there
each RoI is summed over its window only, RoIs grouped by window size (5.8 s -> 1.1 s for 1,500 RoIs of
2 images, 256 channels, a quarter of a Faster R-CNN step on one core at 1333 × 800); maps up to 64 × 64 and
groups of RoIs covering over an eighth of the map stay dense. CUDA tensors keep torchvision's kernel.

The harness's mmdet plug-in (:mod:`harness.detectors.plugin`, imported by every cell config) calls
:func:`install`. :func:`forbid_compiled_ops` makes every ``mmcv._ext`` function raise, which is how the
tests (and ``harness gpu-check``) prove that no cell reaches one.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Callable, Iterator

# mmcv module -> the extension functions answered here instead of mmcv._ext
ROUTED = {
    "mmcv.ops.nms": ("nms",),
    "mmcv.ops.roi_align": ("roi_align_forward", "roi_align_backward"),
    "mmcv.ops.focal_loss": ("sigmoid_focal_loss_forward", "sigmoid_focal_loss_backward"),
}
_AVG_POOL = 1  # RoIAlignFunction's pool_mode code for 'avg' (0 is 'max')


class CompiledOpCalled(RuntimeError):
    """A compiled mmcv kernel was called while :func:`forbid_compiled_ops` was active."""


class RoutedExtension:
    """Stands in for ``mmcv._ext`` in one ``mmcv.ops`` module: ``functions`` are answered by this module's
    torchvision (or torch) versions; any other attribute is read from the real extension when used."""

    def __init__(self, ext, functions: dict[str, Callable]):
        self._ext = ext
        self._functions = dict(functions)

    def __getattr__(self, name: str):
        functions = self.__dict__.get("_functions", {})
        if name in functions:
            return functions[name]
        return getattr(self.__dict__["_ext"], name)

    def __repr__(self) -> str:
        return f"<RoutedExtension of {self._ext.__name__}: {', '.join(sorted(self._functions))} via torchvision>"


# ------------------------------------------------------------------------------------------------ NMS

def nms(bboxes, scores, iou_threshold: float, offset: int = 0):
    """``mmcv._ext.nms``: indices of the kept boxes in decreasing score order (``torchvision.ops.nms``).
    ``offset=1`` (the legacy ``+1`` box widths) is the same as NMS on boxes whose ``x2, y2`` grow by 1."""
    from torchvision.ops import nms as tv_nms

    if offset:
        bboxes = bboxes.clone()
        bboxes[:, 2:4] += offset
    return tv_nms(bboxes, scores.to(bboxes.dtype), float(iou_threshold))


# ------------------------------------------------------------------------------------------- RoIAlign

def roi_align_forward(input, rois, output, argmax_y, argmax_x, *, aligned_height: int, aligned_width: int,
                      spatial_scale: float, sampling_ratio: int, pool_mode: int, aligned: bool, _ext=None):
    """``mmcv._ext.roi_align_forward``: fills ``output`` (R, C, h, w) with torchvision's RoIAlign of
    ``input`` (N, C, H, W) at ``rois`` (R, 5: image index, x1, y1, x2, y2). Average pooling only; max
    pooling is passed to mmcv's kernel (``_ext``)."""
    if pool_mode != _AVG_POOL:
        return _ext.roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height=aligned_height,
                                      aligned_width=aligned_width, spatial_scale=spatial_scale,
                                      sampling_ratio=sampling_ratio, pool_mode=pool_mode, aligned=aligned)
    import torch
    from torchvision.ops import roi_align

    with torch.no_grad():  # called inside mmcv's autograd Function; its backward is below
        output.copy_(roi_align(input, rois.to(input.dtype), (aligned_height, aligned_width), spatial_scale,
                               sampling_ratio, aligned))


def roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, *, aligned_height: int,
                       aligned_width: int, spatial_scale: float, sampling_ratio: int, pool_mode: int,
                       aligned: bool, _ext=None):
    """``mmcv._ext.roi_align_backward``: writes the gradient of the input into ``grad_input`` with
    torchvision's RoIAlign backward op (average pooling; max pooling goes to mmcv's kernel); on a CPU that
    op is :func:`roi_align_backward_cpu` once :func:`install` ran."""
    if pool_mode != _AVG_POOL:
        return _ext.roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input,
                                       aligned_height=aligned_height, aligned_width=aligned_width,
                                       spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                                       pool_mode=pool_mode, aligned=aligned)
    import torch

    n, c, h, w = grad_input.shape
    grad = torch.ops.torchvision._roi_align_backward(
        grad_output.contiguous(), rois.to(grad_output.dtype), float(spatial_scale), aligned_height, aligned_width,
        n, c, h, w, int(sampling_ratio), bool(aligned))
    grad_input.copy_(grad)


def _axis_weights(start, size, pooled: int, grid, length: int):
    """RoIAlign's bilinear weights along one axis, ``(R, pooled, length)``: row ``p`` of RoI ``r`` holds the
    weight of every feature row (or column) in the ``grid[r]`` samples of bin ``p``, as torchvision's
    kernels take them (a sample beyond ``[-1, length]`` counts zero; one below 0 reads row 0; one past the
    last row reads the last row)."""
    import torch

    rois = start.shape[0]
    samples = max(int(grid.max()), 1)
    bin_size = size / pooled
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device)
    steps = torch.arange(samples, dtype=start.dtype, device=start.device)
    at = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
          + (steps[None, None, :] + 0.5) * (bin_size / grid.clamp(min=1).to(start.dtype))[:, None, None])
    used = (steps[None, None, :] < grid[:, None, None]) & (at >= -1.0) & (at <= length)
    at = at.clamp(min=0)
    low = at.floor().long()
    last = low >= length - 1
    low = torch.where(last, torch.full_like(low, length - 1), low)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(at), at - low.to(at.dtype))
    weights = torch.zeros(rois, pooled, length, dtype=start.dtype, device=start.device)
    weights.scatter_add_(2, low, (1 - frac) * used)
    weights.scatter_add_(2, high, frac * used)
    return weights


def _windows(weights, length: int):
    """First column and span of each RoI's non-zero weights ``(R, pooled, length)``; span 0 for a RoI whose
    samples all fall outside the map (no gradient)."""
    import torch

    used = (weights != 0).any(dim=1)  # (R, length)
    any_used = used.any(dim=1)
    first = used.to(torch.uint8).argmax(dim=1)
    last = length - 1 - used.flip(1).to(torch.uint8).argmax(dim=1)
    span = torch.where(any_used, last - first + 1, torch.zeros_like(first))
    return first, span


def _window_buckets(span_y, span_x) -> list:
    """RoIs grouped by window size, a power of two (at least 4) per axis, so that a group's windows, padded
    to its largest, are at most twice as long as a RoI's own along each axis. Each entry: the indices of
    one group's RoIs (RoIs with no weight on the map in none)."""
    import torch

    def level(span):
        return torch.ceil(torch.log2(span.clamp(min=4).double())).long()

    key = level(span_y) * 64 + level(span_x)
    live = (span_y > 0) & (span_x > 0)
    keys = key[live]
    index = torch.nonzero(live).flatten()
    return [index[keys == k] for k in torch.unique(keys).tolist()]


_DENSE_AREA = 8  # a group whose windows cover over an eighth of the map is summed densely (one product per image)
_DENSE_MAP = 64 * 64  # a map this small is summed densely whatever its RoIs (windows save less than they cost)


def _add_windows(summed, grad, a_y, a_x, image, first_y, first_x, k_y: int, k_x: int, height: int, width: int):
    """Adds the RoIs' gradients into ``summed`` (N * H * W, C), each only over its ``k_y`` x ``k_x`` window:
    two batched products, one ``index_add_``."""
    import torch

    size, channels, pooled_height, pooled_width = grad.shape
    y0 = first_y.clamp(max=height - k_y)
    x0 = first_x.clamp(max=width - k_x)
    rows = y0[:, None] + torch.arange(k_y, device=grad.device)  # (size, k_y)
    cols = x0[:, None] + torch.arange(k_x, device=grad.device)
    wy = a_y.gather(2, rows[:, None, :].expand(size, pooled_height, k_y))  # (size, ph, k_y)
    wx = a_x.gather(2, cols[:, None, :].expand(size, pooled_width, k_x))  # (size, pw, k_x)
    # grad_output[r] · wx[r]: (C * ph) x k_x, then bins first: (ph, k_x * C)
    by_col = torch.bmm(grad.reshape(size, channels * pooled_height, pooled_width), wx)
    by_bin = by_col.view(size, channels, pooled_height, k_x).permute(0, 2, 3, 1).reshape(
        size, pooled_height, k_x * channels)
    window = torch.bmm(wy.transpose(1, 2), by_bin)  # (size, k_y, k_x * C)
    cells = (image[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
    summed.index_add_(0, cells.reshape(-1), window.reshape(-1, channels))


def _add_dense(grad_input, grad, a_y, a_x, image):
    """Adds the RoIs' gradients into ``grad_input`` (N, C, H, W) over the whole map: a batched product over
    the RoIs, then one product per image summing its RoIs and bins."""
    import torch

    count, channels, pooled_height, pooled_width = grad.shape
    height, width = a_y.shape[2], a_x.shape[2]
    if bool((image[1:] < image[:-1]).any()):  # mmdet lists RoIs image by image; otherwise sort them so
        order = torch.argsort(image, stable=True)  # that each image's RoIs are one slice
        image, grad, a_y, a_x = image[order], grad[order], a_y[order], a_x[order]
    # grad_output[r] · A_x[r] with the bins before the channels: rows (RoI, bin) × (C * W)
    by_bin = grad.transpose(1, 2).reshape(count, pooled_height * channels, pooled_width)
    rows = torch.bmm(by_bin, a_x).view(count * pooled_height, channels * width)
    a_y = a_y.reshape(count * pooled_height, height)
    images, sizes = torch.unique_consecutive(image, return_counts=True)
    start = 0
    for n, size in zip(images.tolist(), sizes.tolist()):
        mine = slice(start * pooled_height, (start + size) * pooled_height)
        start += size
        summed = a_y[mine].t() @ rows[mine]  # (H, C * W): the sum over this image's RoIs and bins
        grad_input[n] += summed.view(height, channels, width).transpose(0, 1)


def roi_align_backward_cpu(grad_output, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                           batch_size: int, channels: int, height: int, width: int, sampling_ratio: int,
                           aligned: bool):
    """``torchvision::_roi_align_backward`` (same arguments): the gradient of RoIAlign's input, ``(N, C, H,
    W)``, from that of its output ``(R, C, pooled_height, pooled_width)``. With each RoI's row and column
    weights ``A_y``, ``A_x`` (:func:`_axis_weights`; the average over a bin's samples folded into ``A_y``),
    ``grad[n] += A_y[r]ᵀ · grad_output[r] · A_x[r]`` for every RoI ``r`` of image ``n``. Only the window of
    rows and columns a RoI's samples touch is computed (``A_y``, ``A_x`` are zero elsewhere), so the work
    grows with the RoIs' size, not the feature map's: RoIs are grouped by window size
    (:func:`_window_buckets`), each group takes two batched products over its RoIs, and the windows are
    added into the gradient (channels last) with one ``index_add_`` per group."""
    import torch

    dtype = grad_output.dtype
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    device = grad_output.device
    count = rois.shape[0]
    if count == 0 or batch_size * channels * height * width == 0:
        return torch.zeros(batch_size, channels, height, width, dtype=dtype, device=device)
    grad = grad_output.to(work)
    boxes = rois.to(work)
    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 1] * spatial_scale - offset
    y1 = boxes[:, 2] * spatial_scale - offset
    roi_w = boxes[:, 3] * spatial_scale - offset - x1
    roi_h = boxes[:, 4] * spatial_scale - offset - y1
    if not aligned:  # the legacy RoIAlign makes every RoI at least one cell wide
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((count,), sampling_ratio, dtype=torch.long, device=rois.device)
    else:  # adaptive: ceil(RoI size / bins) samples per bin and axis
        grid_h, grid_w = torch.ceil(roi_h / pooled_height).long(), torch.ceil(roi_w / pooled_width).long()
    samples = (grid_h * grid_w).clamp(min=1).to(work)
    a_y = _axis_weights(y1, roi_h, pooled_height, grid_h, height) / samples[:, None, None]
    a_x = _axis_weights(x1, roi_w, pooled_width, grid_w, width)
    image = rois[:, 0].long()
    grad_input = torch.zeros(batch_size, channels, height, width, dtype=work, device=device)
    if height * width <= _DENSE_MAP:
        _add_dense(grad_input, grad, a_y, a_x, image)
        return grad_input.to(dtype)
    first_y, span_y = _windows(a_y, height)
    first_x, span_x = _windows(a_x, width)
    wide = []
    summed = None
    for group in _window_buckets(span_y, span_x):
        k_y, k_x = min(int(span_y[group].max()), height), min(int(span_x[group].max()), width)
        if k_y * k_x * _DENSE_AREA > height * width:
            wide.append(group)
            continue
        if summed is None:  # channels last, so that a window's cell is one row of C values
            summed = torch.zeros(batch_size * height * width, channels, dtype=work, device=device)
        _add_windows(summed, grad[group], a_y[group], a_x[group], image[group], first_y[group], first_x[group],
                     k_y, k_x, height, width)
    if summed is not None:
        grad_input += summed.view(batch_size, height, width, channels).permute(0, 3, 1, 2)
    if wide:
        group = torch.cat(wide)
        _add_dense(grad_input, grad[group], a_y[group], a_x[group], image[group])
    return grad_input.to(dtype)


# --------------------------------------------------------------------------------- sigmoid focal loss

def _focal_elementwise(input, target, weight, gamma: float, alpha: float):
    """mmcv's sigmoid focal loss per logit: ``input`` (N, C), ``target`` (N,) labels in ``[0, C]`` (``C``
    is background), ``weight`` an optional per-class weight of the sample's label."""
    import torch
    import torch.nn.functional as F

    num_classes = input.size(1)
    onehot = F.one_hot(target, num_classes + 1)[:, :num_classes].to(input.dtype)
    p = torch.sigmoid(input)
    ce = F.binary_cross_entropy_with_logits(input, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    loss = ce * (1 - p_t).pow(gamma) * (alpha * onehot + (1 - alpha) * (1 - onehot))
    if weight is not None and weight.numel():
        if bool((target >= num_classes).any()):
            raise ValueError("sigmoid focal loss: a per-class weight needs every label below num_classes "
                             f"({num_classes}); mmcv's kernel reads past the weight for background labels")
        loss = loss * weight[target].unsqueeze(1)
    return loss


def sigmoid_focal_loss_forward(input, target, weight, output, *, gamma: float, alpha: float):
    """``mmcv._ext.sigmoid_focal_loss_forward``: the per-logit loss into ``output``."""
    import torch

    with torch.no_grad():
        output.copy_(_focal_elementwise(input, target, weight, gamma, alpha))


def sigmoid_focal_loss_backward(input, target, weight, grad_input, *, gamma: float, alpha: float):
    """``mmcv._ext.sigmoid_focal_loss_backward``: d loss / d logit per logit into ``grad_input`` (mmcv
    multiplies by the incoming gradient afterwards)."""
    import torch

    with torch.enable_grad():
        x = input.detach().requires_grad_(True)
        loss = _focal_elementwise(x, target, weight, gamma, alpha)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    grad_input.copy_(grad)


# ------------------------------------------------------------------------------------------ installing

def _functions(module_name: str, ext) -> dict[str, Callable]:
    import functools

    table = {
        "nms": nms,
        "roi_align_forward": functools.partial(roi_align_forward, _ext=ext),
        "roi_align_backward": functools.partial(roi_align_backward, _ext=ext),
        "sigmoid_focal_loss_forward": sigmoid_focal_loss_forward,
        "sigmoid_focal_loss_backward": sigmoid_focal_loss_backward,
    }
    return {name: table[name] for name in ROUTED[module_name]}


_TORCHVISION_CPU: list = []  # the registration of roi_align_backward_cpu (kept: freed, it would unregister)


def install() -> None:
    """Route the functions of :data:`ROUTED` through torchvision in their mmcv modules, and make
    :func:`roi_align_backward_cpu` torchvision's CPU RoIAlign backward (idempotent)."""
    if not _TORCHVISION_CPU:
        import torch
        import torchvision.ops  # noqa: F401  (defines torchvision's ops)

        library = torch.library.Library("torchvision", "IMPL")
        library.impl("_roi_align_backward", roi_align_backward_cpu, "CPU")
        _TORCHVISION_CPU.append(library)
    for module_name in ROUTED:
        module = importlib.import_module(module_name)
        current = module.ext_module
        if isinstance(current, RoutedExtension):
            continue
        module.ext_module = RoutedExtension(current, _functions(module_name, current))


def installed() -> bool:
    """True when every module of :data:`ROUTED` calls the routed functions."""
    import sys

    return all(isinstance(getattr(sys.modules.get(name), "ext_module", None), RoutedExtension) for name in ROUTED)


def compiled_op_names() -> list[str]:
    """The functions of ``mmcv._ext`` (the compiled kernels)."""
    ext = importlib.import_module("mmcv._ext")
    return sorted(n for n in dir(ext) if not n.startswith("_") and callable(getattr(ext, n)))


@contextlib.contextmanager
def forbid_compiled_ops() -> Iterator[list[str]]:
    """Meanwhile every ``mmcv._ext`` function raises :class:`CompiledOpCalled` naming itself; yields the
    list of names called (in order, also when the caller caught the error). Restores them afterwards."""
    ext = importlib.import_module("mmcv._ext")
    saved = {name: getattr(ext, name) for name in compiled_op_names()}
    called: list[str] = []

    def raiser(name: str):
        def compiled_op(*args, **kwargs):
            called.append(name)
            raise CompiledOpCalled(f"mmcv._ext.{name} was called: a compiled mmcv kernel on the cell's path "
                                   "(route it in harness/detectors/kernels.py)")
        return compiled_op

    for name in saved:
        setattr(ext, name, raiser(name))
    try:
        yield called
    finally:
        for name, fn in saved.items():
            setattr(ext, name, fn)
