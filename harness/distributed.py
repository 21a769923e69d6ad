"""Sharding samples across ``torchrun`` ranks (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable


@dataclass
class World:
    rank: int = 0
    size: int = 1
    initialised: bool = False

    @classmethod
    def from_env(cls, device: str = "cpu") -> "World":
        """The ``torchrun`` world from its environment variables (a single process otherwise)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            if device.startswith("cuda"):  # NCCL: each rank on its own GPU before the group forms (barrier)
                import torch

                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), True)

    def device_for(self, device: str) -> str:
        """Under torchrun, a bare ``cuda`` means this rank's own GPU (``cuda:LOCAL_RANK``)."""
        if self.initialised and device == "cuda":
            return f"cuda:{os.environ.get('LOCAL_RANK', self.rank)}"
        return device

    def on_rank0(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on rank 0 only, then let every rank know how it went.

        A :class:`harness.errors.UsageError` raised there (a run folder made by another command, say)
        is re-raised on every rank with the same message, so no rank waits at a barrier for ever
        while rank 0 exits; on a single process this is just ``fn()``."""
        from harness.errors import UsageError

        error = None
        if self.rank == 0:
            try:
                fn()
            except UsageError as err:
                error = str(err)
        if self.initialised:
            import torch.distributed as dist

            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error is not None:
            raise UsageError(error)

    def barrier(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialised = False
