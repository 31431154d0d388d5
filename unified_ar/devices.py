"""Where inference runs: the ``--device`` option of the sampling, evaluation and pre-tokenising
commands (``auto``: the GPU when there is one, else the CPU)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from unified_ar.config import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "where the model runs: auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a device this machine has (else a ConfigError naming it).
    ``cuda`` without an index is ``cuda:LOCAL_RANK`` (0 without a launcher)."""
    import torch  # lazy: the commands' --help and score-only modes stay fast

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: only cpu and cuda are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device here (torch.cuda.is_available() is False)")
        if device.index is None:  # under torchrun each rank takes its own GPU
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: cuda:{device.index} asked for (LOCAL_RANK under a launcher), "
                              f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
