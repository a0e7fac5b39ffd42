#!/usr/bin/env bash
# Local services for metricsctl's demo and integration tests, run natively (no Docker):
#   - Apache Kafka 3.9.2, one KRaft node (broker + controller) on 127.0.0.1:29092
#   - FerretDB v1.24.2 (MongoDB wire protocol, SQLite backend) on 127.0.0.1:27017
#
# Usage: scripts/services.sh up | down | status
#
# Everything the services need is fetched/built on first use and kept under the
# git-ignored .local/ folder (jars, binary, data, logs, pid files), so a fresh machine only
# needs java (11+), mvn, go and, for kcat, apt-get. `up` is idempotent: when both services
# already run it only checks that they answer. Data survives `down`; `rm -rf .local` resets all.
set -euo pipefail

# --- Locations and settings -----------------------------------------------------------------
# Resolve the repo root from this file, so the script works from any working directory.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
ENV_FILE="$LOCAL/services.env"

HOST=127.0.0.1
KAFKA_PORT=29092
KAFKA_CONTROLLER_PORT=29093
MONGO_PORT=27017
READY_TIMEOUT="${SERVICES_READY_TIMEOUT:-90}" # seconds each service gets to answer after start
STOP_TIMEOUT=15                               # seconds between SIGTERM and SIGKILL

KAFKA_VERSION=3.9.2
KAFKA_SRC="$ROOT/scripts/kafka"
KAFKA_HOME="$LOCAL/kafka"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_LIBS_MARKER="$KAFKA_LIBS/.complete"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_LOGS="$KAFKA_HOME/logs"
KAFKA_CONFIG="$KAFKA_HOME/server.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_HOME/cluster-id"
KAFKA_LOG="$KAFKA_LOGS/server.log"      # log4j output
KAFKA_CONSOLE="$KAFKA_LOGS/console.log" # JVM stdout/stderr (crashes before log4j is up)
KAFKA_PID="$LOCAL/run/kafka.pid"

FERRET_SRC="$ROOT/scripts/ferretdb"
FERRET_BIN="$LOCAL/bin/ferretdb-runner"
FERRET_DATA="$LOCAL/ferretdb/data"
FERRET_LOG="$LOCAL/ferretdb/ferretdb.log"
FERRET_PID="$LOCAL/run/ferretdb.pid"
MONGO_URI="mongodb://$HOST:$MONGO_PORT"

# --- Output helpers -------------------------------------------------------------------------
say() { echo "services: $*"; }
die() {
  echo "services: error: $*" >&2
  exit 1
}
rel() { echo "${1#"$ROOT"/}"; } # paths in messages, relative to the repo root

# Print the last lines of a log file under a header, for failed starts.
show_tail() {
  local file="$1" lines="${2:-20}"
  if [[ -s "$file" ]]; then
    echo "--- last $lines lines of $(rel "$file") ---" >&2
    tail -n "$lines" "$file" >&2
  else
    echo "--- $(rel "$file") is empty or missing ---" >&2
  fi
}

# --- Process and port helpers ---------------------------------------------------------------
# A pid file counts only if its process is alive AND is the program we started
# (the command line contains the marker), so a recycled pid is never mistaken for ours.
pid_alive() {
  local pidfile="$1" marker="$2" pid cmdline
  [[ -s "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$marker"* ]]
}

# Is something accepting TCP connections on HOST:port? Bash's /dev/tcp needs no extra tool.
port_open() {
  timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Who listens on a port, if `ss` (iproute2, may be absent on a fresh machine) can tell.
port_holder() {
  local port="$1" out
  if command -v ss >/dev/null 2>&1; then
    out="$(ss -ltnpH "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | awk 'NR == 1')" || out=""
    [[ -n "$out" ]] && { echo "$out"; return; }
  fi
  echo "unknown process (install iproute2 and run 'ss -ltnp' to see it)"
}

# Fail clearly when a port we need is held by something we did not start.
require_free_port() {
  local service="$1" port="$2"
  if port_open "$port"; then
    die "$service cannot start: port $HOST:$port is already in use by $(port_holder "$port"); stop it or free the port"
  fi
}

# Start a command detached from this shell: own session (Ctrl-C on `make up` or the end of
# a CI step does not kill it), no stdin, output to a log file. setsid does not fork here
# (a script's background job is not a process-group leader), so $! is the service's pid.
start_detached() {
  local pidfile="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  setsid nohup "$@" </dev/null >>"$logfile" 2>&1 &
  echo "$!" >"$pidfile"
}

# SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; only ever the pid from our pid file.
stop_pid() {
  local name="$1" pidfile="$2" marker="$3" port="$4" pid i
  if ! pid_alive "$pidfile" "$marker"; then
    rm -f "$pidfile"
    if port_open "$port"; then
      say "$name: not started by this script, but port $port is held by $(port_holder "$port"); left alone"
    else
      say "$name: not running"
    fi
    return 0
  fi
  pid="$(<"$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name: pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  kill -0 "$pid" 2>/dev/null && die "$name: pid $pid is still alive after SIGKILL"
  rm -f "$pidfile"
  if port_open "$port"; then
    say "$name: stopped pid $pid, but port $port is still held by $(port_holder "$port")"
  else
    say "$name: stopped (pid $pid)"
  fi
}

# --- Tools ----------------------------------------------------------------------------------
require_tools() {
  local missing=() t
  for t in java mvn go; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (needed: a JDK 11+ for Kafka, Maven to fetch its jars, Go 1.21+ to build FerretDB)"
}

# kcat is the independent Kafka client of the integration tests and our readiness probe.
ensure_kcat() {
  command -v kcat >/dev/null 2>&1 && return 0
  say "installing kcat (apt-get)"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo -n)
  command -v apt-get >/dev/null 2>&1 || die "kcat is missing and apt-get is not available; install kcat yourself"
  mkdir -p "$LOCAL"
  local log="$LOCAL/apt-kcat.log"
  if ! { "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat; } >"$log" 2>&1; then
    show_tail "$log"
    die "apt-get could not install kcat (full output in $(rel "$log")); install kcat yourself"
  fi
}

# --- Kafka ----------------------------------------------------------------------------------
# Jars come from Maven (scripts/kafka/pom.xml) into a temp folder, renamed into place only
# on success; the marker holds the pom's checksum, so editing the pom refetches them.
ensure_kafka_libs() {
  local want
  want="$(sha256sum "$KAFKA_SRC/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$KAFKA_LIBS_MARKER" && "$(<"$KAFKA_LIBS_MARKER")" == "$want" ]]; then
    return 0
  fi
  say "kafka: fetching Kafka $KAFKA_VERSION jars with Maven into $(rel "$KAFKA_LIBS") (first run only)"
  local tmp="$KAFKA_HOME/libs.tmp"
  rm -rf "$tmp"
  mkdir -p "$KAFKA_HOME"
  if ! mvn -B -q -f "$KAFKA_SRC/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_HOME/mvn.log" 2>&1; then
    show_tail "$KAFKA_HOME/mvn.log"
    die "kafka: mvn could not fetch the Kafka jars (full output in $(rel "$KAFKA_HOME/mvn.log"))"
  fi
  compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null ||
    die "kafka: mvn finished but kafka_2.13-$KAFKA_VERSION.jar is not in $(rel "$tmp")"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  echo "$want" >"$KAFKA_LIBS_MARKER"
  say "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars ready"
}

kafka_java() {
  java -cp "$KAFKA_LIBS/*" "$@"
}

