"""Linear layers at inference through oneDNN instead of torch's default BLAS, on x86 CPUs.

torch's float32 CPU matmul goes to MKL, and MKL takes its AVX2 path on AMD processors even where they have
AVX-512; oneDNN, which ships inside torch, picks its kernels by the instruction set. On this project's 2-core
AMD EPYC (AVX-512) the base decoder, (1,024 x 768) @ (768 x 250,002) + bias, took 1.35-1.42 s through oneDNN
and 2.98 s through MKL (2 threads), and oneDNN was ahead at every row count down to one
(``benchmarks/bench_linear.py``; figures in docs/benchmarks.md). At a 250k vocabulary that decoder is most of
a masked-LM forward, identical in transformers; the backbone's projections, FFN and adapters gain as much
(1.97-2.19x at base shapes). The backbone's, adapters' and LM head's linear layers call :func:`linear`.

The op (``mkldnn::_linear_pointwise``, what Inductor compiles CPU linears to) has no autograd formula, so it
runs only where nothing records a graph, and only where calling it is what ``module(x)`` would do: a plain
``nn.Linear`` (not a subclass, a quantized or LoRA-wrapped layer), no hooks, plain float32 CPU tensors, no
autocast, no torch function or dispatch mode (a FLOP counter must see the matmul), not while compiling.
Results differ from MKL's only in the last bits (summation order). ``torch.backends.mkldnn.enabled = False``
(or ``with torch.backends.mkldnn.flags(enabled=False):``) turns it off.
"""

from __future__ import annotations

import platform

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.utils import _python_dispatch

# What tells whether calling the op is what module(x) would do; all private to torch, so a torch without one
# of them turns the op off rather than guessing.
_GLOBAL_HOOKS = tuple(getattr(_module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks"))
_FUNCTION_MODES = getattr(torch._C, "_len_torch_function_stack", None)
_DISPATCH_MODE = getattr(_python_dispatch, "_get_current_dispatch_mode", None)


def _find_op():
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None  # elsewhere (ARM's oneDNN, other BLAS) this choice is unmeasured
    if None in _GLOBAL_HOOKS or _FUNCTION_MODES is None or _DISPATCH_MODE is None:
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # a torch without it: the module's own path
        return None


_OP = _find_op()
_PLAIN = (torch.Tensor, nn.Parameter)


def plain_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` itself (not a subclass), plain tensors, no hooks: a product of its weight and bias is
    what calling it does."""
    if type(module) is not nn.Linear or None in _GLOBAL_HOOKS:
        return False
    if module._forward_hooks or module._forward_pre_hooks or any(_GLOBAL_HOOKS):
        return False
    return type(module.weight) in _PLAIN and (module.bias is None or type(module.bias) in _PLAIN)


def onednn_applies(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`linear` runs ``module`` on ``x`` through oneDNN."""
    if _OP is None or torch.compiler.is_compiling():  # first: nothing below is traced
        return False
    if not plain_linear(module) or not torch.backends.mkldnn.enabled:
        return False
    weight, bias = module.weight, module.bias
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False  # training leaves here, before the per-tensor checks
    if any(type(t) not in _PLAIN or t.device.type != "cpu" or t.dtype != torch.float32 or t.layout != torch.strided
           for t in tensors):  # fmt: skip
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return _FUNCTION_MODES() == 0 and _DISPATCH_MODE() is None


def linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; for a plain float32 ``nn.Linear`` on a CPU with no graph recorded, through oneDNN."""
    if not onednn_applies(module, x):
        return module(x)
    return _OP(x, module.weight, module.bias, "none", [], "")  # (..., out_features)
