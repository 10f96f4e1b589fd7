"""Pure ``nn.Module`` definitions and the name -> builder registry.

Both training and the service import this package; it imports neither of them, so a model can
be rebuilt from an artifact's ``metadata.json`` alone (architecture name + keyword arguments).
"""

from models.registry import (
    ARCHITECTURES,
    UnknownArchitectureError,
    available,
    build_model,
    get_architecture,
)
from models.tta import TEST_TIME_AUGMENTATIONS, with_test_time_augmentation

__all__ = ["ARCHITECTURES", "UnknownArchitectureError", "available", "build_model", "get_architecture",
           "TEST_TIME_AUGMENTATIONS", "with_test_time_augmentation"]
