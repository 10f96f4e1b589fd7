"""Settings of the retraining job, read once from the environment (pydantic-settings).

Two groups of variables:

* ``SCHEDULE_*`` (plus ``MODEL_REGISTRY`` and ``MODEL_NAME``, shared with the service): when
  to run and how to decide (:class:`ScheduleSettings`).
* ``TRAIN_<FIELD>``: the training recipe, one variable per :class:`~training.config.TrainConfig`
  field (``TRAIN_EPOCHS=15``, ``TRAIN_MODEL=resnet18``, ``TRAIN_MODEL_KWARGS='{"width": 48}'``).
  The recipe is generated from ``TrainConfig`` itself, so every training option is available
  and validated exactly as ``python -m training train`` validates it. The fields the job owns
  (where to publish, run names, promotion) are not settable; setting one fails at once.
"""

import os
from dataclasses import MISSING, fields
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from pydantic import AliasChoices, Field, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.config import TrainConfig
from training.recipes import with_recipe

RECIPE_PREFIX = "TRAIN_"
# TrainConfig fields the job sets itself: settable through TRAIN_* they would break its contract.
JOB_OWNED_FIELDS = ("registry", "name", "runs_dir", "run_name", "resume", "promote", "publish")
# Options that do not change the model a run makes, or name where the data is (its content is
# compared by fingerprint): ignored when comparing recipes.
NOT_RECIPE_FIELDS = ("pretrained_weights", "progress", "wandb", "threads", "data_dir", "feedback_dir",
                     "download")
# Recipe defaults that differ from the command line's: no progress bars in container logs.
RECIPE_DEFAULTS = {"progress": False}
# cron's nicknames, which cronsim leaves to its caller.
CRON_NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                  "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                  "@hourly": "0 * * * *"}


def cron_ticks(expression: str, start: datetime) -> CronSim:
    """The fire times of a cron expression after ``start`` (an aware datetime, read in its time
    zone, daylight-saving changes included), as an iterator of aware datetimes.

    Standard five-field expressions and the ``@daily``-style nicknames only: cronsim would take a
    sixth field as seconds *first*, where other parsers put them last, so such an expression
    fails here rather than firing at other times than its author meant."""
    standard = CRON_NICKNAMES.get(expression.strip().lower(), expression)
    if len(standard.split()) != 5:
        raise CronSimError(f"{len(standard.split())} fields, not the five: minute hour day-of-month "
                           "month day-of-week")
    return CronSim(standard, start)


class ScheduleSettings(BaseSettings):
    """When the job runs, where it writes, and the promotion policy."""

    model_config = SettingsConfigDict(env_prefix="SCHEDULE_", extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    registry: Path = Field(
        Path("registry"),
        validation_alias=AliasChoices("MODEL_REGISTRY", "SCHEDULE_REGISTRY"),
        description="model registry directory (MODEL_REGISTRY, the service's variable)",
    )
    name: str | None = Field(
        None,
        validation_alias=AliasChoices("MODEL_NAME", "SCHEDULE_NAME"),
        description="model name in the registry (MODEL_NAME); default: the dataset name",
    )
    runs_dir: Path = Field(Path("runs"), description="where candidate run directories go")
    interval_seconds: float = Field(
        86400.0, gt=0, description="seconds between run starts when no cron expression is set"
    )
    cron: str | None = Field(
        None, description="cron expression; takes precedence over the interval"
    )
    timezone: str = Field("UTC", description="time zone the cron expression is read in")
    run_on_start: Literal["always", "if-no-production", "never"] = Field(
        "if-no-production", description="run at once when the loop starts, before the first tick"
    )
    warm_start: bool = Field(
        False, description="initialise candidates from the production weights (same architecture)"
    )
    promotion_margin: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="promote when candidate test accuracy >= production's + margin "
        "(negative: tolerate a small drop)",
    )
    min_accuracy: float = Field(
        0.0, ge=0.0, le=1.0, description="floor every promoted candidate must reach (first run too)"
    )
    reevaluate_production: bool = Field(
        True,
        description="score production on the candidate's own test split "
        "(else use its recorded metric)",
    )
    max_class_drop: float = Field(
        0.10, ge=0.0, le=1.0,
        description="refuse a candidate whose recall on any class falls more than this below "
                    "production's on the same split (docs/retraining.md: measured noise)",
    )
    force: bool = Field(
        False, description="train even when the data fingerprint and recipe equal production's"
    )
    keep_versions: int = Field(
        5, ge=0, description="published versions kept; production and previous always kept; 0 = all"
    )
    keep_runs: int = Field(
        5, ge=0, description="candidate run directories kept in runs_dir; 0 = all"
    )
    lock_file: Path | None = Field(None, description="default: <registry>/<name>/.schedule.lock")
    reports_dir: Path | None = Field(None, description="default: <registry>/<name>/reports")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        if value is not None:
            try:
                next(cron_ticks(value, datetime.now(timezone.utc)))
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {value!r}: {exc} "
                                 "(e.g. '0 3 * * *' = daily 03:00)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        zone_info(value)
        return value

    @property
    def tz(self) -> tzinfo:
        return zone_info(self.timezone)


