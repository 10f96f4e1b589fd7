"""Service settings (``service.settings``): read from the environment, a token from a file,
and a bad value fails at startup naming its variable."""

import pytest
from pydantic import ValidationError

from service.settings import Settings
from service.workers.core_share import usable_cores


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    monkeypatch.setenv("ADMIN_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("MODEL_NAME", "a, b")
    monkeypatch.setenv("MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    settings = Settings()
    assert settings.admin_token.get_secret_value() == "from-a-file"
    assert settings.model_names == ["a", "b"] and settings.default_model == "a"
    assert settings.max_batch_size == 16
    assert settings.resolved_torch_threads == max(1, usable_cores() // 2)
    monkeypatch.setenv("ADMIN_TOKEN", "direct")
    assert Settings().admin_token.get_secret_value() == "direct"



@pytest.mark.parametrize(("name", "value"), [("MODEL_NAME", "../etc"), ("DEVICE", "tpu"),
                                             ("MAX_BATCH_SIZE", "0"), ("TOP_SECRET", None)])
def test_bad_settings_fail_at_startup_naming_the_variable(monkeypatch, name, value):
    if value is None:
        Settings()  # unknown variables are ignored: the environment is shared
        return
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()

