"""Keep PyTorch from loading Triton into a process whose OpenGL driver already loaded LLVM.

Under Mesa's LLVM-based drivers (llvmpipe under Xvfb or in VMs, radeonsi) napari's canvas loads
``libLLVM``; loading Triton's own LLVM (``libtriton.so``) afterwards crashes the whole process
with a segmentation fault. PyTorch imports Triton on first use of ``torch._dynamo`` (torchvision,
hence segmentation-models-pytorch, triggers it) only to learn whether it is available. Inference
in this plugin never compiles kernels, so in exactly that situation we mark Triton as absent
(``sys.modules["triton"] = None`` makes ``import triton`` raise ImportError, which PyTorch handles).
"""

from __future__ import annotations

import sys
from pathlib import Path

_MAPS = Path("/proc/self/maps")


def llvm_driver_loaded() -> bool:
    """Whether a shared ``libLLVM`` (Mesa's) is mapped into this process (Linux; False elsewhere)."""
    try:
        return "libLLVM" in _MAPS.read_text(errors="replace")
    except OSError:
        return False


def guard_triton() -> bool:
    """Mark Triton as unavailable if it is not imported yet and an LLVM-based GL driver is loaded.

    Returns whether the guard was applied.
    """
    if "triton" in sys.modules or not llvm_driver_loaded():
        return False
    sys.modules["triton"] = None
    return True
