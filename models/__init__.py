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

__all__ = ["ARCHITECTURES", "UnknownArchitectureError", "available", "build_model", "get_architecture"]
