"""Helpers for tests: a worker for torch.multiprocessing.spawn that runs `run_training` under a local gloo
process group (127.0.0.1) and saves this rank's parameters."""
from __future__ import annotations

import os


def ddp_worker(rank: int, world_size: int, port: int, cfg_kwargs: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    import torch
    import torch.distributed as dist

    from .trainer import TrainConfig, run_training
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = run_training(TrainConfig(**cfg_kwargs), echo=lambda *a, **k: None)
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