# server.properties is regenerated on each start (cheap), so template edits and a moved
# checkout are picked up. Storage is formatted once, with a cluster id kept in .local.
prepare_kafka() {
  mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
  sed "s|@LOG_DIRS@|$KAFKA_DATA|" "$KAFKA_SRC/server.properties" >"$KAFKA_CONFIG"
  [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0

  if [[ ! -s "$KAFKA_CLUSTER_ID_FILE" ]]; then
    kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$KAFKA_CLUSTER_ID_FILE.tmp"
    [[ -s "$KAFKA_CLUSTER_ID_FILE.tmp" ]] || die "kafka: StorageTool random-uuid printed nothing"
    mv "$KAFKA_CLUSTER_ID_FILE.tmp" "$KAFKA_CLUSTER_ID_FILE"
  fi
  say "kafka: formatting storage in $(rel "$KAFKA_DATA") (cluster id $(<"$KAFKA_CLUSTER_ID_FILE"))"
  if ! kafka_java -Dlog4j.configuration="file:$KAFKA_SRC/log4j.properties" -Dkafka.logs.dir="$KAFKA_LOGS" \
    kafka.tools.StorageTool format -t "$(<"$KAFKA_CLUSTER_ID_FILE")" -c "$KAFKA_CONFIG" \
    >"$KAFKA_LOGS/format.log" 2>&1; then
    show_tail "$KAFKA_LOGS/format.log"
    die "kafka: storage format failed"
  fi
}

start_kafka() {
  say "kafka: starting Kafka $KAFKA_VERSION (KRaft) on $HOST:$KAFKA_PORT"
  start_detached "$KAFKA_PID" "$KAFKA_CONSOLE" \
    java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_LOGS" -Dlog4j.configuration="file:$KAFKA_SRC/log4j.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONFIG"
}

# Ready = a metadata request lists our broker (kcat), or, without kcat, the JDK's
# own API-versions tool answers.
kafka_answers() {
  local out
  if command -v kcat >/dev/null 2>&1; then
    # Captured first: `kcat | grep -q` could fail under pipefail when grep exits early.
    out="$(kcat -b "$HOST:$KAFKA_PORT" -L -m 5 2>/dev/null)" || return 1
    [[ "$out" == *"broker 1 at $HOST:$KAFKA_PORT"* ]]
  else
    kafka_java kafka.admin.BrokerApiVersionsCommand --bootstrap-server "$HOST:$KAFKA_PORT" >/dev/null 2>&1
  fi
}

kafka_version() {
  local v=""
  [[ -f "$KAFKA_LOG" ]] && v="$(grep -o 'Kafka version: [^ ]*' "$KAFKA_LOG" | tail -n 1 | cut -d' ' -f3)"
  echo "${v:-unknown}"
}

# --- FerretDB -------------------------------------------------------------------------------
# The wrapper in scripts/ferretdb embeds FerretDB (see main.go for why); rebuilt only when its
# sources are newer than the binary. go.sum is committed, so modules are checksum-verified.
ensure_ferretdb_binary() {
  local f stale=0
  if [[ ! -x "$FERRET_BIN" ]]; then
    stale=1
  else
    for f in main.go go.mod go.sum; do
      [[ "$FERRET_SRC/$f" -nt "$FERRET_BIN" ]] && stale=1
    done
  fi
  ((stale)) || return 0
  say "ferretdb: building $(rel "$FERRET_BIN") with Go (first run: a few minutes)"
  mkdir -p "$(dirname "$FERRET_BIN")"
  # CGO off: the SQLite driver is pure Go, so no C compiler is needed.
  # -buildvcs=false: the wrapper lives inside this repo's git tree; stamping adds nothing.
  # ferretdb_no_postgresql: we only use the SQLite backend, so skip compiling pgx.
  if ! CGO_ENABLED=0 go -C "$FERRET_SRC" build -buildvcs=false -trimpath -tags ferretdb_no_postgresql \
    -o "$FERRET_BIN.tmp" . >"$LOCAL/ferretdb-build.log" 2>&1; then
    show_tail "$LOCAL/ferretdb-build.log"
    die "ferretdb: go build failed (full output in $(rel "$LOCAL/ferretdb-build.log"))"
  fi
  mv "$FERRET_BIN.tmp" "$FERRET_BIN"
}

start_ferretdb() {
  say "ferretdb: starting FerretDB $("$FERRET_BIN" -version) (SQLite) on $HOST:$MONGO_PORT"
  mkdir -p "$FERRET_DATA"
  # DO_NOT_TRACK: the embedded package never reports telemetry; this is a second guard.
  start_detached "$FERRET_PID" "$FERRET_LOG" \
    env DO_NOT_TRACK=1 "$FERRET_BIN" -listen "$HOST:$MONGO_PORT" -data-dir "$FERRET_DATA"
}

mongo_answers() {
  [[ -x "$FERRET_BIN" ]] && "$FERRET_BIN" -ping "$MONGO_URI" -timeout 2s >/dev/null 2>&1
}

ferretdb_version() {
  local v=""
  [[ -f "$FERRET_LOG" ]] && v="$(grep -o 'Starting FerretDB [^ ]*' "$FERRET_LOG" | tail -n 1 | cut -d' ' -f3)"
  echo "${v:-unknown}"
}

# --- Readiness ------------------------------------------------------------------------------
# Poll until the service answers; fail fast if its process died, else after READY_TIMEOUT.
wait_ready() {
  local name="$1" addr="$2" probe="$3" pidfile="$4" marker="$5" log="$6" console="${7:-}"
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ! "$probe"; do
    if ! pid_alive "$pidfile" "$marker"; then
      echo "services: error: $name exited before answering on $addr; last lines of $(rel "$log"):" >&2
      tail -n 20 "$log" >&2 2>/dev/null || true
      if [[ -n "$console" && -s "$console" ]]; then show_tail "$console"; fi
      rm -f "$pidfile"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "services: error: $name did not answer on $addr within ${READY_TIMEOUT}s; last lines of $(rel "$log"):" >&2
      tail -n 20 "$log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
}

write_env() {
  mkdir -p "$LOCAL"
  cat >"$ENV_FILE.tmp" <<EOF
# Written by scripts/services.sh up; source with: set -a; source .local/services.env; set +a
KAFKA_BROKERS=$HOST:$KAFKA_PORT
MONGODB_URI=$MONGO_URI
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# --- Commands -------------------------------------------------------------------------------
cmd_up() {
  local kafka_running=0 ferret_running=0 started=()
  pid_alive "$KAFKA_PID" kafka.Kafka && kafka_running=1
  pid_alive "$FERRET_PID" ferretdb-runner && ferret_running=1

  # Check every port before starting anything, so a conflict fails before minutes of setup.
  if ((!kafka_running)); then
    rm -f "$KAFKA_PID"
    require_free_port kafka "$KAFKA_PORT"
    require_free_port "kafka (controller)" "$KAFKA_CONTROLLER_PORT"
  fi
  if ((!ferret_running)); then
    rm -f "$FERRET_PID"
    require_free_port ferretdb "$MONGO_PORT"
  fi

  ensure_kcat
  if ((!kafka_running || !ferret_running)); then
    require_tools
  fi

  # Kafka first: it boots while FerretDB is being built.
  if ((!kafka_running)); then
    ensure_kafka_libs
    prepare_kafka
    start_kafka
    started+=(kafka)
  fi
  if ((!ferret_running)); then
    ensure_ferretdb_binary
    start_ferretdb
    started+=(ferretdb)
  fi

  wait_ready kafka "$HOST:$KAFKA_PORT" kafka_answers "$KAFKA_PID" kafka.Kafka "$KAFKA_LOG" "$KAFKA_CONSOLE"
  if ((kafka_running)); then
    say "kafka: already running (pid $(<"$KAFKA_PID")) on $HOST:$KAFKA_PORT"
  else
    say "kafka: ready on $HOST:$KAFKA_PORT (pid $(<"$KAFKA_PID"), Kafka $(kafka_version))"
  fi

  wait_ready ferretdb "$HOST:$MONGO_PORT" mongo_answers "$FERRET_PID" ferretdb-runner "$FERRET_LOG"
  if ((ferret_running)); then
    say "ferretdb: already running (pid $(<"$FERRET_PID")) on $HOST:$MONGO_PORT"
  else
    say "ferretdb: ready on $HOST:$MONGO_PORT (pid $(<"$FERRET_PID"), FerretDB $(ferretdb_version))"
  fi

  write_env
  ((${#started[@]} == 0)) || say "wrote $(rel "$ENV_FILE") (KAFKA_BROKERS=$HOST:$KAFKA_PORT MONGODB_URI=$MONGO_URI)"
}

cmd_down() {
  # FerretDB first: it has no dependency on Kafka, and Kafka's shutdown is the slower one.
  stop_pid ferretdb "$FERRET_PID" ferretdb-runner "$MONGO_PORT"
  stop_pid kafka "$KAFKA_PID" kafka.Kafka "$KAFKA_PORT"
}

# One line per service: state, pid, address, version, log.
status_line() {
  local name="$1" pidfile="$2" marker="$3" port="$4" probe="$5" version="$6" log="$7" answer
  if pid_alive "$pidfile" "$marker"; then
    if "$probe"; then answer="answering"; else answer="NOT answering"; fi
    say "$name: running, pid $(<"$pidfile"), $HOST:$port ($answer), version $version, log $(rel "$log")"
    return 0
  fi
  if port_open "$port"; then
    say "$name: not started by this script, but $HOST:$port is held by $(port_holder "$port")"
  else
    say "$name: stopped (last version seen: $version; data kept under $(rel "$LOCAL"))"
  fi
  return 1
}

# Informational only: exits 0 whether or not the services run (so `make status` never fails).
cmd_status() {
  status_line kafka "$KAFKA_PID" kafka.Kafka "$KAFKA_PORT" kafka_answers "Kafka $(kafka_version) (KRaft)" "$KAFKA_LOG" || true
  status_line ferretdb "$FERRET_PID" ferretdb-runner "$MONGO_PORT" mongo_answers "FerretDB $(ferretdb_version) (SQLite)" "$FERRET_LOG" || true
  if [[ -f "$ENV_FILE" ]]; then
    say "env: $(rel "$ENV_FILE"): $(grep -v '^#' "$ENV_FILE" | paste -sd ' ')"
  fi
}

main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
      echo "usage: $0 up|down|status" >&2
      exit 2
      ;;
  esac
}

main "$@"
