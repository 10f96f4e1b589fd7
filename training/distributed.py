"""Single-process or torchrun training behind one call.

Under ``torchrun`` (which sets ``LOCAL_RANK``, ``RANK`` and ``WORLD_SIZE``) the process group
is initialised from that environment: ``nccl`` with one GPU per process (``LOCAL_RANK`` picks
it) on CUDA, ``gloo`` on CPU. The model is wrapped in ``DistributedDataParallel`` for the
training loop only, so the state_dict that is checkpointed and published has no ``module.``
prefix and the service loads it unchanged.

``--batch-size`` is per process: the global batch is ``batch_size * WORLD_SIZE``, and the
learning rate is used as given (scale it yourself, e.g. linearly with the global batch).
"""

import logging
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from artifacts.devices import resolve_device
from training.config import TrainConfig
from training.train import TrainResult, main

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def run_training(cfg: TrainConfig) -> TrainResult | None:
    """Train with ``cfg``; returns the result on rank 0 and None on the other ranks."""
    if not launched_by_torchrun():
        return main(cfg)
    device = resolve_device(cfg.device)  # cuda:LOCAL_RANK under torchrun
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)  # one rank tells the story
    log.info("distributed: %d processes, backend %s, global batch %d", world_size, backend,
             cfg.batch_size * world_size)
    try:
        device_ids = [device.index] if device.type == "cuda" else None
        result = main(cfg, rank=rank, world_size=world_size,
                      wrap=lambda model: DistributedDataParallel(model, device_ids=device_ids))
        return result if rank == 0 else None
    finally:
        dist.destroy_process_group()
