"""Named recipes: ``--recipe standard|demo|long`` (``TRAIN_RECIPE`` for the retraining job).

A recipe is a set of option values laid over TrainConfig's defaults; options given explicitly
(on the command line, or as ``TRAIN_*`` variables) are laid over the recipe, so
``--recipe long --epochs 10`` is the long recipe cut to 10 epochs. ``standard`` is TrainConfig's
own defaults: the recipe a plain ``python -m training train`` runs. The measured accuracy and
time of each are in docs/training.md ("Recipes").

This module imports nothing heavy: the command line reads it before torch is imported.
"""

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "standard": {},
    # docker compose's first model: serving in a minute or two, at about 85%
    "demo": {"epochs": 1},
    # For when ~42 minutes of two CPU cores are worth the last point (94.32% measured): a wider
    # network, more epochs, flips and erasing to keep it from over-fitting them.
    "long": {
        "model": "wide_cnn",
        "epochs": 40,
        "model_kwargs": {"width": 64},
        "augment": "crop-flip",
        "random_erasing": 0.25,
        "ema": True,
        "tta": "hflip",
    },
}
RECIPE_NAMES = tuple(RECIPES)


def with_recipe(defaults: dict[str, Any], explicit: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig values: ``defaults`` (every field), the recipe that ``explicit`` names (or
    ``defaults`` names) over them, and ``explicit`` (the options the user gave) over both."""
    name = explicit.get("recipe", defaults.get("recipe", "standard"))
    if name not in RECIPES:
        raise ValueError(f"Invalid recipe {name!r}. Valid choices: {', '.join(RECIPE_NAMES)}.")
    recipe = dict(RECIPES[name])
    if explicit.get("model", recipe.get("model")) != recipe.get("model", defaults.get("model")):
        recipe.pop("model_kwargs", None)  # arguments of the recipe's own architecture, not another's
    return {**defaults, **recipe, **explicit, "recipe": name}
