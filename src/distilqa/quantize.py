"""Batch-invariant dynamic int8: the activation scale of each window is its own.

PyTorch's dynamic int8 Linear (fbgemm, VNNI on x86) quantises its whole input tensor with one scale
taken from that tensor's min and max. In a batch of windows, one window's answer then depends on the
windows that share its forward pass, and a server that batches concurrent requests would not answer
as `distilqa predict` does (90.5 % of answers equal between passes of 1 and 32 windows: random
6 × 768 model, 200 dev questions, session 7). `WindowwiseInt8Linear` calls the same fbgemm kernel
once per window, so each window is quantised by its own range: int8 products accumulate exactly in
int32, and with windows of one length per pass (no padding rows, see `QAModel.logits`) a window's
logits are bit-identical whatever else is in the batch. The per-window calls cost nothing
measurable: fbgemm stays efficient at the 100–384 rows of one window (docs/serving.md).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


class WindowwiseInt8Linear(torch.nn.Module):
    """A dynamically quantised Linear applied to each window (row of dim 0) of a 3-D input separately."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] == 1:
            return self.inner(x)
        return torch.stack([self.inner(window) for window in x.unbind(0)])


def quantize_windowwise(model: Any) -> Any:
    """int8 weights (per tensor, symmetric) for every Linear; activations quantised per window."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch points users at torchao; the eager API still works
        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DynamicLinear):
                setattr(parent, name, WindowwiseInt8Linear(child))
    return model
