"""The training precision, chosen from the hardware by one pure rule.

`auto` means the fastest precision the device computes natively:
- GPU below compute capability 8.0 (V100 = 7.0, T4 = 7.5): fp16 with a GradScaler. These GPUs
  have no bf16 units; `torch.cuda.is_bf16_supported()` still says yes by default because it counts
  emulation, which is why the rule looks at the capability, not at that call.
- GPU from 8.0 (A100, L4, H100, H200): bf16 (no loss scaling needed).
- CPU with AMX or AVX-512 BF16: bf16 (several times the fp32 matmul rate).
- any other CPU: fp32 (bf16 is emulated there and runs far slower than fp32: 63.5 s/step against
  4.5-5 s/step for the cpu profile's teacher fine-tune on an AVX2-only EPYC).
The same flags decide `--precision auto` of predict and serve (`distilqa.inference`).
"""

from __future__ import annotations

from collections.abc import Iterable

NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_amp(
    requested: str, device_type: str, cuda_capability: tuple[int, int] | None = None, cpu_flags: Iterable[str] = ()
) -> str:
    """fp32, fp16 or bf16 for `requested` (auto or one of those) on the described device."""
    if requested != "auto":
        return requested
    if device_type == "cuda":
        if cuda_capability is None:
            raise ValueError("a CUDA device needs its compute capability")
        return "bf16" if cuda_capability >= (8, 0) else "fp16"
    return "bf16" if NATIVE_BF16_CPU_FLAGS & set(cpu_flags) else "fp32"


def resolve_amp_here(requested: str, device_type: str, device_index: int = 0) -> str:
    """`resolve_amp` for this machine's device."""
    if device_type == "cuda":
        import torch

        return resolve_amp(requested, "cuda", tuple(torch.cuda.get_device_capability(device_index)))  # type: ignore[arg-type]
    from distilqa.inference import cpu_flags

    return resolve_amp(requested, device_type, cpu_flags=cpu_flags())


def torch_dtype(precision: str):  # -> torch.dtype | None
    """The autocast dtype of a resolved precision (None: fp32, autocast off)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
