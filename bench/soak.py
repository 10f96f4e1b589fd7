"""Soak and overload: the real server (gunicorn, 2 uvicorn workers) on 127.0.0.1 under ``wrk``.

    .venv/bin/python bench/soak.py                 # 5 minutes at concurrency 64, then overload
    .venv/bin/python bench/soak.py --minutes 1     # a short check

Phase 1 (soak): one 28x28 PNG per request, concurrency 64, for ``--minutes`` minutes, one
``wrk`` run per minute. Per minute it reports requests/s, p50/p99, responses by status, 5xx
other than 503, dropped connections (wrk's connect/read/write/timeout errors) and the RSS of
each gunicorn worker (``/proc/<pid>/status``); at the end, RSS growth from minute 1 to the last
minute and whether any worker was replaced.

Phase 2 (over capacity): 256 connections each sending 32 images per request, far beyond what
two workers clear within ``MAX_QUEUE_WAIT_MS`` (or hold: ``MAX_QUEUE`` images each): the
service must shed the excess with
``503`` + ``Retry-After`` at once, not let latency pile up into timeouts. A probe client times
single requests meanwhile and reports how fast refusals come back.

The model is the seed MLP with random weights (throughput does not depend on the weights).
Exit status 1 when a goal is missed: a 5xx other than 503, a dropped connection, RSS growth of
10% or more, a replaced worker, or no 503 shedding under overload.
"""

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    LUA_BODIES,
    Server,
    load_images,
    multipart,
    png,
    publish,
    write_bodies,
)

from artifacts.preprocess import InputSpec  # noqa: E402

LUA = LUA_BODIES + r"""
local threads = {}
statuses, retry_after = {}, 0
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 503 and (headers["retry-after"] or headers["Retry-After"]) then retry_after = retry_after + 1 end
end
function done(summary, latency, _)
  local e, parts, retry = summary.errors, {}, 0
  local all = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do all[k] = (all[k] or 0) + v end
    retry = retry + t:get("retry_after")
  end
  for k, v in pairs(all) do parts[#parts + 1] = string.format('"%d": %d', k, v) end
  io.write(string.format(
    'SOAK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "retry_after": %d, '
    .. '"statuses": {%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, retry,
    table.concat(parts, ", ")))
end
"""


def worker_pids(master: int) -> list[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return sorted(int(pid) for pid in path.read_text().split())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_wrk(url: str, script: Path, bodies: Path, count: int, ctype: str, *, connections: int,
            seconds: int, timeout_s: int = 10) -> dict:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{timeout_s}s",
               "-s", str(script), url, "--", str(bodies), str(count), ctype]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    line = next(x for x in out.splitlines() if x.startswith("SOAK "))
    result = json.loads(line[len("SOAK "):])
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    result["dropped"] = sum(result[k] for k in ("connect", "read", "write", "timeout"))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["other_5xx"] = sum(v for k, v in result["statuses"].items() if k >= 500 and k != 503)
    return result


