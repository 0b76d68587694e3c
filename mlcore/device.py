"""Where tensors run: CUDA when present, CPU otherwise.

``SKYLOOP_DEVICE`` (``"cpu"`` or ``"cuda"``, optionally ``"cuda:1"``) forces a choice;
asking for CUDA on a machine without it fails loudly rather than silently using the CPU.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "SKYLOOP_DEVICE"


def best_device() -> torch.device:
    """Return ``cuda`` if available (or forced by ``SKYLOOP_DEVICE``), else ``cpu``.

    Raises
    ------
    ValueError
        If ``SKYLOOP_DEVICE`` is set to something other than ``cpu``/``cuda[:N]``.
    RuntimeError
        If ``SKYLOOP_DEVICE`` asks for CUDA and none is available.
    """
    forced = os.environ.get(DEVICE_ENV, "").strip().lower()
    if not forced:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if forced == "cpu":
        return torch.device("cpu")
    if forced == "cuda" or forced.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"{DEVICE_ENV}={forced!r} but torch sees no CUDA device")
        return torch.device(forced)
    raise ValueError(f"{DEVICE_ENV} must be 'cpu' or 'cuda' (or 'cuda:N'), got {forced!r}")


def amp_enabled(device: torch.device) -> bool:
    """Mixed precision is used on CUDA only (CPU autocast is slower for these small models)."""
    return device.type == "cuda"
