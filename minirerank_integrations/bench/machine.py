"""Where a benchmark ran: platform, Python, torch, CPU (and its load at the end), GPU."""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["machine"]


def machine(device: str | None = None) -> dict:
    """Where a run ran; ``cuda`` names ``device`` when it is a CUDA device (else the first one, if any)."""
    cuda = torch.device(device) if device is not None and device.startswith("cuda") else None
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(cuda or 0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
        load = os.getloadavg()
        info["load_average_at_end"] = [round(x, 2) for x in load]
    except OSError:
        pass
    return info
