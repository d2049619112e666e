#!/usr/bin/env bash
# The core benchmark, in one run on this machine (figures are only
# comparable within a run, so each is printed next to nginx's):
#   1. nginx answering a fixed JSON `return 200`: the HTTP ceiling here;
#   2. datasphere serve on the chosen store: GET /v1/jobs/{id}, its 304
#      revalidation, POST /v1/jobs, jobs/s end to end for 0-step sleep jobs;
#   3. long-poll wake-up latency p50/p99, same process and across processes;
#   4. resident memory with 10,000 idle SSE clients on one instance;
#   redis only: redis-benchmark GET/SET on the same server, and Redis memory
#   per finished job (INFO memory around 100,000 jobs).
# Usage: bench/run.sh [sqlite|redis] [seconds per wrk run, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench
make -s build/datasphere
STORE_KIND=${1:-sqlite}
DUR=${2:-5}
BIN=$PWD/build/datasphere
WORK=$(mktemp -d /tmp/ds-bench-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" # 10,000 SSE clients need as many descriptors

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
rps() { awk '/Requests\/sec/ {printf "%.0f", $2}'; }
wrk_run() { wrk -t2 -c64 -d"${DUR}s" --latency "$@" 2>&1; }

start_ds() { # name port store workers; sets DS_LAST to its pid
    "$BIN" serve --name "$1" --listen "127.0.0.1:$2" --store "$3" --workers "$4" \
        --http-threads 2 >"$WORK/$1.log" 2>&1 &
    DS_LAST=$!
    PIDS+=("$DS_LAST") # not in a subshell: cleanup() must see it
    for _ in $(seq 100); do grep -q listening "$WORK/$1.log" && break; sleep 0.05; done
}

# --- 1. nginx ---
NGX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGX
worker_processes 2;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / { default_type application/json; return 200 '{"status":"ok"}'; }
  }
}
NGX
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
sleep 0.5
NGINX=$(wrk_run "http://127.0.0.1:$NGX_PORT/" | rps)

# --- 2. datasphere on the store ---
case "$STORE_KIND" in
sqlite)
    WORKERS=2 # SQLite has one writer at a time: more threads only queue for it
    STORE="sqlite:$WORK/jobs.db"
    POST_STORE="sqlite:$WORK/post.db"
    ;;
redis)
    # 0-step jobs finish at once, and the more workers finish together, the
    # more jobs share a round trip to Redis (see docs/ARCHITECTURE.md).
    WORKERS=32
    RPORT=$(free_port)
    redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly yes \
        --appendfsync everysec --loglevel warning >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    RB=$(redis-benchmark -p "$RPORT" -t get,set -c 64 -n 300000 -P 1 --csv 2>/dev/null)
    RB_SET=$(echo "$RB" | awk -F'","' '/"SET"/ {printf "%.0f", $2}')
    RB_GET=$(echo "$RB" | awk -F'","' '/"GET"/ {printf "%.0f", $2}')
    redis-cli -p "$RPORT" flushall >/dev/null
    STORE="redis://127.0.0.1:$RPORT"
    POST_STORE="redis://127.0.0.1:$RPORT/1"
    ;;
*)
    echo "usage: bench/run.sh [sqlite|redis] [seconds]" >&2
    exit 2
    ;;
esac
PORT=$(free_port)
start_ds bench "$PORT" "$STORE" "$WORKERS"
DS_PID=$DS_LAST
URL=http://127.0.0.1:$PORT
ID=$(curl -s -XPOST "$URL/v1/jobs" -H 'Content-Type: application/json' \
    -d '{"type":"sleep","input":{"steps":0,"step_ms":0}}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
sleep 0.5
VERSION=$(curl -s "$URL/v1/jobs/$ID" | sed 's/.*"version":\([0-9]*\).*/\1/')
GET=$(wrk_run "$URL/v1/jobs/$ID" | rps)
REVAL=$(wrk_run -H "If-None-Match: \"v$VERSION\"" "$URL/v1/jobs/$ID" | rps)

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"sleep","input":{"steps":0,"step_ms":0}}'
wrk.headers["Content-Type"] = "application/json"
LUA
# POST alone: an API-only instance, so the figure is the request path.
PORT2=$(free_port)
start_ds post "$PORT2" "$POST_STORE" 0
POST=$(wrk_run -s "$WORK/post.lua" "http://127.0.0.1:$PORT2/v1/jobs" | rps)

