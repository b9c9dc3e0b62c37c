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

**RoIAlign on a CPU.** torchvision's CPU kernels loop over channels outside their samples, reading each
channel's plane one scalar at a time, and the backward recomputes every sample's bilinear weights for every
channel: at the tiny profile a Cascade R-CNN stage's RoIAlign took 7.3 ms forward and 51 ms backward (408
RoIs of a 32 × 32 map, 32 channels). When the harness's C kernels build (``roi_align.c``, compiled by
:mod:`harness.detectors.native` with the machine's C compiler; ``make setup`` does it), :func:`install`
registers :func:`roi_align_forward_cpu` and :func:`roi_align_backward_cpu` as the CPU kernels of
``torchvision::roi_align`` and ``torchvision::_roi_align_backward`` (the ops behind
``torchvision.ops.roi_align``, its gradient and the routed mmcv functions below). They compute over the map
made channels last, so a sample's neighbours are runs of contiguous channels, and give torchvision's values
bit for bit in float32 and float64: the same sample positions and weights, every sum per channel in
torchvision's order (``tests/test_kernels.py``). Same sizes: 1.9 ms forward and 2.3 ms backward (one
thread); at the paper profile's (1,500 RoIs on a 200 × 304 map of 2 images, 256 channels) 152 ms and 358 ms
against torchvision's 715 ms and 2.6 s (the matrix products the harness used before took 1.1 s backward
there, on another day's machine). Without a C compiler (or with ``HARNESS_NATIVE=off``) torchvision's own kernels run: the same
values, slower; :func:`cpu_roi_align` says which ran and every run records it in its provenance. CUDA
tensors keep torchvision's CUDA kernels.

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
    op is :func:`roi_align_backward_cpu` once :func:`install` registered it."""
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


def _roi_align_library():
    """The C kernels' library (:mod:`harness.detectors.native`), its argument types set; None without it."""
    import ctypes

    from harness.detectors import native

    lib = native.load("roi_align")
    if lib is not None and not hasattr(lib, "_harness_ready"):
        arguments = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                     ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_int, ctypes.c_int,
                     ctypes.c_void_p]
        for name in ("roi_align_forward_f32", "roi_align_forward_f64", "roi_align_backward_f32",
                     "roi_align_backward_f64"):
            function = getattr(lib, name)
            function.argtypes = arguments
            function.restype = ctypes.c_int
        lib._harness_ready = True
    return lib


def _work_dtype(dtype):
    import torch

    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _call(lib, direction: str, dtype, *arguments) -> None:
    import torch

    suffix = "f64" if dtype == torch.float64 else "f32"
    if getattr(lib, f"roi_align_{direction}_{suffix}")(*arguments) != 0:
        raise MemoryError(f"RoIAlign's {direction} kernel (harness/detectors/roi_align.c) ran out of memory")


def roi_align_forward_cpu(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                          sampling_ratio: int, aligned: bool):
    """``torchvision::roi_align`` on a CPU (same arguments): ``(R, C, pooled_height, pooled_width)``, each
    bin the average of its bilinear samples of ``input`` (N, C, H, W) in RoI ``rois[r]`` (image, x1, y1,
    x2, y2). Computed by ``roi_align.c`` over the map made channels last: torchvision's values bit for bit
    in float32 and float64 (other dtypes are computed in float32)."""
    import torch

    dtype = input.dtype
    work = _work_dtype(dtype)
    count, channels = rois.shape[0], input.shape[1]
    height, width = input.shape[2], input.shape[3]
    output = torch.empty(count, channels, pooled_height, pooled_width, dtype=work)  # the kernel writes every bin
    if output.numel() == 0:
        return output.to(dtype)
    channels_last = input.to(work).permute(0, 2, 3, 1).contiguous()
    boxes = rois.to(work).contiguous()
    _call(_roi_align_library(), "forward", work, channels_last.data_ptr(), boxes.data_ptr(), count, channels,
          height, width, int(pooled_height), int(pooled_width), float(spatial_scale), int(sampling_ratio),
          int(bool(aligned)), output.data_ptr())
    return output.to(dtype)


def roi_align_backward_cpu(grad_output, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                           batch_size: int, channels: int, height: int, width: int, sampling_ratio: int,
                           aligned: bool):
    """``torchvision::_roi_align_backward`` on a CPU (same arguments): the gradient of RoIAlign's input,
    ``(N, C, H, W)``, from that of its output ``(R, C, pooled_height, pooled_width)``: each bin's gradient
    spread over its samples' four neighbours with their bilinear weights, divided by the bin's sample
    count. Computed by ``roi_align.c`` into a channels-last gradient: torchvision's values bit for bit in
    float32 and float64 (every addition in its order, per channel; other dtypes are computed in float32)."""
    import torch

    dtype = grad_output.dtype
    work = _work_dtype(dtype)
    grad_input = torch.zeros(batch_size, height, width, channels, dtype=work)
    count = rois.shape[0]
    if count == 0 or grad_input.numel() == 0:
        return grad_input.permute(0, 3, 1, 2).contiguous().to(dtype)
    grad = grad_output.to(work).contiguous()
    boxes = rois.to(work).contiguous()
    _call(_roi_align_library(), "backward", work, grad.data_ptr(), boxes.data_ptr(), count, channels, height,
          width, int(pooled_height), int(pooled_width), float(spatial_scale), int(sampling_ratio),
          int(bool(aligned)), grad_input.data_ptr())
    return grad_input.permute(0, 3, 1, 2).contiguous().to(dtype)


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


_TORCHVISION_CPU: list = []  # the registration of the C kernels (kept: freed, it would unregister)


def cpu_roi_align() -> str:
    """Which kernels compute RoIAlign on a CPU in this process once :func:`install` ran: the harness's C
    kernels, or torchvision's own (no C compiler, a failed build or ``HARNESS_NATIVE=off``; the same values)."""
    from harness.detectors import native

    if _TORCHVISION_CPU:
        return "harness C kernels (harness/detectors/roi_align.c)"
    why = native.unavailable("roi_align")
    return f"torchvision's kernels ({why})" if why else "torchvision's kernels"


def install() -> None:
    """Route the functions of :data:`ROUTED` through torchvision in their mmcv modules, and make
    :func:`roi_align_forward_cpu` / :func:`roi_align_backward_cpu` torchvision's CPU RoIAlign kernels when
    the C library builds (idempotent)."""
    if not _TORCHVISION_CPU and _roi_align_library() is not None:
        import torch
        import torchvision.ops  # noqa: F401  (defines torchvision's ops)

        library = torch.library.Library("torchvision", "IMPL")
        library.impl("roi_align", roi_align_forward_cpu, "CPU")
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
