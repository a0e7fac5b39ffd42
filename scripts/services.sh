#!/usr/bin/env bash
# Local services for metricsctl's demo and integration tests, run natively (no Docker):
#   - Apache Kafka in KRaft mode, 4.4.0 by default (KAFKA_VERSION=3.9.2 still works), either one
#     node (broker + controller) on 127.0.0.1:29092 (BROKERS=1, the default) or a three-node
#     cluster (BROKERS=3): node N is broker + controller with id N on 127.0.0.1:29092 / 29192 /
#     29292 (controllers on 29093 / 29193 / 29293). Next to its plaintext port P, each node also
#     listens with SASL_SSL on P+2 (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), with SSL requiring a
#     client certificate on P+3, and with SASL_SSL whose sessions last 5 s on P+4 (for
#     re-authentication tests); the CA, certificates and SASL user are made at `up` into
#     .local/security and named in .local/services.env (LOCAL_KAFKA_*)
#   - FerretDB v1.24.2 (MongoDB wire protocol, SQLite backend) on 127.0.0.1:27017
# SERVICES_PORT_OFFSET=N (default 0) moves every port by N, e.g. 10000 for 39092 and 37017, so
# a second checkout can run its own services next to the first.
#
# Usage: scripts/services.sh up [--brokers 1|3] [--kafka-version V] | down | status | running
#        scripts/services.sh kill-broker N | start-broker N | broker-pid N
#   up            start what is not running (only that), wait until everything answers, write
#                 .local/services.env. The Kafka mode is BROKERS (env) or --brokers, else the mode
#                 `up` last started (remembered in .local/kafka/mode), else 1. The Kafka version
#                 is KAFKA_VERSION (env) or --kafka-version, else the version `up` last started
#                 (remembered in .local/kafka/version), else 4.4.0. Asking for another mode or
#                 version than the running one stops the running Kafka node(s) first.
#   down          stop every Kafka node this script started (any mode, any version) and FerretDB
#   status        what runs where (informational, always exits 0)
#   running       exit 0 when every Kafka node of the current mode and version and FerretDB run
#   kill-broker N SIGKILL Kafka node N of the current mode; prints its pid
#   start-broker N start Kafka node N of the current mode; waits until it answers
#   broker-pid N  print the pid of Kafka node N of the current mode (exit 1 if it does not run)
# Commands that change state take an exclusive lock on .local/services.lock (waiting up to
# SERVICES_LOCK_TIMEOUT seconds, default 300), so concurrent runs cannot orphan a process.
#
# Everything the services need is fetched/built on first use and kept under the
# git-ignored .local/ folder (jars, binary, data, logs, pid files), so a fresh machine only
# needs java (17+; Kafka 3.9 also runs on 11), mvn, go and, for kcat, apt-get. `up` is
# idempotent: when the services already run it only checks that they answer. Data survives
# `down`; `rm -rf .local` resets all.
set -euo pipefail

# --- Locations and settings -----------------------------------------------------------------
# Resolve the repo root from this file, so the script works from any working directory.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
ENV_FILE="$LOCAL/services.env"

HOST=127.0.0.1
PORT_OFFSET="${SERVICES_PORT_OFFSET:-0}"
[[ "$PORT_OFFSET" =~ ^[0-9]{1,5}$ ]] && ((PORT_OFFSET <= 30000)) || {
  echo "services: error: SERVICES_PORT_OFFSET must be a whole number from 0 to 30000, not '$PORT_OFFSET'" >&2
  exit 2
}
KAFKA_PORT=$((29092 + PORT_OFFSET))
KAFKA_CONTROLLER_PORT=$((29093 + PORT_OFFSET))
MONGO_PORT=$((27017 + PORT_OFFSET))
# The secured listeners of a node, above its plaintext port.
SASL_SSL_PORT_DELTA=2
SSL_PORT_DELTA=3
SASL_SHORT_PORT_DELTA=4
READY_TIMEOUT="${SERVICES_READY_TIMEOUT:-90}" # seconds each service gets to answer after start
STOP_TIMEOUT=15                               # seconds between SIGTERM and SIGKILL

KAFKA_DEFAULT_VERSION=4.4.0
KAFKA_SRC="$ROOT/scripts/kafka"
KAFKA_HOME="$LOCAL/kafka"
KAFKA_MODE_FILE="$KAFKA_HOME/mode"       # 1 or 3: the mode `up` last started
KAFKA_VERSION_FILE="$KAFKA_HOME/version" # the Kafka version `up` last started
# Before per-version folders, .local/kafka held one version's jars and storage directly (libs,
# data, logs, cluster/, cluster-id); that version was always 3.9.2. See migrate_old_layout.
KAFKA_OLD_LAYOUT_VERSION=3.9.2
# Node pid files, the same for every version (only one version runs at a time): kafka.pid for
# the single node, kafka-N.pid for node N of the cluster.
KAFKA_SLOTS=(kafka kafka-1 kafka-2 kafka-3)

# TLS material and the SASL user of the secured listeners (see ensure_security).
SECURITY_DIR="$LOCAL/security"
SASL_USER=metricsctl

FERRET_SRC="$ROOT/scripts/ferretdb"
FERRET_BIN="$LOCAL/bin/ferretdb-runner"
FERRET_DATA="$LOCAL/ferretdb/data"
FERRET_LOG="$LOCAL/ferretdb/ferretdb.log"
FERRET_PID="$LOCAL/run/ferretdb.pid"
MONGO_URI="mongodb://$HOST:$MONGO_PORT"

LOCK_FILE="$LOCAL/services.lock"
LOCK_TIMEOUT="${SERVICES_LOCK_TIMEOUT:-300}" # seconds to wait for another run's lock

