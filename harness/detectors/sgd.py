"""SGD's update on a CPU in one pass of C, torch's values bit for bit.

``torch.optim.SGD`` on CPU tensors runs ``torch.optim.sgd._single_tensor_sgd`` (torch's foreach and fused
forms are its defaults on GPUs only): three or four tensor operations per parameter tensor, each a pass over
it. At the tiny profile (about 95 parameter tensors, 0.8 to 0.9 million values) that is about 380 small
operations and 2.4 ms a step measured alone, 3.4 ms inside a run (ATSS), 4 to 7 % of a training step. The
harness's kernel (``sgd.c``, built by :mod:`harness.detectors.native`) does the same per value in one pass
over all tensors: 0.4 ms.

Per value it applies torch's operations in torch's order with torch's roundings::

    d = fma(p, weight_decay, g)     # grad.add(param, alpha=weight_decay), when weight_decay != 0
    b = b * momentum                # buf.mul_(momentum)
    b = b + d                       # buf.add_(d, alpha=1 - dampening), dampening 0
    p = fma(b, -lr, p)              # param.add_(buf, alpha=-lr)

where ``fma`` is a fused multiply-add: ATen computes ``a + alpha * b`` as one on CPUs with AVX2 (its
vectorised loop and, compiled with FMA, its scalar tail), so the kernel runs only where torch reports AVX2
or AVX-512 (:func:`harness.detectors.native.fused_multiply_add`). Hyper-parameters reach the
kernel as torch hands them to its kernels: rounded to the tensors' dtype. ``tests/test_sgd.py`` compares
parameters and momentum buffers with torch's own function by ``torch.equal``, float32 and float64, sizes
that exercise the vector loop and its tails, with and without weight decay, over several steps.

:func:`install` replaces ``torch.optim.sgd._single_tensor_sgd`` (looked up by ``torch.optim.sgd.sgd`` at
each step) with :func:`single_tensor_sgd`, which takes the kernel only for what the kernel computes exactly
as torch: CPU tensors of one dtype (float32 or float64), contiguous, each parameter's gradient and buffer of
its size; momentum with every buffer already made (torch makes them at the first step, which it keeps),
no dampening, Nesterov, maximising, sparse gradients, tensor learning rate or weight decay, gradient scaling
or autograd through the step. Anything else, and a machine without AVX2, a C compiler, or with
``HARNESS_NATIVE=off``, runs torch's own function. :func:`cpu_sgd` says which ran; every run records it in
its provenance. The harness's mmdet plug-in (:mod:`harness.detectors.plugin`) installs it, so every run's
process has it; a process that never imports the plug-in keeps torch's function.
"""

from __future__ import annotations

import ctypes
import numbers

_TORCH: list = []  # torch's own _single_tensor_sgd, once install() replaced it
_LIBRARY: list = []  # [the kernel's library, argument types set, or None], decided once per process
fast_updates = 0  # parameter groups updated by the kernel in this process (the tests read it)


def _library():
    """The kernel's library with its argument types, on a CPU where its fused multiply-adds are torch's;
    None otherwise (no AVX2, no compiler, ``HARNESS_NATIVE=off``: :func:`cpu_sgd` says why). Decided at the
    first call, as the steps call it."""
    if not _LIBRARY:
        _LIBRARY.append(_load())
    return _LIBRARY[0]


def _load():
    """:func:`_library`'s one decision: the built library with its argument types set, or None."""
    from harness.detectors import native

    if not native.fused_multiply_add():
        return None
    lib = native.load("sgd")
    if lib is None:
        return None
    pointers = ctypes.POINTER(ctypes.c_void_p)
    for name, scalar in (("sgd_update_f32", ctypes.c_float), ("sgd_update_f64", ctypes.c_double)):
        function = getattr(lib, name)
        function.argtypes = [ctypes.c_int64, pointers, pointers, pointers, ctypes.POINTER(ctypes.c_int64),
                             scalar, scalar, scalar]
        function.restype = None
    return lib


def _kernel_for(params, grads, buffers, weight_decay, momentum, lr, dampening, nesterov, maximize,
                has_sparse_grad, grad_scale, found_inf):
    """The kernel's function for this update, or None when torch's own function must run (module docstring)."""
    import torch

    if (grad_scale is not None or found_inf is not None or maximize or nesterov or has_sparse_grad
            or dampening != 0 or momentum == 0 or torch.is_grad_enabled() or not params):
        return None
    if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in (weight_decay, momentum, lr)):
        return None  # tensors (a differentiable or captured lr): torch's path
    dtype = params[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return None
    for p, g, b in zip(params, grads, buffers):
        if b is None or g is None:
            return None
        for t in (p, g, b):
            if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous() or t.layout != torch.strided:
                return None
        if g.numel() != p.numel() or b.numel() != p.numel():
            return None
    lib = _library()
    if lib is None:
        return None
    return lib.sgd_update_f32 if dtype == torch.float32 else lib.sgd_update_f64


def single_tensor_sgd(params, grads, momentum_buffer_list, grad_scale, found_inf, *, weight_decay, momentum,
                      lr, dampening, nesterov, maximize, has_sparse_grad):
    """``torch.optim.sgd._single_tensor_sgd``'s signature and results: through the C kernel when it
    computes this update exactly as torch (module docstring), else torch's own function."""
    global fast_updates
    function = _kernel_for(params, grads, momentum_buffer_list, weight_decay, momentum, lr, dampening,
                           nesterov, maximize, has_sparse_grad, grad_scale, found_inf)
    if function is None:
        return _TORCH[0](params, grads, momentum_buffer_list, grad_scale, found_inf, weight_decay=weight_decay,
                         momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov, maximize=maximize,
                         has_sparse_grad=has_sparse_grad)
    count = len(params)
    pointers = ctypes.c_void_p * count
    function(count, pointers(*[p.data_ptr() for p in params]), pointers(*[g.data_ptr() for g in grads]),
             pointers(*[b.data_ptr() for b in momentum_buffer_list]),
             (ctypes.c_int64 * count)(*[p.numel() for p in params]), weight_decay, momentum, -lr)
    fast_updates += 1
    return None


def install() -> None:
    """Make :func:`single_tensor_sgd` torch's CPU SGD update in this process (idempotent)."""
    import torch.optim.sgd as torch_sgd

    if not _TORCH:
        _TORCH.append(torch_sgd._single_tensor_sgd)
        torch_sgd._single_tensor_sgd = single_tensor_sgd


def uninstall() -> None:
    """Give torch its own function back (the tests compare the two)."""
    import torch.optim.sgd as torch_sgd

    if _TORCH:
        torch_sgd._single_tensor_sgd = _TORCH.pop()


def cpu_sgd() -> str:
    """What updates SGD's CPU parameters in this process: the harness's C kernel, or torch's own function
    (with the reason: not installed, no AVX2, no C compiler, ``HARNESS_NATIVE=off``; the same values)."""
    from harness.detectors import native

    if not _TORCH:
        return "torch's own update"
    if _library() is not None:
        return "harness C kernel (harness/detectors/sgd.c)"
    if not native.fused_multiply_add():
        return "torch's own update (this CPU has no AVX2: torch's own arithmetic differs there)"
    why = native.unavailable("sgd")
    return f"torch's own update ({why})" if why else "torch's own update"
