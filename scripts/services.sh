#!/usr/bin/env bash
# Finds or starts the local services that Substate's tests use, and stops only what it started.
#
#   scripts/services.sh start [--owner PID] [--only redis,postgres,pubsub]
#   scripts/services.sh stop  [--owner PID] [--only redis,postgres,pubsub] [--force]
#   scripts/services.sh status
#   scripts/services.sh env          # prints `export REDIS_URL=...` lines for eval
#
# Services (loopback only):
#   redis     127.0.0.1:6379   redis-server, nothing kept on disk
#   postgres  127.0.0.1:5432   the machine's cluster (pg_ctlcluster), trust auth, database `test`
#   pubsub    127.0.0.1:8085   Google Pub/Sub emulator (gcloud beta emulators pubsub start)
# Ports can be moved with SUBSTATE_REDIS_PORT, SUBSTATE_POSTGRES_PORT, SUBSTATE_PUBSUB_PORT.
#
# `start` probes each service, starts the ones not answering and records what it started in a
# state directory shared by every caller on this machine (SUBSTATE_SERVICES_DIR, default
# ${TMPDIR:-/tmp}/substate-services). `start` also takes a lease on each service it was asked
# for: `--owner PID` ties the lease to a process (vitest's global setup, .ci/run), otherwise it is
# the "manual" lease. `stop` drops the caller's leases and stops a service the script started only
# once no live lease on it remains, so one test run never pulls the emulator from under another
# one running beside it (`--force` ignores leases). A service that was already running when the
# script first looked is never stopped.
#
# Exit status: 0 when every requested service answers, 1 when one could not be brought up,
# 2 on a usage error.
set -euo pipefail

readonly HOST=127.0.0.1
readonly REDIS_PORT=${SUBSTATE_REDIS_PORT:-6379}
readonly POSTGRES_PORT=${SUBSTATE_POSTGRES_PORT:-5432}
readonly PUBSUB_PORT=${SUBSTATE_PUBSUB_PORT:-8085}
readonly POSTGRES_USER=postgres
readonly POSTGRES_DB=test
readonly STATE_DIR=${SUBSTATE_SERVICES_DIR:-${TMPDIR:-/tmp}/substate-services}
# Seconds a started service may take to answer (the emulator needs about 3 s, a JVM on a busy
# machine more).
readonly START_TIMEOUT=${SUBSTATE_SERVICES_TIMEOUT:-90}
readonly ALL_SERVICES=(redis postgres pubsub)

say() { printf 'services: %s\n' "$*"; }
warn() { printf 'services: %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- probes: plain TCP through bash's /dev/tcp, a short timeout each, no client tools needed ---

probe_redis() {
  timeout 2 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "PING\r\n" >&3
    IFS= read -r -t 2 line <&3 && [[ $line == "+PONG"* ]]' "$HOST" "$REDIS_PORT" 2>/dev/null
}

port_open() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

probe_postgres_tcp() { port_open "$POSTGRES_PORT"; }

psql_q() {
  psql -X -q -A -t -w -h "$HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" "$@"
}

# Answers when the server accepts connections and database `test` can be reached.
probe_postgres() {
  probe_postgres_tcp || return 1
  command -v psql >/dev/null || return 0
  PGCONNECT_TIMEOUT=3 psql_q -d "$POSTGRES_DB" -c 'select 1' >/dev/null 2>&1
}

probe_pubsub() {
  timeout 2 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET / HTTP/1.0\r\nHost: %s:%s\r\n\r\n" "$0" "$1" >&3
    IFS= read -r -t 2 line <&3 && [[ $line == HTTP/1.?" 200"* ]]' "$HOST" "$PUBSUB_PORT" 2>/dev/null
}

probe() { "probe_$1"; }

address() {
  case $1 in
    redis) echo "$HOST:$REDIS_PORT" ;;
    postgres) echo "$HOST:$POSTGRES_PORT" ;;
    pubsub) echo "$HOST:$PUBSUB_PORT" ;;
  esac
}

# Runs a command that leaves a daemon behind with no descriptor of ours: not the lock (fd 9),
# not a pipe a caller reads until EOF (vitest's global setup). Its output is shown on failure.
quietly() {
  local out rc=0
  out=$(mktemp "${TMPDIR:-/tmp}/substate-services.XXXXXX")
  "$@" </dev/null >"$out" 2>&1 9>&- || rc=$?
  ((rc == 0)) || sed 's/^/  /' "$out" >&2
  rm -f "$out"
  return "$rc"
}

