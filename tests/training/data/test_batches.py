"""Training batches (``training.data.batches``): every sample once per epoch, a shuffle that
repeats per epoch, sharded evaluation, and augmentation per image."""

import torch

from training.data.batches import BatchAugment, BatchLoader
from training.data.sources import ImageTensors


def _data(n: int = 50) -> ImageTensors:
    return ImageTensors(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8), torch.arange(n))


def test_training_batches_cover_every_sample_once_per_epoch():
    loader = BatchLoader(_data(), batch_size=16, shuffle=True, seed=1)
    loader.set_epoch(0)
    seen = torch.cat([labels for _, labels in loader])
    assert sorted(seen.tolist()) == list(range(50))
    assert len(loader) == 4


def test_shuffle_depends_on_epoch_and_repeats_exactly():
    loader = BatchLoader(_data(), batch_size=50, shuffle=True, seed=1)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(next(iter(loader))[1])
    assert not torch.equal(orders[0], orders[1])
    assert torch.equal(orders[0], orders[2])


def test_evaluation_shards_count_each_sample_exactly_once():
    shards = [BatchLoader(_data(51), batch_size=8, shuffle=False, rank=r, world_size=2) for r in range(2)]
    labels = torch.cat([lab for shard in shards for _, lab in shard])
    assert sorted(labels.tolist()) == list(range(51))


def test_augment_shifts_each_image_independently():
    batch = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    batch[:, :, 4, 4] = 255  # one bright pixel per image
    out = BatchAugment(padding=2, flip=False)(batch, torch.Generator().manual_seed(0))
    positions = {tuple((img[0] == 255).nonzero()[0].tolist()) for img in out if img.max() == 255}
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert len(positions) > 5  # a per-batch shift would give exactly one position


def test_flip_mirrors_about_half_the_batch():
    batch = torch.zeros(200, 1, 4, 4, dtype=torch.uint8)
    batch[..., 0] = 255  # left column bright
    out = BatchAugment(padding=0, flip=True)(batch, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 3] == 255).sum().item()
    assert 60 < flipped < 140
