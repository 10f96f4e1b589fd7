"""Device and precision choice (``artifacts.devices``): under torchrun every local rank needs a
GPU of its own; the service serves in bf16 only where it pays."""

import logging

import pytest
import torch

import models
from artifacts.devices import choose_device, cpu_has_bf16, serving_dtype


@pytest.mark.parametrize("name, gpus, expected", [
    ("auto", 0, "cpu"), ("auto", 1, "cuda"), ("cpu", 4, "cpu"), ("cuda", 1, "cuda"),
])
def test_single_process_takes_the_gpu_when_there_is_one(name, gpus, expected):
    assert choose_device(name, gpus=gpus, local_rank=None, local_world_size=1) == torch.device(expected)


def test_each_torchrun_rank_gets_its_own_gpu():
    for rank in range(4):
        assert choose_device("auto", gpus=4, local_rank=rank, local_world_size=4) == torch.device("cuda", rank)
        assert choose_device("cuda", gpus=8, local_rank=rank, local_world_size=4) == torch.device("cuda", rank)


def test_auto_with_fewer_gpus_than_ranks_trains_on_the_cpu_and_says_why(caplog):
    # Seen on a 1-GPU machine: `torchrun --nproc-per-node 2` crashed rank 1 on "invalid device ordinal".
    with caplog.at_level(logging.WARNING, logger="artifacts.devices"):
        assert choose_device("auto", gpus=1, local_rank=1, local_world_size=2) == torch.device("cpu")
    assert "--nproc-per-node 1" in caplog.text


def test_explicit_cuda_with_fewer_gpus_than_ranks_fails_naming_both_counts():
    with pytest.raises(RuntimeError, match=r"2 processes per node but torch sees 1 GPU\(s\)"):
        choose_device("cuda", gpus=1, local_rank=0, local_world_size=2)


def test_explicit_cuda_without_a_gpu_fails():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        choose_device("cuda", gpus=0, local_rank=None, local_world_size=1)


def test_auto_precision_is_bf16_only_for_convolutions_on_native_bf16_cpus():
    cpu = torch.device("cpu")
    mlp = models.build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28))
    cnn = models.build_model("cnn", num_classes=10, in_channels=1, image_size=(28, 28))
    assert serving_dtype("auto", cpu, mlp) == torch.float32
    assert serving_dtype("auto", cpu, cnn) == (
        torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert serving_dtype("fp32", cpu, cnn) == torch.float32
    assert serving_dtype("bf16", cpu, mlp) == torch.bfloat16