# A process that exists and is not a zombie (a child of ours that exited stays one until reaped).
alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [[ -n $state && $state != Z ]]
}

# Waits until `probe_$1` answers; fails early when process $2 (if given) has died or its log $3
# shows that its main thread did (the emulator's JVM stays up after a BindException).
wait_for() {
  local service=$1 pid=${2:-} log=${3:-} deadline=$((SECONDS + START_TIMEOUT))
  until probe "$service"; do
    if [[ -n $pid ]] && ! alive "$pid"; then return 1; fi
    if [[ -n $log ]] && grep -q 'Exception in thread "main"' "$log" 2>/dev/null; then return 1; fi
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- state: records of what this script started, and leases of who still needs each service ---

service_key() { echo "$1-$(address "$1" | cut -d: -f2)"; }
record_file() { echo "$STATE_DIR/started/$(service_key "$1")"; }
lease_dir() { echo "$STATE_DIR/leases/$(service_key "$1")"; }
owner_name() { if [[ -n $OWNER ]]; then echo "pid-$OWNER"; else echo manual; fi; }

# Start time of a process (field 22 of /proc/PID/stat), to tell a live owner from a reused pid.
proc_start() { awk '{ print $22 }' "/proc/$1/stat" 2>/dev/null || true; }

lease_alive() {
  local file=$1 name pid
  name=$(basename "$file")
  [[ $name == manual ]] && return 0
  pid=${name#pid-}
  [[ -e /proc/$pid ]] && [[ $(proc_start "$pid") == "$(cat "$file" 2>/dev/null)" ]]
}

take_lease() {
  local dir
  dir=$(lease_dir "$1")
  mkdir -p "$dir"
  if [[ -n $OWNER ]]; then proc_start "$OWNER" >"$dir/pid-$OWNER"; else : >"$dir/manual"; fi
}

# Drops the caller's lease on a service and the dead ones; prints the live leases left.
drop_lease() {
  local dir lease
  dir=$(lease_dir "$1")
  rm -f "$dir/$(owner_name)"
  for lease in "$dir"/*; do
    [[ -e $lease ]] || continue
    if lease_alive "$lease"; then basename "$lease"; else rm -f "$lease"; fi
  done
  rmdir "$dir" 2>/dev/null || true
}

lock_state() {
  mkdir -p "$STATE_DIR/started" "$STATE_DIR/leases"
  exec 9>"$STATE_DIR/lock"
  # Concurrent callers wait here while one of them starts a service (seconds for the emulator).
  flock -w $((START_TIMEOUT + 30)) 9 || { warn "timed out waiting for $STATE_DIR/lock"; exit 1; }
}

# --- starting ---

start_redis() {
  local dir=/var/lib/redis log=/var/log/redis/ci.log
  command -v redis-server >/dev/null || { warn "redis-server is not installed"; return 1; }
  if ! { [[ -d $dir && -w $dir ]] && touch "$log" 2>/dev/null; }; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/substate-redis.XXXXXX")
    log=$dir/redis.log
  fi
  say "redis     $(address redis)  not answering; starting redis-server (log: $log)"
  quietly redis-server --daemonize yes --bind "$HOST" -::1 --port "$REDIS_PORT" --save '' \
    --appendonly no --dir "$dir" --logfile "$log" || return 1
  wait_for redis || { tail -n 20 "$log" >&2 || true; return 1; }
  redis_pid >"$(record_file redis)"
}

redis_pid() {
  timeout 2 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "INFO server\r\n" >&3
    while IFS= read -r -t 2 line <&3; do
      [[ $line == process_id:* ]] && { echo "${line#process_id:}" | tr -d "\r"; exit 0; }
    done' "$HOST" "$REDIS_PORT" 2>/dev/null
}

postgres_cluster() {
  # "VERSION CLUSTER" of the cluster configured on our port, else the newest version's main.
  local line
  if command -v pg_lsclusters >/dev/null; then
    line=$(pg_lsclusters -h 2>/dev/null | awk -v p="$POSTGRES_PORT" '$3 == p { print $1, $2; exit }')
    [[ -n $line ]] && { echo "$line"; return; }
  fi
  if [[ $POSTGRES_PORT == 5432 && -d /etc/postgresql ]]; then
    line=$(ls /etc/postgresql | sort -V | tail -n 1)
    [[ -n $line ]] && echo "$line main"
  fi
}

start_postgres() {
  local cluster
  cluster=$(postgres_cluster)
  command -v pg_ctlcluster >/dev/null && [[ -n $cluster ]] || {
    warn "no PostgreSQL cluster found for port $POSTGRES_PORT (pg_lsclusters)"
    return 1
  }
  say "postgres  $(address postgres)  not answering; starting cluster $cluster (pg_ctlcluster)"
  # shellcheck disable=SC2086 # "VERSION CLUSTER" is two arguments
  quietly pg_ctlcluster --skip-systemctl-redirect $cluster start || return 1
  local deadline=$((SECONDS + START_TIMEOUT))
  until probe_postgres_tcp && PGCONNECT_TIMEOUT=3 psql_q -d postgres -c 'select 1' >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  # The server's start time tells `stop` whether it is still the one started here.
  printf '%s\n%s\n' "$cluster" "$(postgres_started_at)" >"$(record_file postgres)"
}

postgres_started_at() {
  PGCONNECT_TIMEOUT=3 psql_q -d postgres -c 'select pg_postmaster_start_time()' 2>/dev/null || true
}

# The server answers but database `test` is missing: create it (not recorded, never dropped).
ensure_postgres_db() {
  probe_postgres_tcp && command -v psql >/dev/null || return 0
  PGCONNECT_TIMEOUT=3 psql_q -d "$POSTGRES_DB" -c 'select 1' >/dev/null 2>&1 && return 0
  say "postgres  $(address postgres)  creating database $POSTGRES_DB"
  PGCONNECT_TIMEOUT=3 psql_q -d postgres -c "create database $POSTGRES_DB" >/dev/null
}

start_pubsub() {
  command -v gcloud >/dev/null || {
    warn "gcloud is not installed (the emulator comes with google-cloud-cli-pubsub-emulator)"
    return 1
  }
  command -v java >/dev/null || { warn "java is not installed (the emulator needs Java 11+)"; return 1; }
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/substate-pubsub.XXXXXX")
  mkdir -p "$dir/data"
  say "pubsub    $(address pubsub)  not answering; starting the emulator (log: $dir/emulator.log)"
  # setsid: its own session and process group, so `stop` can end gcloud and its JVM together and
  # the caller's exit (or Ctrl-C) does not. Every descriptor is redirected or closed: the lock
  # (fd 9) must not stay held, and a caller reading our output must not wait for the JVM.
  CLOUDSDK_CORE_DISABLE_PROMPTS=1 \
    CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true \
    CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true \
    setsid gcloud beta emulators pubsub start --host-port="$HOST:$PUBSUB_PORT" \
    --data-dir="$dir/data" </dev/null >"$dir/emulator.log" 2>&1 9>&- &
  local pid=$!
  if ! wait_for pubsub "$pid" "$dir/emulator.log"; then
    grep -v '^\[pubsub\][[:space:]]*at ' "$dir/emulator.log" | tail -n 15 >&2 || true
    kill -TERM -- "-$pid" 2>/dev/null || true
    rm -rf "$dir"
    return 1
  fi
  printf '%s %s\n' "$pid" "$dir" >"$(record_file pubsub)"
}

cmd_start() {
  lock_state
  [[ -z $OWNER || -e /proc/$OWNER ]] || { warn "--owner $OWNER: no such process"; exit 2; }
  local service name t0 failed=()
  for service in "${SERVICES[@]}"; do
    take_lease "$service"
    name=$(printf '%-9s' "$service")
    if probe "$service"; then
      say "$name $(address "$service")  found running"
      continue
    fi
    # PostgreSQL answers but database `test` is missing: create it rather than start anything.
    if [[ $service == postgres ]] && probe_postgres_tcp && ensure_postgres_db && probe postgres; then
      say "$name $(address "$service")  found running"
      continue
    fi
    if [[ $service != postgres ]] && port_open "$(address "$service" | cut -d: -f2)"; then
      warn "$name $(address "$service")  the port is taken by something that does not answer as $service"
      failed+=("$service")
      continue
    fi
    t0=$(now)
    if "start_$service" && { [[ $service != postgres ]] || ensure_postgres_db; } && probe "$service"; then
      say "$name $(address "$service")  started in $(elapsed "$t0") s"
    else
      warn "$name $(address "$service")  COULD NOT BE STARTED"
      failed+=("$service")
    fi
  done
  if ((${#failed[@]})); then
    warn "missing: ${failed[*]}"
    return 1
  fi
}

# --- stopping ---

stop_redis() {
  local want now
  want=$(cat "$(record_file redis)")
  now=$(redis_pid || true)
  if [[ -z $now ]]; then
    say "redis     $(address redis)  already stopped"
    return
  fi
  if [[ $now != "$want" ]]; then
    say "redis     $(address redis)  is no longer the server started here; left alone"
    return
  fi
  if command -v redis-cli >/dev/null; then
    redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  else
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "SHUTDOWN NOSAVE\r\n" >&3' \
      "$HOST" "$REDIS_PORT" 2>/dev/null || true
  fi
  say "redis     $(address redis)  stopped"
}

stop_postgres() {
  local cluster started_at
  { read -r cluster; read -r started_at; } <"$(record_file postgres)" || true
  if [[ $(postgres_started_at) != "$started_at" ]]; then
    say "postgres  $(address postgres)  is no longer the server started here; left alone"
    return
  fi
  # shellcheck disable=SC2086
  quietly pg_ctlcluster --skip-systemctl-redirect $cluster stop -m fast || true
  say "postgres  $(address postgres)  stopped (cluster $cluster)"
}

stop_pubsub() {
  local pid dir i
  read -r pid dir <"$(record_file pubsub)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  [[ -n $dir && $dir == */substate-pubsub.* ]] && rm -rf "$dir"
  say "pubsub    $(address pubsub)  stopped"
}

