#!/usr/bin/env bash
# Several api replicas on one registry behind nginx (the compose profile `scale`), against a real
# Docker engine (not part of CI: it builds multi-GB images and trains for real).
#
#   build -> `docker compose --profile scale up -d --wait --scale api=N` (trainer's first
#   promotion, N api replicas, nginx) -> requests through nginx, from start to end, none may fail
#   -> a forced retrain in the trainer promotes a new version: every worker of every replica
#   serves it within RELOAD_INTERVAL_S (+ the model load) -> an admin promote sent through nginx
#   (one replica rewrites the pointer): every replica follows -> an admin rollback through nginx:
#   every replica follows -> every replica answered some of the requests -> `down -v`
#
# Each replica is watched directly, on its own host port (API_PORT= gives each a free one),
# through its /metrics: imgclf_model_version has one value per gunicorn worker.
#
# Usage: bash tests/docker/scale.sh
# Env:   REPLICAS (3), RELOAD_INTERVAL_S (2), LB_PORT (18080), LOAD_MARGIN_S (5: the model load
#        and the watcher's own delay, allowed on top of RELOAD_INTERVAL_S), TRAIN_MODEL (mlp: the
#        subject is the replicas, and a small model trains in seconds; wide_cnn, the default
#        recipe, took 18 min under load on a busy 2-core VM), TRAIN_EPOCHS (1), KEEP_UP=1 to
#        leave the stack running; TORCH_INDEX_URL as in tests/docker/e2e.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-imgclf-scale}
export COMPOSE_PROFILES=scale
export API_PORT=                 # a free host port for each replica: no clash under --scale
export API_REGISTRY_MODE=rw      # admin promote/rollback through nginx rewrite the pointer
export LB_PORT=${LB_PORT:-18080}
export ADMIN_TOKEN=${ADMIN_TOKEN:-scale-$RANDOM$RANDOM}
export RELOAD_INTERVAL_S=${RELOAD_INTERVAL_S:-2}
export TRAIN_EPOCHS=${TRAIN_EPOCHS:-1}
export TRAIN_MODEL=${TRAIN_MODEL:-mlp}
export MODEL_NAME=${MODEL_NAME:-fashion-mnist}
REPLICAS=${REPLICAS:-3}
LOAD_MARGIN_S=${LOAD_MARGIN_S:-5}
SLOW=()  # the changes some replica followed too slowly (reported at the end, with the figures)
LB="http://127.0.0.1:${LB_PORT}"
WORK=$(mktemp -d)
T0=$(date +%s)
LAST=$T0
MONITOR_PID=

step() {
  local now; now=$(date +%s)
  printf '\n[scale %s +%3ss total %4ss] %s\n' "$(date +%H:%M:%S)" "$((now - LAST))" "$((now - T0))" "$*"
  LAST=$now
}
fail() { echo "SCALE FAILED: $*" >&2; exit 1; }

cleanup() {
  local code=$?
  touch "$WORK/stop"
  [ -z "$MONITOR_PID" ] || wait "$MONITOR_PID" 2>/dev/null || true
  if [ "$code" != 0 ]; then
    echo "--- last logs (exit $code) ---"
    docker compose logs --no-color --tail=40 || true
  fi
  if [ "${KEEP_UP:-0}" != 1 ]; then
    step "docker compose down -v"
    docker compose down -v --remove-orphans --timeout 30 || true
  fi
  rm -rf "$WORK"
  step "done (exit $code)"
}
trap cleanup EXIT

production() { docker compose exec -T trainer cat "/registry/$MODEL_NAME/production" | tr -d '[:space:]'; }

# The watcher: load through nginx (2 threads, every answer recorded) and each replica's /metrics
# every 0.1 s; it keeps $WORK/state.json up to date: the version every worker of a replica
# serves, and when each replica got there.
cat > "$WORK/monitor.py" <<'PY'
import json, os, re, struct, sys, threading, time, urllib.error, urllib.request, zlib
lb, model, work, *replicas = sys.argv[1:]
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
rows = b"".join(b"\x00" + bytes((x * 9 + y * 5) % 256 for x in range(28)) for y in range(28))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
lock = threading.Lock()
load = {"sent": 0, "failed": 0, "failures": [], "versions": {}, "served_by": {}}
current = {r: None for r in replicas}
events = []  # {"t", "replica", "version"}: every worker of the replica serves version from t on
stop = lambda: os.path.exists(f"{work}/stop")