# Each version keeps its jars, storage, logs and configs in .local/kafka/VERSION (node N of the
# cluster in .local/kafka/VERSION/cluster/node-N): KRaft storage formatted by one version must
# never be fed to another (a 3.9 node refuses the newer metadata version a 4.x format writes,
# and a 4.x node upgrades what it is given for good), and a running node keeps loading classes
# from its own jars while another version's are fetched. Sets the KAFKA_* paths for version $1.
use_version() {
  KAFKA_VERSION="$1"
  KAFKA_MAJOR="${1%%.*}"
  KAFKA_VHOME="$KAFKA_HOME/$1"
  KAFKA_LIBS="$KAFKA_VHOME/libs"
  KAFKA_LIBS_MARKER="$KAFKA_LIBS/.complete"
  KAFKA_DATA="$KAFKA_VHOME/data"
  KAFKA_LOGS="$KAFKA_VHOME/logs"
  KAFKA_CONFIG="$KAFKA_VHOME/server.properties"
  KAFKA_CLUSTER_ID_FILE="$KAFKA_VHOME/cluster-id"
  # The three-node cluster (BROKERS=3) keeps its own storage: a KRaft log formatted for one voter
  # cannot join a three-voter quorum. Node N: cluster/node-N/{data,logs,server.properties} and
  # .local/run/kafka-N.pid. The single node keeps the paths above.
  KAFKA_CLUSTER_HOME="$KAFKA_VHOME/cluster"
}

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
# A process that is exiting (a zombie, see pid_gone) does not count.
pid_alive() {
  local pidfile="$1" marker="$2" pid cmdline
  [[ -s "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(proc_field "$pid" State)" != Z ]] || return 1
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
# fd 9 (the lock) is closed for it: a service must not hold the lock for its lifetime.
start_detached() {
  local pidfile="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  setsid nohup "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  echo "$!" >"$pidfile"
}

# One field of /proc/PID/status (State: its letter), empty when the process is gone.
proc_field() {
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

# Is this pid gone? A process whose parent has not reaped it yet (a zombie) counts, but only
# once all its threads have exited: a JVM's main thread is a zombie while other threads still
# run and still hold its sockets.
pid_gone() {
  local state
  kill -0 "$1" 2>/dev/null || return 0
  state="$(proc_field "$1" State)"
  [[ -z "$state" ]] && return 0
  [[ "$state" == Z && "$(proc_field "$1" Threads)" -le 1 ]]
}

# A process of ours killed a moment ago (say by a test, with SIGKILL) may still be exiting and
# holding its ports: wait up to 10 s for that before starting its successor.
await_exit() {
  local pidfile="$1" pid i
  [[ -s "$pidfile" ]] || return 0
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  for ((i = 0; i < 100; i++)); do
    [[ "$(proc_field "$pid" State)" == Z ]] || return 0
    pid_gone "$pid" && return 0
    sleep 0.1
  done
}

# Commands that change state hold an exclusive lock on LOCK_FILE (fd 9) until they exit, so two
# concurrent `up` runs cannot both start a node and orphan one of them.
take_lock() {
  command -v flock >/dev/null 2>&1 || die "flock (util-linux) is needed to serialise services.sh runs; install util-linux"
  mkdir -p "$LOCAL"
  exec 9>>"$LOCK_FILE"
  flock -n 9 && return 0
  say "waiting for another scripts/services.sh command to finish (lock $(rel "$LOCK_FILE"), up to ${LOCK_TIMEOUT}s)"
  flock -w "$LOCK_TIMEOUT" 9 ||
    die "another scripts/services.sh command held $(rel "$LOCK_FILE") for over ${LOCK_TIMEOUT}s; wait for it or find it with: fuser -v $(rel "$LOCK_FILE")"
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
    pid_gone "$pid" && break
    sleep 0.1
  done
  if ! pid_gone "$pid"; then
    say "$name: pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_gone "$pid" && break
      sleep 0.1
    done
  fi
  pid_gone "$pid" || die "$name: pid $pid is still alive after SIGKILL"
  rm -f "$pidfile"
  if port_open "$port"; then
    say "$name: stopped pid $pid, but port $port is still held by $(port_holder "$port")"
  else
    say "$name: stopped (pid $pid)"
  fi
}


# --- Tools ----------------------------------------------------------------------------------
# The Java feature release (17, 21, ...; 8 for 1.8), empty when java does not answer.
java_major() {
  java -XshowSettings:properties -version 2>&1 |
    awk -F' = ' '$1 ~ /java\.specification\.version$/ { v = $2; sub(/^1\./, "", v); print v }'
}

# Kafka 4.x brokers and tools need Java 17 or newer; 3.9 runs on 11.
require_java() {
  local need=11 have
  ((KAFKA_MAJOR < 4)) || need=17
  have="$(java_major)"
  [[ "$have" =~ ^[0-9]+$ ]] || die "java does not answer 'java -version' (a JDK $need+ runs Kafka $KAFKA_VERSION)"
  ((have >= need)) || die "Kafka $KAFKA_VERSION needs Java $need or newer, but java is $have; install a newer JDK or pick an older Kafka (KAFKA_VERSION=3.9.2 runs on Java 11)"
}

require_tools() {
  local missing=() t
  for t in java mvn go; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (needed: a JDK 17+ for Kafka, Maven to fetch its jars, Go 1.21+ to build FerretDB)"
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


# --- Kafka versions -------------------------------------------------------------------------
valid_version() { [[ "$1" =~ ^(3\.9|4\.[0-9]+)\.[0-9]+$ ]]; }

check_version() {
  valid_version "$1" || {
    echo "services: error: KAFKA_VERSION must be a Kafka 3.9.x or 4.x release such as 4.4.0 (the default) or 3.9.2, not '$1'" >&2
    exit 2
  }
}

# Is .local/kafka still in the layout from before per-version folders?
old_layout() {
  [[ -e "$KAFKA_HOME/data" || -e "$KAFKA_HOME/cluster" || -e "$KAFKA_HOME/libs" || -e "$KAFKA_HOME/libs.tmp" ]]
}

# The version `up` last started; before per-version folders that was 3.9.2; else the default.
current_version() {
  local v=""
  [[ -s "$KAFKA_VERSION_FILE" ]] && v="$(<"$KAFKA_VERSION_FILE")"
  if valid_version "$v"; then
    echo "$v"
  elif old_layout; then
    echo "$KAFKA_OLD_LAYOUT_VERSION"
  else
    echo "$KAFKA_DEFAULT_VERSION"
  fi
}

# The version a command works on: --kafka-version V or KAFKA_VERSION, else the remembered one.
wanted_version() {
  if [[ -n "$WANT_VERSION" ]]; then echo "$WANT_VERSION"; else current_version; fi
}

# Kafka 3.x logs through log4j 1 (reload4j, log4j.properties), 4.x through log4j2 (log4j2.xml):
# the pom's logging profile and the JVM option naming the configuration.
kafka_logging() { if ((KAFKA_MAJOR >= 4)); then echo log4j2; else echo reload4j; fi; }
kafka_log_config() {
  if ((KAFKA_MAJOR >= 4)); then
    echo "-Dlog4j2.configurationFile=$KAFKA_SRC/log4j2.xml"
  else
    echo "-Dlog4j.configuration=file:$KAFKA_SRC/log4j.properties"
  fi
}

# --- Kafka jars -----------------------------------------------------------------------------
# Jars come from Maven (scripts/kafka/pom.xml, given the version and its logging backend) into
# libs.tmp; its marker holds a checksum of the pom and both settings, so editing the pom
# refetches them. They replace libs only while no node of this version runs: a running JVM still
# loads classes from the jars in libs (nodes of other versions run from their own libs).
kafka_libs_want() {
  { sha256sum "$KAFKA_SRC/pom.xml" | cut -d' ' -f1 && echo "kafka.version=$KAFKA_VERSION kafka.logging=$(kafka_logging)"; } |
    sha256sum | cut -d' ' -f1
}

fetch_kafka_libs() {
  local want tmp="$KAFKA_VHOME/libs.tmp"
  want="$(kafka_libs_want)"
  [[ -f "$KAFKA_LIBS_MARKER" && "$(<"$KAFKA_LIBS_MARKER")" == "$want" ]] && return 0
  [[ -f "$tmp/.complete" && "$(<"$tmp/.complete")" == "$want" ]] && return 0
  say "kafka: fetching Kafka $KAFKA_VERSION jars with Maven into $(rel "$KAFKA_LIBS") (first run of this version, or scripts/kafka/pom.xml changed)"
  rm -rf "$tmp"
  mkdir -p "$KAFKA_VHOME"
  if ! mvn -B -q -f "$KAFKA_SRC/pom.xml" -Dkafka.version="$KAFKA_VERSION" -Dkafka.logging="$(kafka_logging)" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_VHOME/mvn.log" 2>&1; then
    show_tail "$KAFKA_VHOME/mvn.log"
    die "kafka: mvn could not fetch the Kafka $KAFKA_VERSION jars (full output in $(rel "$KAFKA_VHOME/mvn.log"); is $KAFKA_VERSION a release on Maven Central?)"
  fi
  compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null ||
    die "kafka: mvn finished but kafka_2.13-$KAFKA_VERSION.jar is not in $(rel "$tmp")"
  echo "$want" >"$tmp/.complete"
}

install_kafka_libs() {
  local tmp="$KAFKA_VHOME/libs.tmp"
  [[ -f "$tmp/.complete" ]] || return 0
  if version_running "$KAFKA_VERSION"; then
    [[ -f "$KAFKA_LIBS_MARKER" ]] || die "kafka: $(rel "$KAFKA_LIBS") is incomplete while a Kafka $KAFKA_VERSION node runs; run: scripts/services.sh down"
    say "kafka: new jars wait in $(rel "$tmp") while other nodes run from $(rel "$KAFKA_LIBS"); they are installed by the next up with no node of Kafka $KAFKA_VERSION running"
    return 0
  fi
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  say "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars of Kafka $KAFKA_VERSION ready"
}

ensure_kafka_libs() {
  fetch_kafka_libs
  install_kafka_libs
}

kafka_java() {
  java -cp "$KAFKA_LIBS/*" "$@"
}

# --- Running nodes, whatever their version and mode -----------------------------------------
slot_pidfile() { echo "$LOCAL/run/$1.pid"; }
slot_node() { if [[ "$1" == kafka ]]; then echo 1; else echo "${1#kafka-}"; fi; }
slot_mode() { if [[ "$1" == kafka ]]; then echo 1; else echo 3; fi; }
slot_port() { echo $((KAFKA_PORT + 100 * ($(slot_node "$1") - 1))); }

# The config file of the live node in slot $1: the argument after kafka.Kafka on its command
# line, when it lies under .local/kafka (so the process is ours; a recycled pid is not); else
# exit 1. A process that is exiting (a zombie) does not count.
slot_config() {
  local pidfile pid i args=()
  pidfile="$(slot_pidfile "$1")"
  [[ -s "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(proc_field "$pid" State)" != Z ]] || return 1
  mapfile -d "" -t args 2>/dev/null <"/proc/$pid/cmdline" || return 1
  for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    if [[ "${args[i]}" == kafka.Kafka && "${args[i + 1]}" == "$KAFKA_HOME/"* ]]; then
      echo "${args[i + 1]}"
      return 0
    fi
  done
  return 1
}

# The version a node's config belongs to (.local/kafka/VERSION/...), or "old-layout" for a node
# started before per-version folders (.local/kafka/server.properties, .local/kafka/cluster/...).
config_version() {
  local first="${1#"$KAFKA_HOME"/}"
  first="${first%%/*}"
  if valid_version "$first"; then echo "$first"; else echo old-layout; fi
}

# "Kafka 4.4.0", or "Kafka 3.9.2, old layout", for the node in slot $1 (running).
slot_label() {
  local v
  v="$(config_version "$(slot_config "$1")")"
  if [[ "$v" == old-layout ]]; then echo "Kafka $KAFKA_OLD_LAYOUT_VERSION, old layout"; else echo "Kafka $v"; fi
}

# The slots whose node runs.
live_slots() {
  local s
  for s in "${KAFKA_SLOTS[@]}"; do
    if slot_config "$s" >/dev/null; then echo "$s"; fi
  done
}

# Does a node of version $1 ("old-layout" included) run?
version_running() {
  local s cfg
  for s in "${KAFKA_SLOTS[@]}"; do
    cfg="$(slot_config "$s")" || continue
    [[ "$(config_version "$cfg")" == "$1" ]] && return 0
  done
  return 1
}

# Stop the nodes in the given slots all at once (SIGTERM to each, then each is awaited): a KRaft
# cluster stopped one node at a time loses its quorum, and the last node's controlled shutdown
# then waits for a controller that is gone.
stop_slots() {
  local s rc=0 job jobs=()
  for s in "$@"; do
    (
      cfg="$(slot_config "$s")" || exit 0 # gone meanwhile
      stop_pid "$s ($(slot_label "$s"))" "$(slot_pidfile "$s")" "kafka.Kafka $cfg" "$(slot_port "$s")"
    ) &
    jobs+=("$!")
  done
  for job in "${jobs[@]}"; do
    wait "$job" || rc=1
  done
  ((rc == 0)) || die "kafka: a node did not stop (see above)"
}

# Before per-version folders, .local/kafka held Kafka 3.9.2's jars and storage directly. Once no
# node runs from there, its storage (data, logs, cluster/, cluster-id) moves to
# .local/kafka/3.9.2, where KAFKA_VERSION=3.9.2 finds its topics again, and the old jars go (the
# per-version jars are fetched anew). A node still running from there is left alone: `up` stops
# it like a node of another version, then calls this again.
migrate_old_layout() {
  local dest="$KAFKA_HOME/$KAFKA_OLD_LAYOUT_VERSION" item moved=()
  old_layout || return 0
  version_running old-layout && return 0
  mkdir -p "$dest"
  for item in data logs cluster cluster-id; do
    [[ -e "$KAFKA_HOME/$item" ]] || continue
    if [[ -e "$dest/$item" ]]; then
      # Both layouts hold one: the per-version one is the newer.
      rm -rf "${KAFKA_HOME:?}/$item"
    else
      mv "$KAFKA_HOME/$item" "$dest/$item"
      moved+=("$item")
    fi
  done
  rm -rf "$KAFKA_HOME/libs" "$KAFKA_HOME/libs.tmp" "$KAFKA_HOME/server.properties" "$KAFKA_HOME/mvn.log"
  # The version that ran from the old layout is the remembered one until `up` starts another.
  [[ -s "$KAFKA_VERSION_FILE" ]] || echo "$KAFKA_OLD_LAYOUT_VERSION" >"$KAFKA_VERSION_FILE"
  ((${#moved[@]} == 0)) || say "kafka: moved Kafka $KAFKA_OLD_LAYOUT_VERSION's ${moved[*]} from $(rel "$KAFKA_HOME") to $(rel "$dest") (one folder per version now)"
}

# --- Kafka modes and nodes ------------------------------------------------------------------
# Mode 1 has node 1; mode 3 has nodes 1, 2, 3. Node N listens on KAFKA_PORT + 100*(N-1), its
# controller on KAFKA_CONTROLLER_PORT + 100*(N-1); so node 1 of either mode uses 29092/29093.
check_mode() {
  [[ "$1" == 1 || "$1" == 3 ]] || {
    echo "services: error: BROKERS must be 1 (one Kafka node) or 3 (a three-node cluster), not '$1'" >&2
    exit 2
  }
}

# The mode `up` last started (1 when it never ran, or before cluster support existed).
current_mode() {
  local m=""
  [[ -s "$KAFKA_MODE_FILE" ]] && m="$(<"$KAFKA_MODE_FILE")"
  if [[ "$m" == 1 || "$m" == 3 ]]; then echo "$m"; else echo 1; fi
}

# The mode a command works on: --brokers N or BROKERS, else the remembered one.
wanted_mode() {
  if [[ -n "$WANT_BROKERS" ]]; then echo "$WANT_BROKERS"; else current_mode; fi
}

node_ids() { if (($1 == 1)); then echo 1; else echo 1 2 3; fi; }

# The bootstrap list of mode $1; $2 (default 0) selects a listener by its offset from the
# plaintext port (SASL_SSL_PORT_DELTA, ...).
broker_list() {
  local n out=() delta="${2:-0}"
  for n in $(node_ids "$1"); do out+=("$HOST:$((KAFKA_PORT + 100 * (n - 1) + delta))"); done
  (
    IFS=,
    echo "${out[*]}"
  )
}

# Set the NODE_* globals to node $2 of mode $1 of the version use_version chose; everything below
# works on the selected node.
select_node() {
  local mode="$1" n="$2"
  NODE_ID="$n"
  NODE_PORT=$((KAFKA_PORT + 100 * (n - 1)))
  NODE_CONTROLLER_PORT=$((KAFKA_CONTROLLER_PORT + 100 * (n - 1)))
  NODE_SECURED_PORTS=($((NODE_PORT + SASL_SSL_PORT_DELTA)) $((NODE_PORT + SSL_PORT_DELTA)) $((NODE_PORT + SASL_SHORT_PORT_DELTA)))
  if ((mode == 1)); then
    NODE_VOTERS="1@$HOST:$KAFKA_CONTROLLER_PORT"
    NODE_NAME=kafka
    NODE_DATA="$KAFKA_DATA"
    NODE_LOGS="$KAFKA_LOGS"
    NODE_CONFIG="$KAFKA_CONFIG"
    NODE_TEMPLATE="$KAFKA_SRC/server.properties"
    NODE_CLUSTER_ID_FILE="$KAFKA_CLUSTER_ID_FILE"
    NODE_XMS=256m
  else
    NODE_NAME="kafka-$n"
    NODE_VOTERS="1@$HOST:$KAFKA_CONTROLLER_PORT,2@$HOST:$((KAFKA_CONTROLLER_PORT + 100)),3@$HOST:$((KAFKA_CONTROLLER_PORT + 200))"
    NODE_DATA="$KAFKA_CLUSTER_HOME/node-$n/data"
    NODE_LOGS="$KAFKA_CLUSTER_HOME/node-$n/logs"
    NODE_CONFIG="$KAFKA_CLUSTER_HOME/node-$n/server.properties"
    NODE_TEMPLATE="$KAFKA_SRC/cluster.properties"
    NODE_CLUSTER_ID_FILE="$KAFKA_CLUSTER_HOME/cluster-id"
    NODE_XMS=128m # three JVMs share the machine
  fi
  NODE_PID="$(slot_pidfile "$NODE_NAME")"
  NODE_LOG="$NODE_LOGS/server.log"      # log4j output
  NODE_CONSOLE="$NODE_LOGS/console.log" # JVM stdout/stderr (crashes before log4j is up)
  # The config path tells the nodes, the two modes and the versions apart in a process's
  # command line.
  NODE_MARKER="kafka.Kafka $NODE_CONFIG"
}

node_alive() { pid_alive "$NODE_PID" "$NODE_MARKER"; }

# server.properties is regenerated on each start (cheap), so template edits and a moved
# checkout are picked up. Storage is formatted once, with a cluster id kept in .local
# (one id for all three cluster nodes). The configs name their controllers statically
# (controller.quorum.voters), which both 3.9 and 4.x format without --standalone or
# --initial-controllers (those are for a dynamic quorum, controller.quorum.bootstrap.servers).
prepare_node() {
  mkdir -p "$NODE_DATA" "$NODE_LOGS"
  sed -e "s|@LOG_DIRS@|$NODE_DATA|" -e "s|@NODE_ID@|$NODE_ID|" \
    -e "s|@PORT@|$NODE_PORT|" -e "s|@CONTROLLER_PORT@|$NODE_CONTROLLER_PORT|" \
    -e "s|@VOTERS@|$NODE_VOTERS|" -e "s|@SASL_SSL_PORT@|${NODE_SECURED_PORTS[0]}|" \
    -e "s|@SSL_PORT@|${NODE_SECURED_PORTS[1]}|" -e "s|@SASL_SHORT_PORT@|${NODE_SECURED_PORTS[2]}|" \
    -e "s|@SECURITY_DIR@|$SECURITY_DIR|" -e "s|@SASL_USER@|$SASL_USER|" \
    -e "s|@SASL_PASSWORD@|$(<"$SECURITY_DIR/sasl-password")|" \
    "$NODE_TEMPLATE" "$KAFKA_SRC/security.properties" >"$NODE_CONFIG"
  [[ -f "$NODE_DATA/meta.properties" ]] && return 0

  if [[ ! -s "$NODE_CLUSTER_ID_FILE" ]]; then
    mkdir -p "$(dirname "$NODE_CLUSTER_ID_FILE")"
    kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$NODE_CLUSTER_ID_FILE.tmp"
    [[ -s "$NODE_CLUSTER_ID_FILE.tmp" ]] || die "kafka: StorageTool random-uuid printed nothing"
    mv "$NODE_CLUSTER_ID_FILE.tmp" "$NODE_CLUSTER_ID_FILE"
  fi
  say "$NODE_NAME: formatting Kafka $KAFKA_VERSION storage in $(rel "$NODE_DATA") (cluster id $(<"$NODE_CLUSTER_ID_FILE"))"
  # The SCRAM users of the SASL_SSL listener live in the cluster metadata; format writes them.
  local password
  password="$(<"$SECURITY_DIR/sasl-password")"
  if ! kafka_java "$(kafka_log_config)" -Dkafka.logs.dir="$NODE_LOGS" \
    kafka.tools.StorageTool format -t "$(<"$NODE_CLUSTER_ID_FILE")" -c "$NODE_CONFIG" \
    --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$password]" \
    --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$password]" \
    >"$NODE_LOGS/format.log" 2>&1; then
    show_tail "$NODE_LOGS/format.log"
    die "$NODE_NAME: storage format failed"
  fi
  echo "$SASL_USER" >"$NODE_DATA/.scram-users"
}

# Storage formatted before the secured listeners existed has no SCRAM user: once the node
# answers, add it through the plaintext listener (Kafka's ConfigCommand), once.
ensure_scram_users() {
  local password
  [[ -f "$NODE_DATA/.scram-users" ]] && return 0
  password="$(<"$SECURITY_DIR/sasl-password")"
  say "$NODE_NAME: adding SCRAM user $SASL_USER to storage formatted before the SASL listeners"
  # One mechanism per call: Kafka 4.x refuses two credentials of one user in one request.
  local mechanism
  : >"$NODE_LOGS/scram-users.log"
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
    if ! KAFKA_VERSION="$KAFKA_VERSION" bash "$ROOT/scripts/kafka-tool.sh" configs \
      --bootstrap-server "$HOST:$NODE_PORT" --alter --entity-type users --entity-name "$SASL_USER" \
      --add-config "$mechanism=[password=$password]" >>"$NODE_LOGS/scram-users.log" 2>&1; then
      # The tool echoes its arguments, the password among them.
      sed -i "s/$password/<redacted>/g" "$NODE_LOGS/scram-users.log"
      show_tail "$NODE_LOGS/scram-users.log"
      die "$NODE_NAME: could not add the $mechanism credential of $SASL_USER"
    fi
  done
  echo "$SASL_USER" >"$NODE_DATA/.scram-users"
}

# --- TLS material and the SASL user -----------------------------------------------------------
# Made once into .local/security with openssl (kept across `down`/`up`; `rm -rf .local/security`
# makes new ones, and the next format or ensure_scram_users uses the new password):
#   ca.pem / ca.key            a local CA (EC P-256, 10 years)
#   broker.pem / broker.key    the brokers' certificate, for 127.0.0.1 only (a client that dials
#                              localhost sees a host mismatch), and broker-keystore.pem = both,
#                              the PEM key store Kafka reads
#   client.pem / client.key    a client certificate for the SSL listener (mutual TLS)
#   sasl-password              the password of SASL user metricsctl (PLAIN and SCRAM)
ensure_security() {
  local d="$SECURITY_DIR" tmp
  [[ -s "$d/broker-keystore.pem" && -s "$d/client.pem" && -s "$d/sasl-password" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl is missing (it makes the local CA and certificates)"
  say "security: making a local CA, broker and client certificates and a SASL password in $(rel "$d")"
  tmp="$d.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  (
    set -e
    cd "$tmp"
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=metricsctl local CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out ca.pem 2>/dev/null
    # $1: name, $2: subject, $3: extensions
    issue() {
      key "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    issue broker "/CN=127.0.0.1" "$(printf '%s\n' 'basicConstraints=CA:FALSE' \
      'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1')"
    issue client "/CN=metricsctl-client" "$(printf '%s\n' 'basicConstraints=CA:FALSE' \
      'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth')"
    cat broker.key broker.pem >broker-keystore.pem
    openssl rand -hex 16 >sasl-password
    rm -f ca.srl
    chmod 600 ./*.key broker-keystore.pem sasl-password
  ) || die "security: openssl could not make the certificates"
  rm -rf "$d"
  mv "$tmp" "$d"
}

start_node() {
  if [[ "$NODE_NAME" == kafka ]]; then
    say "kafka: starting Kafka $KAFKA_VERSION (KRaft) on $HOST:$NODE_PORT"
  else
    say "$NODE_NAME: starting Kafka $KAFKA_VERSION (KRaft) node $NODE_ID on $HOST:$NODE_PORT (controller $NODE_CONTROLLER_PORT)"
  fi
  start_detached "$NODE_PID" "$NODE_CONSOLE" \
    java "-Xms$NODE_XMS" -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$NODE_LOGS" "$(kafka_log_config)" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$NODE_CONFIG"
}

# Kafka's API-versions tool from the jars of the selected version (its class moved in 4.0;
# scripts/kafka-tool.sh knows where).
broker_api_versions() {
  KAFKA_VERSION="$KAFKA_VERSION" bash "$ROOT/scripts/kafka-tool.sh" broker-api-versions --bootstrap-server "$1"
}

# Ready = a metadata request to the node lists the node itself (kcat), or, without kcat, the
# JDK's own API-versions tool answers.
kafka_answers() {
  local out
  port_open "$NODE_PORT" || return 1
  if command -v kcat >/dev/null 2>&1; then
    # Captured first: `kcat | grep -q` could fail under pipefail when grep exits early.
    out="$(kcat -b "$HOST:$NODE_PORT" -L -m 5 2>/dev/null)" || return 1
    [[ "$out" == *"broker $NODE_ID at $HOST:$NODE_PORT"* ]]
  else
    broker_api_versions "$HOST:$NODE_PORT" >/dev/null 2>&1
  fi
}

# Cluster ready = the metadata lists all three brokers.
kafka_cluster_answers() {
  local out n
  if command -v kcat >/dev/null 2>&1; then
    out="$(kcat -b "$(broker_list 3)" -L -m 5 2>/dev/null)" || return 1
    for n in 1 2 3; do
      [[ "$out" == *"broker $n at $HOST:$((KAFKA_PORT + 100 * (n - 1)))"* ]] || return 1
    done
  else
    out="$(broker_api_versions "$(broker_list 3)" 2>/dev/null)" || return 1
    for n in 1 2 3; do
      [[ "$out" == *"(id: $n rack"* ]] || return 1
    done
  fi
}

# Poll until all three cluster nodes are in the metadata; fail fast if a node died.
wait_cluster() {
  local deadline=$((SECONDS + READY_TIMEOUT)) n
  while ! kafka_cluster_answers; do
    for n in 1 2 3; do
      select_node 3 "$n"
      if ! node_alive; then
        echo "services: error: $NODE_NAME exited while the cluster formed; last lines of $(rel "$NODE_LOG"):" >&2
        tail -n 20 "$NODE_LOG" >&2 2>/dev/null || true
        exit 1
      fi
    done
    ((SECONDS < deadline)) || die "kafka: the metadata did not list all three brokers within ${READY_TIMEOUT}s; see $(rel "$KAFKA_CLUSTER_HOME")/node-*/logs/server.log"
    sleep 0.5
  done
}

kafka_version() {
  local v=""
  # `|| true`: a log without the line yet (a node just started) must not end the script.
  if [[ -f "$NODE_LOG" ]]; then
    v="$(grep -o 'Kafka version: [^ ]*' "$NODE_LOG" | tail -n 1 | cut -d' ' -f3)" || true
  fi
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
  if [[ -f "$FERRET_LOG" ]]; then
    v="$(grep -o 'Starting FerretDB [^ ]*' "$FERRET_LOG" | tail -n 1 | cut -d' ' -f3)" || true
  fi
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
  local mode="$1"
  mkdir -p "$LOCAL"
  cat >"$ENV_FILE.tmp" <<ENV
# Written by scripts/services.sh up; source with: set -a; source .local/services.env; set +a
KAFKA_BROKERS=$(broker_list "$mode")
KAFKA_NODES=$mode
KAFKA_VERSION=$KAFKA_VERSION
MONGODB_URI=$MONGO_URI
# The ports' offset these services run with: scripts/services.sh, called with this file sourced
# (as the tests do), works on the same services.
SERVICES_PORT_OFFSET=$PORT_OFFSET
# The secured listeners of the same nodes. Named LOCAL_* so that sourcing this file does not
# turn security on; to try one, e.g. SASL_SSL with SCRAM:
#   KAFKA_BROKERS=\$LOCAL_KAFKA_SASL_SSL_BROKERS KAFKA_SECURITY_PROTOCOL=SASL_SSL
#   KAFKA_SASL_MECHANISM=SCRAM-SHA-512 KAFKA_SASL_USERNAME=\$LOCAL_KAFKA_SASL_USERNAME
#   KAFKA_SASL_PASSWORD=\$LOCAL_KAFKA_SASL_PASSWORD KAFKA_SSL_CA_LOCATION=\$LOCAL_KAFKA_SSL_CA_LOCATION
# SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512):
LOCAL_KAFKA_SASL_SSL_BROKERS=$(broker_list "$mode" "$SASL_SSL_PORT_DELTA")
# SSL with a client certificate (mutual TLS):
LOCAL_KAFKA_SSL_BROKERS=$(broker_list "$mode" "$SSL_PORT_DELTA")
# SASL_SSL whose sessions last 5 s (connections.max.reauth.ms), for re-authentication; PLAIN
# and SCRAM-SHA-512 only:
LOCAL_KAFKA_SASL_SSL_SHORT_SESSION_BROKERS=$(broker_list "$mode" "$SASL_SHORT_PORT_DELTA")
LOCAL_KAFKA_SASL_USERNAME=$SASL_USER
LOCAL_KAFKA_SASL_PASSWORD=$(<"$SECURITY_DIR/sasl-password")
LOCAL_KAFKA_SSL_CA_LOCATION=$SECURITY_DIR/ca.pem
LOCAL_KAFKA_SSL_CERTIFICATE_LOCATION=$SECURITY_DIR/client.pem
LOCAL_KAFKA_SSL_KEY_LOCATION=$SECURITY_DIR/client.key
ENV
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

mode_name() { if (($1 == 1)); then echo "1 node"; else echo "3 nodes"; fi; }

# What the nodes in the given slots run, e.g. "Kafka 3.9.2 (1 node)", one phrase per version and
# mode, for messages.
slots_description() {
  local s out=()
  for s in "$@"; do
    out+=("$(slot_label "$s") ($(mode_name "$(slot_mode "$s")"))")
  done
  printf '%s\n' "${out[@]}" | sort -u | paste -sd, - | sed 's/,/, /g'
}

# --- Commands -------------------------------------------------------------------------------
cmd_up() {
  local mode version n s p ferret_running=0 running=() missing=() stray=() started=() old=()
  take_lock
  mode="$(wanted_mode)"
  version="$(wanted_version)"
  use_version "$version"
  # Kafka 3.9.2 from the layout before per-version folders is moved into its folder first; when
  # it is the version asked for and still runs, it is stopped for that (once).
  if [[ "$version" == "$KAFKA_OLD_LAYOUT_VERSION" ]] && old_layout; then
    for s in $(live_slots); do
      [[ "$(config_version "$(slot_config "$s")")" == old-layout ]] && old+=("$s")
    done
    if ((${#old[@]} > 0)); then
      say "kafka: stopping $(slots_description "${old[@]}"), which runs from the layout before per-version folders, to move its storage"
      stop_slots "${old[@]}"
    fi
  fi
  migrate_old_layout

  for n in $(node_ids "$mode"); do
    select_node "$mode" "$n"
    if node_alive; then running+=("$n"); else missing+=("$n"); fi
  done
  # Every other live node (the other mode, another version) is stopped before ours start.
  for s in $(live_slots); do
    if [[ "$(slot_mode "$s")" == "$mode" && " ${running[*]} " == *" $(slot_node "$s") "* ]]; then
      continue
    fi
    stray+=("$s")
  done
  pid_alive "$FERRET_PID" ferretdb-runner && ferret_running=1

  # Check every port before starting (or stopping) anything, so a conflict fails before minutes
  # of setup. Ports held by a stray node (node N uses the same ports in every mode and version)
  # are freed by the switch below; so is its pid file, which a node of the same mode shares.
  for n in "${missing[@]}"; do
    select_node "$mode" "$n"
    local held=0
    for s in "${stray[@]}"; do
      [[ "$(slot_node "$s")" == "$n" ]] && held=1
    done
    ((held)) && continue
    await_exit "$NODE_PID"
    rm -f "$NODE_PID"
    require_free_port "$NODE_NAME" "$NODE_PORT"
    require_free_port "$NODE_NAME (controller)" "$NODE_CONTROLLER_PORT"
    for p in "${NODE_SECURED_PORTS[@]}"; do require_free_port "$NODE_NAME (secured listener)" "$p"; done
  done
  if ((!ferret_running)); then
    await_exit "$FERRET_PID"
    rm -f "$FERRET_PID"
    require_free_port ferretdb "$MONGO_PORT"
  fi

  ensure_kcat
  if ((${#missing[@]} > 0 || !ferret_running)); then
    require_tools
  fi
  # Jars fetched and storage formatted before a switch stops anything, to keep Kafka's downtime
  # short (every mode and version has its own jars and storage).
  # The TLS material and SASL password (cheap when they exist; services.env names them).
  ensure_security
  if ((${#missing[@]} > 0)); then
    require_java
    fetch_kafka_libs
    # On a fresh machine nothing runs from libs yet; otherwise new jars wait for the switch.
    [[ -f "$KAFKA_LIBS_MARKER" ]] || install_kafka_libs
    for n in "${missing[@]}"; do
      select_node "$mode" "$n"
      prepare_node
    done
  fi

  local from
  if ((${#stray[@]} > 0)); then
    from="$(slots_description "${stray[@]}")"
    say "kafka: switching from $from to Kafka $version ($(mode_name "$mode"); KAFKA_VERSION=$version BROKERS=$mode): stopping the running node(s) first"
    stop_slots "${stray[@]}"
    migrate_old_layout
  elif [[ "$(current_mode)" != "$mode" || "$(current_version)" != "$version" ]]; then
    say "kafka: switching to Kafka $version ($(mode_name "$mode"); KAFKA_VERSION=$version BROKERS=$mode)"
  fi
  mkdir -p "$KAFKA_HOME"
  echo "$mode" >"$KAFKA_MODE_FILE"
  echo "$version" >"$KAFKA_VERSION_FILE"

  # Kafka first: it boots while FerretDB is being built.
  if ((${#missing[@]} > 0)); then
    install_kafka_libs
    for n in "${missing[@]}"; do
      select_node "$mode" "$n"
      start_node
      started+=("$NODE_NAME")
    done
  fi
  if ((!ferret_running)); then
    ensure_ferretdb_binary
    start_ferretdb
    started+=(ferretdb)
  fi

  for n in $(node_ids "$mode"); do
    select_node "$mode" "$n"
    wait_ready "$NODE_NAME" "$HOST:$NODE_PORT" kafka_answers "$NODE_PID" "$NODE_MARKER" "$NODE_LOG" "$NODE_CONSOLE"
    ensure_scram_users
    if [[ " ${running[*]} " == *" $n "* ]]; then
      say "$NODE_NAME: already running (pid $(<"$NODE_PID")) on $HOST:$NODE_PORT, Kafka $(kafka_version)"
    else
      say "$NODE_NAME: ready on $HOST:$NODE_PORT (pid $(<"$NODE_PID"), Kafka $(kafka_version))"
    fi
  done
  if ((mode == 3)); then
    wait_cluster
    ((${#missing[@]} == 0)) || say "kafka: cluster ready, brokers 1, 2, 3 in the metadata"
  fi

  wait_ready ferretdb "$HOST:$MONGO_PORT" mongo_answers "$FERRET_PID" ferretdb-runner "$FERRET_LOG"
  if ((ferret_running)); then
    say "ferretdb: already running (pid $(<"$FERRET_PID")) on $HOST:$MONGO_PORT"
  else
    say "ferretdb: ready on $HOST:$MONGO_PORT (pid $(<"$FERRET_PID"), FerretDB $(ferretdb_version))"
  fi

  write_env "$mode"
  ((${#started[@]} == 0)) || say "wrote $(rel "$ENV_FILE") (KAFKA_BROKERS=$(broker_list "$mode") KAFKA_VERSION=$version MONGODB_URI=$MONGO_URI)"
}

cmd_down() {
  local mode n live=()
  take_lock
  mode="$(current_mode)"
  use_version "$(current_version)"
  # FerretDB first: it has no dependency on Kafka, and Kafka's shutdown is the slower one.
  stop_pid ferretdb "$FERRET_PID" ferretdb-runner "$MONGO_PORT"
  # Every live node, whatever its mode and version, all at once; every node of the current mode
  # and version is reported, running or not.
  mapfile -t live < <(live_slots)
  ((${#live[@]} == 0)) || stop_slots "${live[@]}"
  for n in $(node_ids "$mode"); do
    select_node "$mode" "$n"
    [[ " ${live[*]} " == *" $NODE_NAME "* ]] || stop_pid "$NODE_NAME" "$NODE_PID" "$NODE_MARKER" "$NODE_PORT"
  done
}

# kill-broker, start-broker and broker-pid work on node N of the current mode and version;
# BROKERS and KAFKA_VERSION, when given, must name those. Sets NODE_* for the node.
select_existing_node() {
  local n="$1" mode version
  mode="$(current_mode)"
  version="$(current_version)"
  if [[ -n "$WANT_BROKERS" && "$WANT_BROKERS" != "$mode" ]]; then
    echo "services: error: BROKERS=$WANT_BROKERS, but Kafka's current mode is $(mode_name "$mode"); switch first with: make up BROKERS=$WANT_BROKERS" >&2
    exit 2
  fi
  if [[ -n "$WANT_VERSION" && "$WANT_VERSION" != "$version" ]]; then
    echo "services: error: KAFKA_VERSION=$WANT_VERSION, but the current Kafka is $version; switch first with: make up KAFKA_VERSION=$WANT_VERSION" >&2
    exit 2
  fi
  if [[ ! "$n" =~ ^[0-9]+$ || " $(node_ids "$mode") " != *" $n "* ]]; then
    echo "services: error: no Kafka node '$n': the current mode has $(mode_name "$mode") (ids: $(node_ids "$mode"))" >&2
    exit 2
  fi
  use_version "$version"
  select_node "$mode" "$n"
}

# SIGKILL node N (a crash, for failover tests); prints its pid on stdout.
cmd_kill_broker() {
  local pid i
  select_existing_node "$1"
  take_lock
  node_alive || die "$NODE_NAME is not running"
  pid="$(<"$NODE_PID")"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_gone "$pid" && break
    sleep 0.1
  done
  pid_gone "$pid" || die "$NODE_NAME: pid $pid is still alive after SIGKILL"
  rm -f "$NODE_PID"
  say "$NODE_NAME: killed pid $pid (SIGKILL); bring it back with: scripts/services.sh start-broker $NODE_ID (or up)" >&2
  echo "$pid"
}

# Start node N of the current mode and version (FerretDB and the other nodes are left as they are) and wait
# until it answers. In a cluster, the node answers once a controller quorum (2 of 3) is up.
cmd_start_broker() {
  local n="$1" p
  select_existing_node "$n"
  take_lock
  if node_alive; then
    say "$NODE_NAME: already running (pid $(<"$NODE_PID")) on $HOST:$NODE_PORT"
    return 0
  fi
  await_exit "$NODE_PID"
  rm -f "$NODE_PID"
  require_free_port "$NODE_NAME" "$NODE_PORT"
  require_free_port "$NODE_NAME (controller)" "$NODE_CONTROLLER_PORT"
  for p in "${NODE_SECURED_PORTS[@]}"; do require_free_port "$NODE_NAME (secured listener)" "$p"; done
  ensure_kcat
  command -v java >/dev/null 2>&1 || die "java is missing (a JDK 17+ runs Kafka)"
  require_java
  ensure_kafka_libs
  ensure_security
  prepare_node
  start_node
  wait_ready "$NODE_NAME" "$HOST:$NODE_PORT" kafka_answers "$NODE_PID" "$NODE_MARKER" "$NODE_LOG" "$NODE_CONSOLE"
  say "$NODE_NAME: ready on $HOST:$NODE_PORT (pid $(<"$NODE_PID"), Kafka $(kafka_version))"
}

cmd_broker_pid() {
  select_existing_node "$1"
  node_alive || die "$NODE_NAME is not running"
  cat "$NODE_PID"
}

# Exit 0 when every node of the current Kafka mode and version and FerretDB run (CI leaves such
# services up).
cmd_running() {
  local mode n down=()
  mode="$(current_mode)"
  use_version "$(current_version)"
  for n in $(node_ids "$mode"); do
    select_node "$mode" "$n"
    node_alive || down+=("$NODE_NAME")
  done
  pid_alive "$FERRET_PID" ferretdb-runner || down+=(ferretdb)
  if ((${#down[@]} == 0)); then
    say "running: kafka (Kafka $KAFKA_VERSION, $(mode_name "$mode")) and ferretdb"
    return 0
  fi
  say "not running: ${down[*]}"
  return 1
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
  local mode version n s
  mode="$(current_mode)"
  version="$(current_version)"
  use_version "$version"
  say "kafka: Kafka $version, mode $(mode_name "$mode") (KAFKA_VERSION=$version BROKERS=$mode; remembered in $(rel "$KAFKA_VERSION_FILE") and $(rel "$KAFKA_MODE_FILE"))"
  for n in $(node_ids "$mode"); do
    select_node "$mode" "$n"
    status_line "$NODE_NAME" "$NODE_PID" "$NODE_MARKER" "$NODE_PORT" kafka_answers "Kafka $(kafka_version) (KRaft)" "$NODE_LOG" || true
  done
  for s in $(live_slots); do
    if [[ "$(slot_mode "$s")" == "$mode" && "$(config_version "$(slot_config "$s")")" == "$version" ]]; then
      continue
    fi
    say "$s: runs $(slot_label "$s") ($(mode_name "$(slot_mode "$s")")), pid $(<"$(slot_pidfile "$s")"), but the current setting is Kafka $version ($(mode_name "$mode")); scripts/services.sh down stops it, up switches"
  done
  status_line ferretdb "$FERRET_PID" ferretdb-runner "$MONGO_PORT" mongo_answers "FerretDB $(ferretdb_version) (SQLite)" "$FERRET_LOG" || true
  if [[ -f "$ENV_FILE" ]]; then
    say "env: $(rel "$ENV_FILE"): $(grep -v '^#' "$ENV_FILE" | paste -sd ' ')"
  fi
}

usage() {
  echo "usage: $0 up [--brokers 1|3] [--kafka-version V] | down | status | running | kill-broker N | start-broker N | broker-pid N" >&2
  exit 2
}

WANT_BROKERS="${BROKERS:-}"       # empty: the remembered mode
WANT_VERSION="${KAFKA_VERSION:-}" # empty: the remembered version

main() {
  local cmd="${1:-}" arg=""
  (($# == 0)) || shift
  while (($# > 0)); do
    case "$1" in
      --brokers)
        (($# >= 2)) || usage
        WANT_BROKERS="$2"
        shift 2
        ;;
      --brokers=*)
        WANT_BROKERS="${1#*=}"
        shift
        ;;
      --kafka-version)
        (($# >= 2)) || usage
        WANT_VERSION="$2"
        shift 2
        ;;
      --kafka-version=*)
        WANT_VERSION="${1#*=}"
        shift
        ;;
      *)
        [[ -z "$arg" ]] || usage
        arg="$1"
        shift
        ;;
    esac
  done
  [[ -z "$WANT_BROKERS" ]] || check_mode "$WANT_BROKERS"
  [[ -z "$WANT_VERSION" ]] || check_version "$WANT_VERSION"
  case "$cmd" in
    up | down | status | running) [[ -z "$arg" ]] || usage ;;
    kill-broker | start-broker | broker-pid) [[ -n "$arg" ]] || usage ;;
  esac
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    running) cmd_running ;;
    kill-broker) cmd_kill_broker "$arg" ;;
    start-broker) cmd_start_broker "$arg" ;;
    broker-pid) cmd_broker_pid "$arg" ;;
    *) usage ;;
  esac
}

main "$@"
