"""Validation of the job's settings and of the TRAIN_* recipe read from the environment."""

import pytest

from training.retrain.loop import EXIT_CONFIG, run_schedule
from training.retrain.settings import load_recipe


def test_invalid_settings_exit_2_naming_the_variable(job_env, caplog):
    job_env(SCHEDULE_CRON="every tuesday")
    assert run_schedule(once=True) == EXIT_CONFIG
    assert "invalid cron expression" in caplog.text


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
