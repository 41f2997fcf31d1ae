"""Batch-invariant dynamic int8: the activation scale of each window is its own.

PyTorch's dynamic int8 Linear (fbgemm, VNNI on x86) quantises its whole input tensor with one scale
taken from that tensor's min and max. In a batch of windows, one window's answer then depends on the
windows that share its forward pass, and a server that batches concurrent requests would not answer
as `distilqa predict` does (90.5 % of answers equal between passes of 1 and 32 windows: random
6 × 768 model, 200 dev questions, AVX-512 EPYC, 2026-11-25). `WindowwiseLinear` calls the same fbgemm kernel
once per window, so each window is quantised by its own range: int8 products accumulate exactly in
int32, and with windows of one length per pass (no padding rows, see `QAModel.logits`) a window's
logits are bit-identical whatever else is in the batch. The per-window calls cost nothing
measurable: fbgemm stays efficient at the 100–384 rows of one window (docs/serving.md).

bf16 needs the same per-window calls for another reason: oneDNN picks its bf16 GEMM kernel (AMX
tiles where the CPU has them) by the shape of the whole call, so a window's rows are rounded
differently with 1 or 32 windows in the pass (on an AMX Xeon 19 of 96 windows kept bit-identical
logits between passes of 1 and 8-32 windows of one length; with per-window calls, 96 of 96). Its
results also change with the number of threads a GEMM is split over, which is why `predict` and
`serve` share one thread layout (`distilqa.inference.share_cores`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


class WindowwiseLinear(torch.nn.Module):
    """A Linear (float or dynamically quantised) applied to each window (row of dim 0) of a 3-D input
    separately, so every call has the shape of one window whatever else shares the forward pass."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.inner
        if x.dim() != 3:
            return inner(x)
        if type(inner) is torch.nn.Linear and inner.bias is not None:
            # each window's GEMM (one window alone too) writes into its slice of one output: nothing to stack
            out = x.new_empty(x.shape[0], x.shape[1], inner.out_features)
            weight = inner.weight.t()
            for window, target in zip(x.unbind(0), out.unbind(0), strict=True):
                torch.addmm(inner.bias, window, weight, out=target)
            return out
        if x.shape[0] == 1:
            return inner(x)
        return torch.stack([inner(window) for window in x.unbind(0)])


def windowwise(model: Any, linear_type: type[torch.nn.Module] = torch.nn.Linear) -> Any:
    """Wrap every `linear_type` child of `model` in a `WindowwiseLinear` (in place)."""
    for parent in list(model.modules()):
        if isinstance(parent, WindowwiseLinear):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, linear_type):
                setattr(parent, name, WindowwiseLinear(child))
    return model


def quantize_windowwise(model: Any) -> Any:
    """int8 weights (per tensor, symmetric) for every Linear; activations quantised per window."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch points users at torchao; the eager API still works
        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return windowwise(model, DynamicLinear)
