"""Validation of the job's settings and of the TRAIN_* recipe read from the environment."""

import re

import pytest
from pydantic import ValidationError

from training.retrain.loop import EXIT_CONFIG, run_schedule
from training.retrain.settings import ScheduleSettings, load_recipe


def test_invalid_settings_exit_2_naming_the_variable(job_env, caplog):
    job_env(SCHEDULE_CRON="every tuesday")
    assert run_schedule(once=True) == EXIT_CONFIG
    assert "invalid cron expression 'every tuesday'" in caplog.text


@pytest.mark.parametrize(("expression", "reason"), [
    ("61 3 * * *", "Bad minute"),
    ("0 3 31 2 *", "Bad day-of-month"),  # never fires
    ("0 0 3 * * *", "6 fields, not the five"),  # seconds first or last? refused, not guessed
])
def test_invalid_cron_expressions_fail_at_settings_load(job_env, expression, reason):
    job_env(SCHEDULE_CRON=expression)
    with pytest.raises(ValidationError, match=re.escape(f"invalid cron expression '{expression}': {reason}")):
        ScheduleSettings()


def test_cron_nicknames_and_an_empty_cron_are_accepted(job_env):
    job_env(SCHEDULE_CRON="@daily")
    assert ScheduleSettings().cron == "@daily"
    job_env(SCHEDULE_CRON="  ")
    assert ScheduleSettings().cron is None  # blank means unset: the interval decides


def test_unknown_recipe_variable_fails_listing_valid_ones(job_env):
    job_env(TRAIN_EPOCS="3")
    with pytest.raises(ValueError, match="TRAIN_EPOCS.*Valid: .*TRAIN_EPOCHS"):
        load_recipe()


def test_empty_optional_recipe_variables_mean_unset(job_env):
    job_env(TRAIN_DATA_DIR="", TRAIN_PATIENCE="", TRAIN_EPOCHS="7")
    recipe = load_recipe()
    assert recipe["data_dir"] is None and recipe["patience"] is None and recipe["epochs"] == 7


def test_job_owned_fields_cannot_be_set_through_the_recipe(job_env):
    job_env(TRAIN_REGISTRY="/elsewhere")
    with pytest.raises(ValueError, match="set by the job itself"):
        load_recipe()
