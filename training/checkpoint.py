"""Resumable training state, exactly as docs/architecture.md fixes it (one file per save, atomic).

Everything stored is a tensor, number, string, list or dict, so the file loads with
``torch.load(weights_only=True)``: RNG states are converted from numpy/tuple form to that.
"""

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifacts.storage import CorruptFileError, atomic_torch_save, safe_torch_load

REQUIRED_KEYS = (
    "epoch", "global_step", "model_state_dict", "optimizer_state_dict", "rng_states",
    "best_metric", "history", "config",
)


def capture_rng_states() -> dict[str, Any]:
    version, mt_state, gauss = random.getstate()
    _, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {"key": torch.from_numpy(np_key.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = states["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically; the previous file survives any failure midway."""
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {', '.join(missing)}")
    atomic_torch_save(state, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and sanity-check a checkpoint; a truncated or foreign file raises CorruptFileError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise CorruptFileError(f"{path} is not a training checkpoint (top level is {type(state).__name__})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CorruptFileError(f"{path} is not a training checkpoint: it lacks {', '.join(missing)}")
    return state
