"""Device, precision and thread choices for a run, resolved once and logged."""

import logging
import os

import torch
from torch import nn

from training.engine import Runtime

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix units (AMX or AVX512-BF16), where autocast to bf16
    roughly doubles convolution throughput; elsewhere bf16 on CPU is emulated and slower."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def choose_device(name: str, *, gpus: int, local_rank: int | None, local_world_size: int) -> torch.device:
    """The device of this process, from ``--device``, the GPU count and torchrun's local rank.

    Under torchrun every local rank needs a GPU of its own (``cuda:LOCAL_RANK``): ``auto``
    with fewer GPUs than processes per node trains on the CPU (gloo) rather than crashing
    on a missing device ordinal, and ``cuda`` fails at once, saying how many GPUs there are.
    """
    if name == "cuda" and gpus == 0:
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    enough_gpus = gpus > 0 and (local_rank is None or local_world_size <= gpus)
    if name == "auto":
        if gpus and not enough_gpus:  # under torchrun, fewer GPUs than local ranks
            log.warning("torchrun started %d processes per node but torch sees %d GPU(s): training on "
                        "the CPU; use --nproc-per-node %d to train on the GPUs", local_world_size, gpus, gpus)
        name = "cuda" if enough_gpus else "cpu"
    if name == "cuda" and local_rank is not None:
        if not enough_gpus:
            raise RuntimeError(f"torchrun started {local_world_size} processes per node but torch sees "
                               f"{gpus} GPU(s); use --nproc-per-node {gpus} or --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def resolve_device(name: str) -> torch.device:
    local_rank = os.environ.get("LOCAL_RANK")
    return choose_device(
        name, gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        local_rank=None if local_rank is None else int(local_rank),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def is_conv_net(model: nn.Module) -> bool:
    """Conv nets run channels_last (faster convolutions); every model that is compared with
    another (the scheduled job's production re-score) must run the way it was trained."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def resolve_runtime(*, device: str, precision: str, channels_last: bool) -> Runtime:
    dev = resolve_device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is torch.float16 and dev.type != "cuda":
        raise ValueError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    runtime = Runtime(device=dev, autocast_dtype=dtype, channels_last=channels_last)
    log.info("runtime: device=%s precision=%s channels_last=%s threads=%d",
             dev, precision, channels_last, torch.get_num_threads())
    return runtime