def hammer():
    while not stop():
        request = urllib.request.Request(f"{lb}/predict", data=png, method="POST",
                                         headers={"Content-Type": "image/png"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body, served = response.status, response.read(), response.headers["X-Served-By"]
        except urllib.error.HTTPError as exc:
            status, body, served = exc.code, exc.read(), exc.headers.get("X-Served-By")
        except OSError as exc:
            status, body, served = 0, str(exc).encode(), None
        with lock:
            load["sent"] += 1
            if status == 200:
                version = json.loads(body)["version"]
                load["versions"][version] = load["versions"].get(version, 0) + 1
                load["served_by"][served] = load["served_by"].get(served, 0) + 1
            else:
                load["failed"] += 1
                load["failures"].append(f"{status} {body[:200]!r}")
        time.sleep(0.05)

gauge = re.compile(r'^imgclf_model_version\{[^}]*model="%s"[^}]*\} (\S+)$' % re.escape(model), re.M)
threads = [threading.Thread(target=hammer) for _ in range(2)]
for thread in threads:
    thread.start()
while not stop():
    for replica in replicas:
        try:
            text = urllib.request.urlopen(f"{replica}/metrics", timeout=2).read().decode()
        except OSError:
            continue
        now = time.time()
        served = {str(int(float(v))) for v in gauge.findall(text)}
        if len(served) == 1 and served != {current[replica]}:
            current[replica] = served.pop()
            events.append({"t": now, "replica": replica, "version": current[replica]})
    with lock:
        state = {"current": current, "events": events, "load": load}
        with open(f"{work}/state.tmp", "w") as handle:
            json.dump(state, handle)
    os.replace(f"{work}/state.tmp", f"{work}/state.json")
    time.sleep(0.1)
for thread in threads:
    thread.join()
with open(f"{work}/state.json", "w") as handle:
    json.dump({"current": current, "events": events, "load": load}, handle)
PY

# follow VERSION SINCE WHAT: wait (60 s at most) until every replica serves VERSION, then print
# how long after SINCE (epoch seconds) each one got there; fail beyond RELOAD_INTERVAL_S + margin.
# SINCE 0: only wait.
follow() {
  python3 - "$WORK/state.json" "$1" "$2" "$3" "$RELOAD_INTERVAL_S" "$LOAD_MARGIN_S" <<'PY'
import json, sys, time
path, version, since, what, interval, margin = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
deadline = time.time() + 60
while True:
    state = json.load(open(path))
    if all(v == version for v in state["current"].values()):
        break
    if time.time() > deadline:
        print(f"not every replica serves v{version} after 60 s: {state['current']}", file=sys.stderr)
        sys.exit(2)
    time.sleep(0.2)
if since == 0:
    sys.exit(0)
lags = []
for replica in state["current"]:
    t = min(e["t"] for e in state["events"] if e["replica"] == replica and e["version"] == version and e["t"] >= since - 1)
    lags.append(t - since)
    print(f"  {what}: {replica} serves v{version} on every worker {t - since:5.2f} s after it")
print(f"  {what}: slowest replica {max(lags):.2f} s (RELOAD_INTERVAL_S={interval:g})")
if max(lags) > interval + margin:
    sys.exit(f"a replica took {max(lags):.2f} s > RELOAD_INTERVAL_S + {margin:g} s")
PY
}

# check VERSION SINCE WHAT: follow; too slow is recorded (the run goes on, to report every
# figure), not getting there at all fails at once.
check() {
  local rc=0
  follow "$@" || rc=$?
  [ "$rc" = 0 ] && return 0
  [ "$rc" = 1 ] || fail "$3: not every replica serves v$1"
  SLOW+=("$3")
}

step "static config check"
docker compose config -q
docker compose config --format json | python3 -c "
import json, sys
api = json.load(sys.stdin)['services']['api']
assert 'published' not in api['ports'][0], api['ports']
assert not [v for v in api['volumes'] if v['source'] == 'registry'][0].get('read_only'), 'rw for this test'
print('api: no fixed host port, registry read-write (API_REGISTRY_MODE=rw)')"

step "docker compose build (api, trainer, lb)"
docker compose build
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^imgclf-(api|trainer|lb):'

step "docker compose up -d --wait --scale api=$REPLICAS (first training run, the replicas, nginx)"
docker compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
docker compose up -d --wait --wait-timeout 1500 --scale "api=$REPLICAS"
docker compose ps
v1=$(production)
[ -n "$v1" ] || fail "no production version after up"
urls=()
for i in $(seq 1 "$REPLICAS"); do
  urls+=("http://$(docker compose port --index "$i" api 8000)")
done
echo "production v$v1; replicas: ${urls[*]}; nginx: $LB"
[ "$(docker compose ps -q api | wc -l)" = "$REPLICAS" ] || fail "expected $REPLICAS api containers"

step "each replica: non-root, read-only root filesystem, the registry writable (API_REGISTRY_MODE=rw)"
for i in $(seq 1 "$REPLICAS"); do
  [ "$(docker compose exec -T --index "$i" api id -u)" != 0 ] || fail "replica $i runs as root"
  if docker compose exec -T --index "$i" api sh -c 'touch /app/x' 2>/dev/null; then fail "replica $i: root fs writable"; fi
  docker compose exec -T --index "$i" api sh -c 'touch /tmp/x && test -w /registry' || fail "replica $i: /tmp or /registry"
done

step "load through nginx starts; every replica serves v$v1"
python3 "$WORK/monitor.py" "$LB" "$MODEL_NAME" "$WORK" "${urls[@]}" &
MONITOR_PID=$!
sleep 2
follow "$v1" 0 "start" || fail "replicas not all on v$v1"
python3 -c "import json; print(json.load(open('$WORK/state.json'))['current'])"

step "a promotion by the trainer (schedule --once, SCHEDULE_FORCE=true) while requests flow"
set +e
docker compose exec -T -e SCHEDULE_FORCE=true -e SCHEDULE_WARM_START=true -e SCHEDULE_PROMOTION_MARGIN=-0.02 \
  -e SCHEDULE_MAX_CLASS_DROP=0.1 trainer python -m training schedule --once 2>&1 | grep -E "retrain |ERROR|Error"
code=${PIPESTATUS[0]}
set -e
[ "$code" = 0 ] || fail "schedule --once exited $code"
v2=$(production)
[ "$v2" != "$v1" ] || fail "the forced run was not promoted"
promoted_at=$(docker compose exec -T trainer python -c \
  "import os; print(os.stat('/registry/$MODEL_NAME/production').st_mtime)" | tr -d '[:space:]')
check "$v2" "$promoted_at" "trainer promoted v$v2"

step "admin promote v$v1 sent through nginx"
sent_at=$(date +%s.%N)
curl -fsS -X POST "$LB/admin/promote" -H "Authorization: Bearer $ADMIN_TOKEN" -H "Content-Type: application/json" \
  -d "{\"version\": \"$v1\"}" -D "$WORK/promote.head" -o "$WORK/promote.json"
echo "  answered by $(grep -i '^x-served-by' "$WORK/promote.head" | tr -d '\r'): $(cat "$WORK/promote.json")"
[ "$(production)" = "$v1" ] || fail "admin promote did not move the pointer"
check "$v1" "$sent_at" "admin promote v$v1"

step "admin rollback sent through nginx"
sent_at=$(date +%s.%N)
curl -fsS -X POST "$LB/admin/rollback" -H "Authorization: Bearer $ADMIN_TOKEN" -D "$WORK/rollback.head" \
  -o "$WORK/rollback.json"
echo "  answered by $(grep -i '^x-served-by' "$WORK/rollback.head" | tr -d '\r'): $(cat "$WORK/rollback.json")"
[ "$(production)" = "$v2" ] || fail "admin rollback did not move the pointer back to v$v2"
check "$v2" "$sent_at" "admin rollback to v$v2"

step "requests through nginx during all of it"
sleep 1
touch "$WORK/stop"
wait "$MONITOR_PID"
MONITOR_PID=
python3 - "$WORK/state.json" "$REPLICAS" <<'PY'
import json, sys
load, replicas = json.load(open(sys.argv[1]))["load"], int(sys.argv[2])
print(f"  {load['sent']} requests, {load['failed']} failed; answers per version {load['versions']}")
print(f"  answers per replica (X-Served-By): {load['served_by']}")
assert load["failed"] == 0, load["failures"][:5]
assert len(load["served_by"]) == replicas, "nginx did not reach every replica"
PY
for id in $(docker compose ps -q api); do
  [ "$(docker inspect -f '{{.RestartCount}}' "$id")" = 0 ] || fail "replica $id restarted"
done
docker stats --no-stream --format '  {{.Name}}: {{.MemUsage}}' $(docker compose ps -q api)
[ ${#SLOW[@]} = 0 ] || fail "replicas followed too slowly: ${SLOW[*]}"
step "SCALE PASSED"
