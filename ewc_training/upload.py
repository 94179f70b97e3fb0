"""Each vector step's host arrays (observations, rewards, episode ends) copied to the training device
without making the host wait for the GPU.

Why: a copy from ordinary (pageable) host memory to CUDA returns only once the GPU has finished
everything queued before it, so the loop's four copies per vector step each waited for the updates
just queued, and the GPU then idled while the host stored the step, chose actions and queued the next
updates. Copied from page-locked (pinned) memory with `non_blocking=True`, a copy is queued behind
those updates instead, and the loop's one wait per vector step is the actions the emulators need.

A pinned buffer is reused at every vector step; before it is written again the host waits for the
event recorded after its last copy (passed long since, in practice: the actions of the step between
were read back after it), so a copy never reads a buffer the next step is writing. On a CPU the
arrays are used in place: there is nothing to copy.
"""

from __future__ import annotations

import numpy as np
import torch


class Upload:
    """`upload(name, array)`: `array` on the device, through a pinned buffer kept for each name."""

    def __init__(self, device: torch.device):
        self.device = device
        self.staged: dict[str, tuple[torch.Tensor, torch.cuda.Event]] = {}

    def __call__(self, name: str, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return host.to(self.device)
        buffer = self._buffer(name, host)
        buffer.copy_(host)
        on_device = buffer.to(self.device, non_blocking=True)
        self.staged[name][1].record(torch.cuda.current_stream(self.device))  # the stream the copy was queued on
        return on_device

    def _buffer(self, name: str, host: torch.Tensor) -> torch.Tensor:
        """The pinned buffer for `name`, once its last copy to the device is done (a new one for a new shape)."""
        if name in self.staged:
            buffer, copied = self.staged[name]
            copied.synchronize()
            if buffer.shape == host.shape and buffer.dtype == host.dtype:
                return buffer
        buffer = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
        self.staged[name] = (buffer, torch.cuda.Event())
        return buffer
