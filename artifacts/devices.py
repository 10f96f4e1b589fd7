"""Where a model runs and in which precision: one answer for training and serving.

Both sides must agree on these choices, since a model is scored (training's evaluation, the
scheduled job's re-score of production) and served (the service) the way it was trained.
"""

import logging
import os

import torch
from torch import nn

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix units (AMX or AVX512-BF16), where autocast to bf16
    roughly doubles convolution throughput; elsewhere bf16 on CPU is emulated and slower."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def is_conv_net(model: nn.Module) -> bool:
    """Conv nets run channels_last and profit from bf16 on CPUs with native bf16 units."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def choose_device(name: str, *, gpus: int, local_rank: int | None, local_world_size: int) -> torch.device:
    """The device of this process, from ``auto|cpu|cuda``, the GPU count and torchrun's local rank.

    Under torchrun every local rank needs a GPU of its own (``cuda:LOCAL_RANK``): ``auto``
    with fewer GPUs than processes per node trains on the CPU (gloo) rather than crashing
    on a missing device ordinal, and ``cuda`` fails at once, saying how many GPUs there are.
    """
    if name == "cuda" and gpus == 0:
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device; use auto or cpu")
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
    """:func:`choose_device` for this process (``cuda:LOCAL_RANK`` under torchrun)."""
    local_rank = os.environ.get("LOCAL_RANK")
    return choose_device(
        name, gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        local_rank=None if local_rank is None else int(local_rank),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def serving_dtype(setting: str, device: torch.device, model: nn.Module) -> torch.dtype:
    """The dtype ``model`` serves in. ``auto``: bfloat16 on CUDA GPUs that support it, and on
    CPUs with native bf16 units (AMX, AVX512-BF16) for models with convolutions; float32
    otherwise (a small MLP is bound by overheads, not arithmetic). Training's
    ``--precision auto`` evaluates such models in bf16 autocast too. ``fp32`` reproduces fp32
    numbers exactly.
    """
    if setting != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if is_conv_net(model) and cpu_has_bf16() else torch.float32
