"""``service/gunicorn.conf.py`` on its own: what it tells the workers."""

import os
import runpy
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from support import REPO
from support.server import GUNICORN, free_port

CONF = REPO / "service" / "gunicorn.conf.py"


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


def test_the_master_survives_a_reload_that_replaces_many_workers_at_once(tmp_path):
    """HUP replaces every worker; the old ones exit together, and gunicorn runs ``child_exit``
    in its SIGCHLD handler, re-entered meanwhile. With its imports done there for the first
    time the master died of a half-imported module (4 runs of 4 with 8 workers)."""
    master = _start_master(tmp_path, workers=8,
                           PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
    try:
        first = _wait_children(master, 8)
        os.kill(master.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and master.poll() is None:
            children = _children(master.pid)
            if len(children) == 8 and not children & first:
                break
            time.sleep(0.2)
        time.sleep(1)  # the old workers' exits are handled by now
        assert master.poll() is None, master.stderr.read().decode()[-3000:]
        assert len(_children(master.pid)) == 8
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGTERM)
        master.wait(timeout=30)


def test_the_metrics_directory_it_made_is_removed_at_exit_even_after_a_reload(tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR the config makes a temporary directory and removes it at
    exit. A HUP reads the config again, which then finds the variable it exported itself."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMETHEUS_MULTIPROC_DIR", "IMGCLF_OWN_MULTIPROC_DIR")}
    master = _start_master(tmp_path, workers=2, base_env=env, TMPDIR=str(temp))
    try:
        first = _wait_children(master, 2)
        assert [p.name[:15] for p in temp.iterdir()] == ["imgclf-metrics-"]
        os.kill(master.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not (_children(master.pid) - first) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    finally:
        os.killpg(master.pid, signal.SIGTERM)
        master.wait(timeout=30)
    assert list(temp.iterdir()) == []


def _start_master(tmp_path: Path, *, workers: int, base_env: dict | None = None,
                  **env: str) -> subprocess.Popen:
    """gunicorn with service/gunicorn.conf.py, sync workers and a plain WSGI app."""
    (tmp_path / "plain.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'ok']\n")
    (tmp_path / "conf.py").write_text(
        "import runpy\n"
        f"globals().update({{k: v for k, v in runpy.run_path({str(CONF)!r}).items()"
        " if not k.startswith('__')})\n"
        "worker_class = 'sync'\n"
        f"workers = {workers}\n"
        f"bind = '127.0.0.1:{free_port()}'\n")
    env = {**(base_env if base_env is not None else os.environ),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)]), **env}
    return subprocess.Popen([str(GUNICORN), "-c", str(tmp_path / "conf.py"), "plain:app"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()} if path.exists() else set()


def _wait_children(master: subprocess.Popen, count: int) -> set[int]:
    pid = master.pid
    deadline = time.monotonic() + 30
    while len(children := _children(pid)) < count:
        assert time.monotonic() < deadline, f"{len(children)} of {count} workers started"
        assert master.poll() is None, master.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    return children