cmd_stop() {
  lock_state
  local service users
  for service in "${SERVICES[@]}"; do
    users=$(drop_lease "$service" | tr '\n' ' ')
    [[ -e $(record_file "$service") ]] || continue
    if [[ -n $users && $FORCE != 1 ]]; then
      say "$(printf '%-9s' "$service") $(address "$service")  still in use (${users% }); left running"
      continue
    fi
    "stop_$service"
    rm -f "$(record_file "$service")"
  done
}

cmd_status() {
  local service state lease users
  for service in "${ALL_SERVICES[@]}"; do
    if probe "$service"; then state=up; else state=DOWN; fi
    [[ -e $(record_file "$service") ]] && state="$state, started by this script"
    users=''
    for lease in "$(lease_dir "$service")"/*; do
      [[ -e $lease ]] || continue
      users+=" $(basename "$lease")$(lease_alive "$lease" || echo '(dead)')"
    done
    [[ -n $users ]] && state="$state, leases:$users"
    say "$(printf '%-9s' "$service") $(address "$service")  $state"
  done
  return 0
}

cmd_env() {
  echo "export REDIS_URL=\${REDIS_URL:-redis://$HOST:$REDIS_PORT}"
  echo "export DATABASE_URL=\${DATABASE_URL:-postgres://$POSTGRES_USER@$HOST:$POSTGRES_PORT/$POSTGRES_DB}"
  echo "export PUBSUB_EMULATOR_HOST=\${PUBSUB_EMULATOR_HOST:-$HOST:$PUBSUB_PORT}"
}

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

COMMAND=${1:-}
[[ -n $COMMAND ]] || usage
shift
OWNER=''
FORCE=0
SERVICES=("${ALL_SERVICES[@]}")
while (($#)); do
  case $1 in
    --owner) OWNER=${2:?--owner needs a pid}; shift 2 ;;
    --owner=*) OWNER=${1#*=}; shift ;;
    --only) IFS=, read -r -a SERVICES <<<"${2:?--only needs a list}"; shift 2 ;;
    --only=*) IFS=, read -r -a SERVICES <<<"${1#*=}"; shift ;;
    --force) FORCE=1; shift ;;
    *) usage ;;
  esac
done
for service in "${SERVICES[@]}"; do
  [[ " ${ALL_SERVICES[*]} " == *" $service "* ]] || { warn "unknown service: $service"; exit 2; }
done
[[ -z $OWNER || $OWNER =~ ^[0-9]+$ ]] || { warn "--owner takes a pid"; exit 2; }

case $COMMAND in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
