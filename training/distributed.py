"""Single-process or torchrun training behind one call.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialised
from torchrun's environment: ``nccl`` with one GPU per process on CUDA, ``gloo`` on CPU. The
model is wrapped in ``DistributedDataParallel`` for the training loop only, so the state_dict
that is checkpointed and published has no ``module.`` prefix.
"""

import logging
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from training.config import TrainConfig
from training.runtime import resolve_device
from training.train import TrainResult, main

log = logging.getLogger(__name__)


def run_training(cfg: TrainConfig) -> TrainResult | None:
    """Train with ``cfg``; returns the result on rank 0 and None on other ranks."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return main(cfg)
    device = resolve_device(cfg.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    try:
        device_ids = [device.index] if device.type == "cuda" else None

        def wrap(model):
            return DistributedDataParallel(model, device_ids=device_ids)

        log.info("distributed: rank %d of %d, backend %s", rank, world_size, backend)
        result = main(cfg, rank=rank, world_size=world_size, wrap=wrap)
        return result if rank == 0 else None
    finally:
        dist.destroy_process_group()
