"""``service/gunicorn.conf.py`` on its own: what it tells the workers."""

import runpy
from pathlib import Path
from types import SimpleNamespace

CONF = Path(__file__).resolve().parents[2] / "service" / "gunicorn.conf.py"


def test_workers_learn_the_worker_count_given_on_the_command_line(monkeypatch, tmp_path):
    """``gunicorn -w 3`` overrides the file's ``workers`` after it is read; the workers size
    their torch threads (cores // WEB_CONCURRENCY) from the count that really runs."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    conf = runpy.run_path(str(CONF))
    assert conf["workers"] == 2
    conf["on_starting"](SimpleNamespace(cfg=SimpleNamespace(workers=3)))
    from service.settings import Settings

    assert Settings(model_registry=tmp_path).web_concurrency == 3
