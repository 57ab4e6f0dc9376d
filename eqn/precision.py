"""precision=auto: bf16 only where the hardware computes it natively, else fp32 (decided once, said in the log).

bf16 on a CPU without native bf16 instructions is emulated: measured on an Intel Xeon without AVX512-BF16/AMX,
MiniLM training took 2.7x as long as fp32 and annotation ran at 0.27x; on an AMD EPYC with AVX512-BF16 bf16 was
1.4-2x faster. So `auto` chooses bf16 on CUDA GPUs that support it and on CPUs whose flags list avx512_bf16 or
amx_bf16 (aarch64: bf16), and fp32 everywhere else.
"""

from __future__ import annotations

import functools
import logging
import os
import platform

log = logging.getLogger(__name__)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo: x86 'flags', arm 'Features'); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: str = "cpu") -> tuple[bool, str]:
    """(whether `device` computes bf16 natively, why) — EQN_NATIVE_BF16=0/1 overrides the check."""
    forced = os.environ.get("EQN_NATIVE_BF16")
    if forced in ("0", "1"):
        return forced == "1", f"EQN_NATIVE_BF16={forced}"
    if str(device).startswith(("cuda", "gpu")):
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible"
        ok = torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name()} {'supports' if ok else 'lacks'} bf16"
    flags = cpu_flags()
    found = [f for f in CPU_BF16_FLAGS if f in flags] or (
        ["bf16"] if "bf16" in flags and platform.machine() in ("aarch64", "arm64") else []
    )
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, (
        "the CPU lacks AVX512-BF16/AMX (bf16 would be emulated, several times slower than fp32)"
        if flags
        else "the CPU's flags could not be read"
    )


def training_precision(precision, accelerator: str = "auto") -> tuple[str, str]:
    """trainer.precision=auto -> 'bf16-mixed' or '32-true' (and why); any other value is kept."""
    if str(precision) != "auto":
        return precision, "as configured"
    import torch

    gpu = str(accelerator) in ("gpu", "cuda") or (str(accelerator) == "auto" and torch.cuda.is_available())
    ok, why = native_bf16("cuda" if gpu else "cpu")
    return ("bf16-mixed" if ok else "32-true"), why


def annotation_precision(precision: str, device: str = "cpu") -> tuple[str, str]:
    """precision=auto -> 'bf16' or 'fp32' (and why); any other value is kept."""
    if precision != "auto":
        return precision, "as asked"
    ok, why = native_bf16(device)
    return ("bf16" if ok else "fp32"), why