# End to end: POSTs while the workers run them, until the queue is empty.
T0=$(date +%s.%N)
wrk_run -s "$WORK/post.lua" "$URL/v1/jobs" >/dev/null
until curl -s "$URL/metrics" | grep -qE '^datasphere_jobs\{status="(queued|running)"\} 0$' &&
    [ "$(curl -s "$URL/metrics" | grep -cE '^datasphere_jobs\{status="(queued|running)"\} 0$')" = 2 ]; do
    sleep 0.05
done
T1=$(date +%s.%N)
DONE=$(curl -s "$URL/metrics" | awk -F' ' '/^datasphere_jobs\{status="succeeded"\}/ {print $2}')
E2E=$(echo "$DONE $T0 $T1" | awk '{printf "%.0f", ($1 - 1) / ($3 - $2)}')

# --- 3 and 4: long-poll latency and idle SSE clients (node) ---
PORT3=$(free_port)
start_ds other "$PORT3" "$STORE" 0
node bench/clients.mjs "$URL" "http://127.0.0.1:$PORT3" "$DS_PID" >"$WORK/clients.json"

ratio() { awk -v a="$1" -v b="$NGINX" 'BEGIN {printf "%.2f", a / b}'; }
echo "datasphere core benchmark ($(nproc) cores, wrk -t2 -c64 -d${DUR}s, $STORE_KIND store)"
printf '  %-44s %10s req/s\n' "nginx fixed JSON (ceiling)" "$NGINX"
printf '  %-44s %10s req/s  %sx nginx\n' "GET /v1/jobs/{id}" "$GET" "$(ratio "$GET")"
printf '  %-44s %10s req/s  %sx nginx\n' "GET /v1/jobs/{id} If-None-Match -> 304" "$REVAL" "$(ratio "$REVAL")"
printf '  %-44s %10s req/s  %sx nginx\n' "POST /v1/jobs (API only)" "$POST" "$(ratio "$POST")"
printf '  %-44s %10s jobs/s (%s jobs)\n' "sleep 0-step jobs end to end, $WORKERS workers" "$E2E" "$((DONE - 1))"
node -e '
const r = require(process.argv[1]);
const f = (x) => x.toFixed(2);
console.log(`  long-poll wake, same process             p50 ${f(r.same.p50)} ms  p99 ${f(r.same.p99)} ms`);
console.log(`  long-poll wake, other process            p50 ${f(r.cross.p50)} ms  p99 ${f(r.cross.p99)} ms`);
console.log(`  ${r.sse.clients} idle SSE clients: resident ${r.sse.rss_mb.toFixed(1)} MB (${r.sse.base_mb.toFixed(1)} MB before)`);
' "$WORK/clients.json"

if [ "$STORE_KIND" = redis ]; then
    printf '  %-44s %10s req/s  %sx nginx\n' "redis-benchmark SET (-c64)" "$RB_SET" "$(ratio "$RB_SET")"
    printf '  %-44s %10s req/s  %sx nginx\n' "redis-benchmark GET (-c64)" "$RB_GET" "$(ratio "$RB_GET")"
    # Memory per finished job: an API-only instance, one worker instance,
    # 100,000 0-step jobs, INFO memory before and after.
    redis-cli -p "$RPORT" -n 2 flushdb >/dev/null
    MPORT=$(free_port)
    start_ds mem "$MPORT" "redis://127.0.0.1:$RPORT/2" 2
    node bench/memory.mjs "http://127.0.0.1:$MPORT" "$RPORT" 100000
fi