def probe_during(url: str, body: bytes, ctype: str, seconds: float) -> list[tuple[int, float, bool]]:
    """Single requests, one after another, while the overload runs: (status, s, Retry-After)."""
    results = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = client.post("/predict", content=body, headers={"Content-Type": ctype})
            except httpx.HTTPError:
                results.append((0, time.perf_counter() - started, False))
                continue
            results.append((response.status_code, time.perf_counter() - started,
                            "retry-after" in response.headers))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=5, help="soak length (default 5)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--overload-seconds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the `finally`: stop the server
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    reg = work / "registry"
    publish(reg, "mlp", "mlp", InputSpec(1, 28, 28, (0.2860,), (0.3530,)))
    images, source = load_images(256)
    singles = [png(Image.fromarray(a)) for a in images]
    write_bodies(work / "single", singles)
    boundary = uuid.uuid4().hex
    big = [multipart(singles[i:i + 32], boundary)[0] for i in range(0, 256, 32)]
    big_type = f"multipart/form-data; boundary={boundary}"
    write_bodies(work / "big", big)
    script = work / "soak.lua"
    script.write_text(LUA)

    print(f"images: {source}; server: gunicorn, 2 workers, 1 torch thread each; "
          f"soak {args.minutes} min at concurrency {args.connections}", flush=True)
    server = Server(reg, "mlp", work / "server.log")
    report: dict = {"minutes": [], "overload": None}
    failures: list[str] = []
    try:
        pids = worker_pids(server.process.pid)
        for minute in range(1, args.minutes + 1):
            result = run_wrk(server.url, script, work / "single", len(singles), "image/png",
                             connections=args.connections, seconds=60)
            now = worker_pids(server.process.pid)
            result["rss_mib"] = {pid: round(rss_mib(pid), 1) for pid in now}
            result["workers"] = now
            report["minutes"].append(result)
            print(f"minute {minute}: {result['rps']:.0f} req/s, p50 {result['p50_us'] / 1e3:.1f}"
                  f" ms, p99 {result['p99_us'] / 1e3:.1f} ms, max {result['max_us'] / 1e3:.0f} ms,"
                  f" statuses {result['statuses']}, 5xx (not 503) {result['other_5xx']}, dropped"
                  f" {result['dropped']}, worker RSS MiB {result['rss_mib']}", flush=True)
            if result["other_5xx"]:
                failures.append(f"minute {minute}: {result['other_5xx']} 5xx other than 503")
            if result["dropped"]:
                failures.append(f"minute {minute}: {result['dropped']} dropped connections")
            if now != pids:
                failures.append(f"minute {minute}: workers changed {pids} -> {now}")
        first, last = report["minutes"][0]["rss_mib"], report["minutes"][-1]["rss_mib"]
        growth = {pid: (last[pid] - first[pid]) / first[pid] for pid in first if pid in last}
        report["rss_growth"] = growth
        p99s = [m["p99_us"] / 1e3 for m in report["minutes"]]
        print(f"RSS growth minute 1 -> {args.minutes}: "
              + ", ".join(f"pid {pid} {first[pid]:.0f} -> {last[pid]:.0f} MiB ({g:+.1%})"
                          for pid, g in growth.items())
              + f"; p99 per minute (ms): {', '.join(f'{p:.1f}' for p in p99s)}", flush=True)
        if any(g >= 0.10 for g in growth.values()):
            failures.append("worker RSS grew by 10% or more")

        # ------------------------------------------------------------------ over capacity
        probe_body = singles[0]
        probe = subprocess.Popen(  # the overload runs in wrk; the probe here times refusals
            ["wrk", "-t2", "-c256", f"-d{args.overload_seconds}s", "--timeout", "10s", "-s",
             str(script), server.url, "--", str(work / "big"), str(len(big)), big_type],
            stdout=subprocess.PIPE, text=True)
        time.sleep(2)  # let the queues fill
        probes = probe_during(server.url, probe_body, "image/png", args.overload_seconds - 4)
        out, _ = probe.communicate(timeout=args.overload_seconds + 60)
        line = next(x for x in out.splitlines() if x.startswith("SOAK "))
        overload = json.loads(line[len("SOAK "):])
        overload["statuses"] = {int(k): v for k, v in overload["statuses"].items()}
        overload["dropped"] = sum(overload[k] for k in ("connect", "read", "write", "timeout"))
        refused = [seconds for status, seconds, _ in probes if status == 503]
        answered = [seconds for status, seconds, _ in probes if status == 200]
        overload["probe"] = {
            "requests": len(probes), "503": len(refused), "200": len(answered),
            "other": len(probes) - len(refused) - len(answered),
            "503_with_retry_after": sum(1 for s, _, r in probes if s == 503 and r),
            "503_median_ms": statistics.median(refused) * 1e3 if refused else None,
            "503_max_ms": max(refused) * 1e3 if refused else None,
            "200_median_ms": statistics.median(answered) * 1e3 if answered else None,
        }
        report["overload"] = overload
        shed = overload["statuses"].get(503, 0)
        total = sum(overload["statuses"].values())
        other_5xx = sum(v for k, v in overload["statuses"].items() if k >= 500 and k != 503)
        print(f"over capacity (256 connections x 32 images/request, {args.overload_seconds} s): "
              f"statuses {overload['statuses']}, 503 with Retry-After "
              f"{overload['retry_after']}/{shed}, dropped {overload['dropped']}, p99 "
              f"{overload['p99_us'] / 1e3:.0f} ms, max {overload['max_us'] / 1e3:.0f} ms; "
              f"probe: {overload['probe']}", flush=True)
        if not shed:
            failures.append("no 503 shedding beyond capacity")
        if shed and overload["retry_after"] != shed:
            failures.append("a 503 without Retry-After")
        if other_5xx or overload["dropped"]:
            failures.append(f"overload: {other_5xx} other 5xx, {overload['dropped']} dropped")
        if total and worker_pids(server.process.pid) != pids:
            failures.append("a worker was replaced during the overload")
    finally:
        server.stop()
    report["failures"] = failures
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print("PASS" if not failures else "FAIL: " + "; ".join(failures), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