def zone_info(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError for odd keys
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from exc


class _RecipeBase(BaseSettings):
    # env_ignore_empty: compose passes an unset `${TRAIN_DATA_DIR:-}` as "", meaning "default".
    model_config = SettingsConfigDict(env_prefix=RECIPE_PREFIX, extra="ignore", env_ignore_empty=True)


def recipe_settings_class() -> type[BaseSettings]:
    """A settings class with one ``TRAIN_<FIELD>`` variable per user-settable TrainConfig field.

    pydantic parses the environment strings by each field's type (JSON for dicts and lists,
    true/false/1/0 for booleans); TrainConfig's own checks then run in :func:`load_recipe`.
    """
    definitions: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.name in JOB_OWNED_FIELDS:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        default = RECIPE_DEFAULTS.get(f.name, default)
        definitions[f.name] = (f.type, Field(default, description=f.metadata.get("help")))
    return create_model("RecipeSettings", __base__=_RecipeBase, **definitions)


def _check_unknown_recipe_variables() -> None:
    valid = {f.name for f in fields(TrainConfig)} - set(JOB_OWNED_FIELDS)
    unknown, owned = [], []
    for key in os.environ:
        if not key.startswith(RECIPE_PREFIX):
            continue
        field_name = key[len(RECIPE_PREFIX):].lower()
        if field_name in JOB_OWNED_FIELDS:
            owned.append(key)
        elif field_name not in valid:
            unknown.append(key)
    if owned:
        raise ValueError(
            f"{', '.join(sorted(owned))}: set by the job itself (use MODEL_REGISTRY, MODEL_NAME "
            "and SCHEDULE_RUNS_DIR instead)"
        )
    if unknown:
        names = ", ".join(RECIPE_PREFIX + n.upper() for n in sorted(valid))
        raise ValueError(
            f"Unknown recipe variable(s) {', '.join(sorted(unknown))}. Valid: {names}."
        )


def recipe_fields() -> set[str]:
    """The TrainConfig fields that make two runs' recipes the same or different (the data
    aside): what the job does not own and what does change the model."""
    return {f.name for f in fields(TrainConfig)} - set(JOB_OWNED_FIELDS) - set(NOT_RECIPE_FIELDS)


def load_recipe() -> dict[str, Any]:
    """The training recipe from ``TRAIN_*`` variables, validated through TrainConfig now (an
    unknown model or optimizer fails at start-up, not at the first tick hours later)."""
    _check_unknown_recipe_variables()
    settings = recipe_settings_class()()
    values = settings.model_dump()
    # TRAIN_RECIPE's values lie under the TRAIN_* variables set, as --recipe's do under options
    recipe = with_recipe(values, {name: values[name] for name in settings.model_fields_set})
    TrainConfig(**recipe)
    return recipe
