"""Loading a model to serve (``service.inference.loading``)."""

import torch

from service.inference.loading import warmup_sizes


def test_cuda_warms_every_batch_size_the_batcher_can_form():
    assert warmup_sizes(torch.device("cuda"), 4) == [1, 2, 3, 4]
    big = warmup_sizes(torch.device("cuda"), 1000)  # every size to 256, then powers of two
    assert big == [*range(1, 257), 512, 1000]
    assert warmup_sizes(torch.device("cpu"), 64) == [1, 64]
    assert warmup_sizes(torch.device("cpu"), 1) == [1]

