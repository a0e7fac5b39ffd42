#!/usr/bin/env python3
"""metricsctl's benchmark suite: `make bench` runs it against the local services.

In one run, on the same broker, database and payloads (every topic, group and database is
unique to the run and removed at the end), it measures:

  1. the Python baseline users would otherwise run (bench/baseline/: kafka-python producer,
     kafka-python + pymongo consumer with one insert_one per message);
  2. the ceilings: Kafka write (kcat -P, acks=all, idempotent, per compression codec), Kafka
     read (kcat -C -e), database (pymongo insert_many, batches of 1,000, unordered, unique
     index on message_uuid);
  3. metricsctl: producer throughput per codec against kcat with the same settings (default
     log level and RUST_LOG=warn; `--compression CODEC` once `produce --help` offers it),
     consumer catch-up on a preloaded three-partition topic (two backlog sizes; on the large
     one also with `--metrics-addr` on and `/metrics` scraped every second, as a ratio to off),
     latency at a steady rate, peak RSS and CPU seconds per 1,000 messages of every process;

then writes a Markdown report (BENCHMARKS.md by default) with the machine, the versions, the
exact commands, the raw figures, the ratios and the goals. On a missed goal it profiles the
metricsctl process briefly (perf when hardware counters work, else callgrind) and adds the top
functions. The machine is assumed noisy: every figure is compared with others measured in the
same run, never with a figure from another run.

    python bench/run.py --scale full|quick|smoke [--bin target/release/metricsctl] [--out FILE]
                        [--codecs none,lz4]   (none,gzip,snappy,lz4,zstd for the full table)

Needs KAFKA_BROKERS and MONGODB_URI (make sources .local/services.env), kcat, GNU time
(/usr/bin/time) and the packages of bench/requirements.txt.
"""

import argparse
import bisect
import importlib.util
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "bench" / "baseline"
PRODUCER_PY = BASELINE / "productor_metrics_iabdXX.py"
CONSUMER_PY = BASELINE / "consumidor_metrics_iabdXX.py"
GNU_TIME = "/usr/bin/time"
WINDOW = 20  # messages per tumbling window, metricsctl's default and the exercise's N
PARTITIONS = 3
# Compression codecs of the producer comparison (librdkafka's `compression.codec` values, the
# same names as metricsctl's `--compression`). Default per scale: smoke runs `none` only.
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
DEFAULT_CODECS = {"full": "none,lz4", "quick": "none,lz4", "smoke": "none"}
# kcat's producer settings in every run and preload: acks=all and idempotence on, as metricsctl's
# producer (and Java's since 3.0), murmur2 as Java's partitioner; the codec is added per run.
KCAT_PRODUCER = ["-X", "acks=all", "-X", "enable.idempotence=true", "-X", "partitioner=murmur2_random"]

# Counts per scale. full = the sizes the goals are stated for.
SCALES = {
    "full": dict(
        servers=1000, reports=200, backlog=200_000, small_backlog=50_000,
        latency_rate=2000, latency_seconds=60, repeat=3, idle_net=30.0,
        profile_reports=5, profile_backlog=5_000,
    ),
    "quick": dict(
        servers=1000, reports=20, backlog=20_000, small_backlog=5_000,
        latency_rate=2000, latency_seconds=15, repeat=2, idle_net=30.0,
        profile_reports=2, profile_backlog=2_000,
    ),
    "smoke": dict(
        servers=100, reports=10, backlog=1_000, small_backlog=200,
        latency_rate=500, latency_seconds=2, repeat=1, idle_net=30.0,
        profile_reports=0, profile_backlog=0,
    ),
}

GOALS = {
    "catchup": "consumer catch-up ≥ 0.8 × database ceiling (median of catch-ups, each over a ceiling run just before it)",
    "rss": "consumer peak RSS ≤ 64 MiB on the large backlog, flat in the backlog size (large/small ≤ 1.10)",
    "latency": "p99 timestamp_utc → raw received_at ≤ 250 ms at the steady rate",
    "endpoint": "consumer catch-up with `--metrics-addr` on and `/metrics` scraped every second ≥ 0.97 × off",
}
# The endpoint's cost: the scraped runs' best catch-up over the plain runs' best (same backlog).
ENDPOINT_TARGET = 0.97
PRODUCER_TARGET = 1.0


def goal_text(key):
    """A goal's wording; the producer has one goal per codec, keyed `producer:CODEC`."""
    if key.startswith("producer:"):
        codec = key.split(":", 1)[1]
        return (f"producer `{codec}` (--interval 0, default log level) ≥ {PRODUCER_TARGET:.1f} × kcat -P "
                "(same codec, acks=all, idempotent)")
    return GOALS[key]

# Every variable metricsctl reads: removed from its environment so the caller's shell cannot leak in.
METRICSCTL_VARS = [
    "KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID", "MONGODB_URI", "CONNECTION_STRING",
    "MONGODB_DATABASE", "MONGODB_RAW_COLLECTION", "MONGODB_KPI_COLLECTION",
    "MONGODB_DLQ_COLLECTION", "WINDOW_SIZE", "REPORTING_INTERVAL_SECONDS", "SERVER_IDS",
    "METRICS_SUFFIX", "KAFKA_PARTITIONS", "EXIT_WHEN_IDLE_SECONDS", "MAX_MESSAGES",
    "REPORT_COUNT", "SIMULATION_SEED", "KPIS_LIMIT", "RUST_LOG", "KAFKA_COMPRESSION",
    "PRODUCER_DRAIN_TIMEOUT_SECONDS",
]


def say(msg):
    print(f"bench: {msg}", flush=True)


class BenchError(Exception):
    pass


# --- Small helpers --------------------------------------------------------------------------

def fmt_rate(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_s(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}"


def mib(kb):
    return None if kb is None else kb / 1024.0


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def percentile(sorted_xs, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return None
    k = max(1, math.ceil(q * len(sorted_xs)))
    return sorted_xs[k - 1]


def cmd_output(argv, default="unknown"):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        text = (out.stdout or "") + (out.stderr or "")
        return text.strip() or default
    except (OSError, subprocess.TimeoutExpired):
        return default


def proc_cpu_seconds(pid):
    """utime + stime of a live process, in seconds (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def read_pid(path):
    try:
        pid = int(Path(path).read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def parse_gnu_time(path):
    """The fields of `/usr/bin/time -v` that the report uses."""
    r = {"user": None, "sys": None, "rss_kb": None, "exit": None, "signal": None}
    try:
        text = Path(path).read_text()
    except OSError:
        return r
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("User time (seconds):"):
            r["user"] = float(line.split(":")[1])
        elif line.startswith("System time (seconds):"):
            r["sys"] = float(line.split(":")[1])
        elif line.startswith("Maximum resident set size (kbytes):"):
            r["rss_kb"] = int(line.split(":")[1])
        elif line.startswith("Exit status:"):
            r["exit"] = int(line.split(":")[1])
        elif line.startswith("Command terminated by signal"):
            r["signal"] = int(line.rsplit(" ", 1)[1])
    return r


def redact_uri(uri):
    """A connection string with its password masked, for reports and errors."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1****@", str(uri))


def display_argv(argv, env_prefix=None, abbreviations=None):
    """A shell-quoted command line, long arguments shown by a short name, passwords masked."""
    parts = []
    for a in argv:
        if abbreviations and a in abbreviations:
            parts.append(abbreviations[a])
        elif a == "\t":
            parts.append("$'\\t'")
        else:
            parts.append(shlex.quote(redact_uri(a)))
    prefix = " ".join(f"{k}={shlex.quote(redact_uri(v))}" for k, v in (env_prefix or {}).items())
    return (prefix + " " if prefix else "") + " ".join(parts)


# --- A measured process ---------------------------------------------------------------------

class Scraper:
    """GETs `/metrics` on a port every second from a thread, as Prometheus would, until stopped;
    counts the scrapes answered with 200."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.done = threading.Event()
        self.answered = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        import urllib.request
        while not self.done.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                    self.answered += response.status == 200
            except OSError:
                pass  # not listening yet, or already gone

    def stop(self):
        self.done.set()
        self.thread.join(timeout=10)
        return self.answered


class Measured:
    """A process run under GNU time (peak RSS, CPU), with the broker's and the database's CPU
    over the same span. Started in its own session so that only it is ever signalled."""

    def __init__(self, bench, label, argv, *, env=None, cwd=None, stdin=None, stdout=None,
                 stderr=None, display=None, messages=None):
        self.bench = bench
        self.label = label
        self.messages = messages
        self.display = display or display_argv(argv)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
        self.timefile = bench.work / f"{slug}-{uuid.uuid4().hex[:6]}.time"
        self.servers_before = bench.server_cpu()
        self.t0 = time.monotonic()
        self.popen = subprocess.Popen(
            [GNU_TIME, "-v", "-o", str(self.timefile)] + [str(a) for a in argv],
            env=env, cwd=cwd or bench.work, stdin=stdin or subprocess.DEVNULL,
            stdout=stdout or subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL,
            start_new_session=True,
        )
        bench.live.append(self)
        self.result = None

    def elapsed(self):
        return time.monotonic() - self.t0

    def poll(self):
        return self.popen.poll()

    def child_pid(self):
        """The measured program's pid (the child of GNU time)."""
        pid = self.popen.pid
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            return int(kids[0]) if kids else None
        except (OSError, ValueError):
            return None

    def terminate(self):
        pid = self.child_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    def kill(self):
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except OSError:
            pass

    def wait(self, timeout):
        # A blocking wait, with a timer that kills the process past its timeout: Popen.wait
        # with a timeout polls with sleeps of up to 50 ms, so a 0.3 s producer run was timed
        # to the next 50 ms tick (runs clustered at 0.27, 0.32, 0.37 s), a coarser step than
        # the ratios the goals compare.
        timed_out = threading.Event()

        def expire():
            timed_out.set()
            self.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            self.popen.wait()
        finally:
            timer.cancel()
        wall = self.elapsed()
        if timed_out.is_set():
            raise BenchError(f"{self.label}: still running after {timeout:.0f} s, killed")
        if self in self.bench.live:
            self.bench.live.remove(self)
        after = self.bench.server_cpu()
        r = parse_gnu_time(self.timefile)
        r["wall"] = wall
        r["label"] = self.label
        r["command"] = self.display
        r["messages"] = self.messages
        r["rc"] = self.popen.returncode
        for name in ("kafka", "ferretdb"):
            b, a = self.servers_before.get(name), after.get(name)
            r[f"{name}_cpu"] = (a - b) if (a is not None and b is not None) else None
        self.result = r
        return r


def cpu_per_1k(r, messages=None):
    n = messages if messages is not None else r.get("messages")
    if not n or r.get("user") is None:
        return None
    return (r["user"] + r["sys"]) / n * 1000.0


# --- The benchmark --------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.scale = args.scale
        self.cfg = dict(SCALES[args.scale])
        if args.repeat:
            self.cfg["repeat"] = args.repeat
        self.bin = str(Path(args.bin).resolve())
        self.codecs = parse_codecs(args.codecs or DEFAULT_CODECS[args.scale])
        self.compression_flag = None  # whether `metricsctl produce` takes --compression: see producers()
        self.brokers = os.environ.get("KAFKA_BROKERS", "127.0.0.1:29092")
        self.mongodb_uri = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017")
        self.run_id = datetime.now(timezone.utc).strftime("%H%M%S") + uuid.uuid4().hex[:4]
        self.work = Path(tempfile.mkdtemp(prefix=f"metricsctl-bench-{self.run_id}-"))
        self.topics = []
        self.databases = []
        self.live = []
        self.results = {"producer": [], "ceilings": [], "catchup": [], "latency": None,
                        "profile": [], "notes": []}
        self.commands = []
        self.started = datetime.now(timezone.utc)
        self.load_start = os.getloadavg()
        # Every live pid file of the services (one Kafka node, or several in cluster mode).
        run_dir = ROOT / ".local/run"
        self.server_pids = {
            "kafka": [p for p in (read_pid(f) for f in sorted(run_dir.glob("kafka*.pid"))) if p],
            "ferretdb": [p for p in (read_pid(f) for f in sorted(run_dir.glob("ferretdb*.pid"))) if p],
        }
        # Services started some other way: their pids given explicitly.
        for name, given in (("kafka", args.kafka_pids), ("ferretdb", args.ferretdb_pids)):
            if given:
                self.server_pids[name] = [int(x) for x in given.split(",") if x.strip()]

        from pymongo import MongoClient

        self.admin_call(lambda admin: admin.list_topics())  # fails early when Kafka is not there
        self.mongo = MongoClient(self.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=10_000)

    # Kafka clients are made per call: a broker closes a connection idle for 10 minutes
    # (connections.max.idle.ms), and some phases leave Kafka alone for longer than that.
    def admin_call(self, fn):
        from kafka import KafkaAdminClient
        admin = KafkaAdminClient(bootstrap_servers=self.brokers.split(","), client_id="metricsctl-bench")
        try:
            return fn(admin)
        finally:
            admin.close()

    # names and resources ------------------------------------------------------------------
    def topic(self, label, create=True):
        name = f"bench-{self.run_id}-{label}"
        self.topics.append(name)
        if create:
            from kafka.admin import NewTopic
            self.admin_call(lambda a: a.create_topics(
                [NewTopic(name=name, num_partitions=PARTITIONS, replication_factor=1)], timeout_ms=30_000))
            self.wait_topic_ready(name)
        return name

    def wait_topic_ready(self, name, limit=30.0):
        """Until every broker's metadata shows a leader for every partition of the topic."""
        deadline = time.monotonic() + limit
        pending = self.brokers.split(",")
        while time.monotonic() < deadline:
            still = []
            for broker in pending:
                out = subprocess.run(["kcat", "-b", broker, "-L", "-t", name, "-m", "5"],
                                     capture_output=True, text=True)
                leaders = re.findall(r"partition \d+, leader (-?\d+)", out.stdout)
                if not (len(leaders) == PARTITIONS and all(int(x) >= 0 for x in leaders)):
                    still.append(broker)
            if not still:
                return
            pending = still
            time.sleep(0.2)
        raise BenchError(f"topic {name} has no leaders on {', '.join(pending)} after {limit:.0f} s")

    def database(self, label):
        name = f"bench_{self.run_id}_{label}".replace("-", "_")
        self.databases.append(name)
        return name

    def group(self, label):
        return f"bench-{self.run_id}-{label}"

    def topic_count(self, name):
        from kafka import KafkaConsumer, TopicPartition
        meta = KafkaConsumer(bootstrap_servers=self.brokers.split(","), client_id="metricsctl-bench-meta",
                             enable_auto_commit=False)
        try:
            meta.topics()  # loads metadata
            parts = meta.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, p) for p in sorted(parts)]
            if not tps:
                return 0
            begin = meta.beginning_offsets(tps)
            end = meta.end_offsets(tps)
            return sum(end[tp] - begin[tp] for tp in tps)
        finally:
            meta.close()

    def server_cpu(self):
        out = {}
        for name, pids in self.server_pids.items():
            xs = [proc_cpu_seconds(p) for p in pids]
            out[name] = sum(xs) if xs and None not in xs else None
        return out

    def metricsctl_env(self, rust_log=None):
        env = {k: v for k, v in os.environ.items() if k not in METRICSCTL_VARS}
        if rust_log:
            env["RUST_LOG"] = rust_log
        return env

    def log_file(self, label):
        return open(self.work / f"{re.sub(r'[^A-Za-z0-9]+', '-', label)}.log", "wb")

    def cleanup(self):
        for m in list(self.live):
            m.kill()
        if self.args.keep:
            say(f"--keep: leaving topics {self.topics}, databases {self.databases}, {self.work}")
            return
        for db in self.databases:
            try:
                self.mongo.drop_database(db)
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                say(f"could not drop database {db}: {e}")
        existing = set()
        try:
            existing = set(self.admin_call(lambda a: a.list_topics()))
        except Exception:  # noqa: BLE001
            existing = set(self.topics)
        gone = [t for t in self.topics if t in existing]
        if gone:
            try:
                self.admin_call(lambda a: a.delete_topics(gone, timeout_ms=30_000))
            except Exception as e:  # noqa: BLE001
                say(f"could not delete topics {gone}: {e}")
        try:
            self.mongo.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.work, ignore_errors=True)
        say(f"removed {len(gone)} topics and {len(self.databases)} databases of run {self.run_id}")

    # environment ----------------------------------------------------------------------------
    def bin_display(self):
        rel = os.path.relpath(self.bin, ROOT)
        return self.bin if rel.startswith("..") else rel

    def kafka_version_of_pid(self):
        """The version of the running broker, from the kafka_<scala>-<version>.jar on its class path."""
        for pid in self.server_pids["kafka"]:
            try:
                args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
                cp = args[args.index("-cp") + 1]
            except (OSError, ValueError, IndexError):
                continue
            for d in cp.split(":"):
                for jar in Path(d.rstrip("*")).glob("kafka_2.*-*.jar"):
                    m = re.match(r"kafka_2\.\d+-(.+)\.jar$", jar.name)
                    if m:
                        return re.match(r"(.*)", f"Kafka {m.group(1)}")
        return None

    def collect_environment(self):
        meminfo = Path("/proc/meminfo").read_text()
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
        cpu = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        status = cmd_output(["bash", str(ROOT / "scripts/services.sh"), "status"])
        kafka_v = self.kafka_version_of_pid() or re.search(r"(?:version|seen:) (Kafka [^ )]+)", status)
        ferret_v = re.search(r"version (FerretDB [^ ]+)", status)
        import kafka as kafka_python
        import pymongo
        try:
            build = self.mongo.admin.command("buildInfo")
            wire = f"MongoDB {build.get('version')} wire compatibility"
        except Exception:  # noqa: BLE001
            wire = "unknown"
        kcat_v = re.search(r"Version (\S+) .*?librdkafka (\S+)", cmd_output(["kcat", "-V"]), re.S)
        git = lambda *a: cmd_output(["git", "-C", str(ROOT), *a], default="")  # noqa: E731
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock").splitlines()]
        self.env = {
            "cores": os.cpu_count(),
            "cpu": cpu,
            "memory_gib": mem_kb / 1024 / 1024,
            "kernel": platform.release(),
            "os": cmd_output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
            "kafka": kafka_v.group(1) if kafka_v else "unknown",
            "ferretdb": (ferret_v.group(1) if ferret_v else "FerretDB") + f" (SQLite backend; reports {wire})",
            "rustc": cmd_output(["rustc", "--version"]),
            "python": platform.python_version(),
            "kafka-python": kafka_python.__version__,
            "pymongo": pymongo.version,
            "kcat": f"{kcat_v.group(1)} (librdkafka {kcat_v.group(2)})" if kcat_v else "unknown",
            "gnu_time": "GNU time " + cmd_output(["dpkg-query", "-W", "-f=${Version}", "time"]),
            "metricsctl_bin": self.bin_display(),
            "metricsctl_built": datetime.fromtimestamp(os.path.getmtime(self.bin), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "git_head": git("rev-parse", "--short", "HEAD") or "unknown",
            "git_subject": git("log", "-1", "--format=%s"),
            "dirty": dirty,
            "source": self.args.source,
        }

    # payloads -------------------------------------------------------------------------------
    def make_payloads(self):
        """The messages every producer-side ceiling and the backlog use: drawn by the
        baseline producer's own generate_metric, seeded, as `key<TAB>json` lines."""
        spec = importlib.util.spec_from_file_location("baseline_producer", PRODUCER_PY)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        random.seed(20261126)
        self.server_ids = [f"srv{i:04d}" for i in range(1, self.cfg["servers"] + 1)]
        self.servers_arg = ",".join(self.server_ids)
        n_total = max(self.cfg["servers"] * self.cfg["reports"], self.cfg["backlog"])
        self.payload_file = self.work / "payloads.tsv"
        sizes = []
        with open(self.payload_file, "w") as f:
            i = 0
            while i < n_total:
                for sid in self.server_ids:
                    if i >= n_total:
                        break
                    body = json.dumps(mod.generate_metric(sid))
                    sizes.append(len(body))
                    f.write(f"{sid}\t{body}\n")
                    i += 1
        self.payload_bytes = statistics.mean(sizes)
        self.small_file = self.work / "payloads-small.tsv"
        self.profile_file = self.work / "payloads-profile.tsv"
        with open(self.payload_file) as src:
            lines = src.readlines()
        self.small_file.write_text("".join(lines[: self.cfg["small_backlog"]]))
        if self.cfg["profile_backlog"]:
            self.profile_file.write_text("".join(lines[: self.cfg["profile_backlog"]]))
        say(f"{n_total:,} payloads generated ({self.payload_bytes:.0f} bytes of JSON on average), "
            f"{len(self.server_ids)} servers")

    def kcat_produce(self, label, topic, payloads, messages, codec="none"):
        """kcat -P of `payloads` (key<TAB>value lines) into `topic`, acks=all and idempotent
        (KCAT_PRODUCER), in `codec`; checks that the topic then holds exactly `messages`."""
        argv = ["kcat", "-P", "-b", self.brokers, "-t", topic, "-K", "\t",
                *KCAT_PRODUCER, "-X", f"compression.codec={codec}"]
        display = display_argv(argv) + f" < {payloads.name}"
        with open(payloads, "rb") as stdin, self.log_file(label) as log:
            m = Measured(self, label, argv, stdin=stdin, stderr=log, display=display, messages=messages)
            r = m.wait(timeout=600)
        self.check_exit(r, log.name)
        got = self.topic_count(topic)
        if got != messages:
            raise BenchError(f"{label}: topic {topic} holds {got} messages, expected {messages}")
        return r

    def check_exit(self, r, log_path=None):
        if r.get("rc") != 0:
            tail = ""
            if log_path:
                try:
                    tail = "\n    " + "\n    ".join(Path(log_path).read_text(errors="replace").splitlines()[-8:])
                except OSError:
                    pass
            raise BenchError(f"{r['label']} exited with {r.get('rc')} (signal {r.get('signal')}): {r['command']}{tail}")

    # 1. producers -----------------------------------------------------------------------------
    def metricsctl_has_compression(self):
        """Whether `metricsctl produce` takes `--compression` (the idempotent producer has it;
        the `kafka`-crate one refuses it as an unknown argument)."""
        try:
            out = subprocess.run([self.bin, "produce", "--help"], capture_output=True, text=True, timeout=30,
                                 env=self.metricsctl_env())
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BenchError(f"{self.bin} produce --help: {e}")
        text = (out.stdout or "") + (out.stderr or "")
        if "--brokers" not in text:
            raise BenchError(f"{self.bin} produce --help printed no usage (exit {out.returncode}): {text[:300]!r}")
        return re.search(r"--compression\b", text) is not None

    def producer_runs(self):
        """(label, kind, codec) of one repeat: per codec kcat, then metricsctl at both log levels;
        the baseline once (it has no such settings), last."""
        runs = []
        for codec in self.codecs:
            runs.append((f"kcat -P {codec} (acks=all, idempotent)", "kcat", codec))
            for kind, level in (("info", "default log level"), ("warn", "RUST_LOG=warn")):
                if self.compression_flag:
                    runs.append((f"metricsctl produce --compression {codec} ({level})", kind, codec))
                else:
                    runs.append((f"metricsctl produce [{codec} row] ({level}) (no --compression support)", kind, codec))
        runs.append(("baseline kafka-python producer (reference: acks=1, no key, no compression)", "baseline", None))
        return runs

    def producers(self):
        n = self.cfg["servers"] * self.cfg["reports"]
        abbrev = {self.servers_arg: "$SERVERS"}
        self.backlog_topic = None
        self.compression_flag = self.metricsctl_has_compression()
        if not self.compression_flag:
            self.results["notes"].append(
                "`metricsctl produce --help` offers no `--compression`: metricsctl ran without it (so uncompressed) in "
                "every codec's rows, marked \"(no --compression support)\"; those rows compare it with kcat in that codec.")
        say(f"producers: codecs {', '.join(self.codecs)}; metricsctl produce "
            + ("takes --compression" if self.compression_flag else "has no --compression: run without it"))
        for rep in range(1, self.cfg["repeat"] + 1):
            for name, kind, codec in self.producer_runs():
                topic = self.topic(f"p{rep}-{kind}" + (f"-{codec}" if codec else ""))
                label = f"{name} #{rep}"
                if kind == "kcat":
                    r = self.kcat_produce(label, topic, self.payload_file, n, codec=codec)
                    if self.backlog_topic is None and codec == "none" and n >= self.cfg["backlog"]:
                        self.backlog_topic = topic  # reused as the consumer backlog
                elif kind in ("info", "warn"):
                    argv = [self.bin, "produce", "--brokers", self.brokers, "--topic", topic,
                            "--servers", self.servers_arg, "--interval", "0",
                            "--count", str(self.cfg["reports"])]
                    if self.compression_flag:
                        argv += ["--compression", codec]
                    env_prefix = {"RUST_LOG": "warn"} if kind == "warn" else {}
                    with self.log_file(label) as log:
                        m = Measured(self, label, argv, env=self.metricsctl_env("warn" if kind == "warn" else None),
                                     stderr=log, display=display_argv(argv, env_prefix, abbrev) + " 2> produce.log",
                                     messages=n)
                        r = m.wait(timeout=1800)
                    self.check_exit(r, log.name)
                else:
                    argv = [sys.executable, PRODUCER_PY, "--brokers", self.brokers, "--topic", topic,
                            "--servers", self.servers_arg, "--interval", "0", "--count", str(self.cfg["reports"])]
                    with self.log_file(label) as log:
                        m = Measured(self, label, argv, stdout=log, stderr=log, messages=n,
                                     display=display_argv([".local/bench-venv/bin/python", os.path.relpath(PRODUCER_PY, ROOT)] + argv[2:], None, abbrev) + " > producer.log")
                        r = m.wait(timeout=3600)
                    self.check_exit(r, log.name)
                got = self.topic_count(topic)
                if got != n:
                    raise BenchError(f"{label}: topic {topic} holds {got} messages, expected {n}")
                r["kind"] = kind
                r["codec"] = codec
                r["repeat"] = rep
                r["rate"] = n / r["wall"]
                r["payload_bytes"] = self.sample_size(topic)
                log_bytes = self.topic_log_bytes(topic)
                r["log_bytes_per_msg"] = log_bytes / n if log_bytes is not None else None
                self.results["producer"].append(r)
                say(f"[producer {rep}/{self.cfg['repeat']}] {name}: {n:,} msgs in {r['wall']:.2f} s = "
                    f"{r['rate']:,.0f} msg/s, peak RSS {mib(r['rss_kb']):.1f} MiB, "
                    f"log {fmt_s(r['log_bytes_per_msg'], 0)} B/msg")
                if topic != self.backlog_topic:
                    self.drop_topic(topic)

    def topic_log_bytes(self, topic):
        """Bytes of the topic's log segments (`*.log`) in the local brokers' data folders (under
        .local/kafka): what the codec and the batching leave on disk. None when not every
        partition's folder is there (a broker elsewhere)."""
        pattern = re.compile(re.escape(topic) + r"-\d+$")
        total, found = 0, 0
        try:
            for dirpath, dirnames, filenames in os.walk(ROOT / ".local/kafka"):
                if pattern.match(os.path.basename(dirpath)):
                    found += 1
                    total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in filenames if f.endswith(".log"))
                    dirnames[:] = []
        except OSError:
            return None
        return total if found == PARTITIONS else None

    def sample_size(self, topic, count=200):
        out = subprocess.run(["kcat", "-C", "-b", self.brokers, "-t", topic, "-p", "0", "-o", "beginning",
                              "-c", str(count), "-e", "-q", "-f", "%S\n"], capture_output=True, text=True, timeout=60)
        sizes = [int(x) for x in out.stdout.split() if x.isdigit()]
        return statistics.mean(sizes) if sizes else None

    def drop_topic(self, topic):
        try:
            self.admin_call(lambda a: a.delete_topics([topic], timeout_ms=30_000))
            self.topics.remove(topic)
        except Exception as e:  # noqa: BLE001 - left for the final cleanup
            say(f"could not delete {topic} now ({e}); the cleanup retries")

    # 2. ceilings ------------------------------------------------------------------------------
    def ceilings(self):
        n = self.cfg["backlog"]
        if self.backlog_topic is None:
            self.backlog_topic = self.topic("backlog")
            self.kcat_produce("preload backlog", self.backlog_topic, self.payload_file, n)
        for rep in range(1, self.cfg["repeat"] + 1):
            argv = ["kcat", "-C", "-b", self.brokers, "-t", self.backlog_topic, "-o", "beginning", "-e", "-q"]
            with self.log_file(f"kcat -C -e #{rep}") as log:
                m = Measured(self, f"kcat -C -e #{rep}", argv, stderr=log, display=display_argv(argv) + " > /dev/null",
                             messages=n)
                r = m.wait(timeout=600)
            self.check_exit(r, log.name)
            r.update(kind="kafka-read", repeat=rep, rate=n / r["wall"])
            self.results["ceilings"].append(r)
            say(f"[ceiling {rep}/{self.cfg['repeat']}] Kafka read: {n:,} msgs in {r['wall']:.2f} s = {r['rate']:,.0f} msg/s")
            # The stored shape is the goal's reference: every repeat; the bare one, informative: once.
            for shape in ("stored", "bare") if rep == 1 else ("stored",):
                r = self.db_ceiling_run(f"ceil{rep}_{shape}", shape, f"#{rep}")
                r.update(kind=f"db-{shape}", repeat=rep)
                self.results["ceilings"].append(r)
                say(f"[ceiling {rep}/{self.cfg['repeat']}] database insert_many ({shape} documents): {n:,} docs in "
                    f"{r['inner']['insert_seconds']:.2f} s = {r['rate']:,.0f} docs/s")

    def db_ceiling_run(self, tag, shape, suffix):
        """One run of the database ceiling: the backlog's documents in `shape` inserted with
        pymongo's insert_many into a fresh database, which is dropped after."""
        n = self.cfg["backlog"]
        db = self.database(tag)
        argv = [sys.executable, Path(__file__).resolve(), "db-ceiling", "--uri", self.mongodb_uri,
                "--database", db, "--collection", "raw", "--payloads", self.payload_file,
                "--count", str(n), "--shape", shape, "--topic", self.backlog_topic]
        out_path = self.work / f"dbceiling-{tag}.json"
        with open(out_path, "wb") as out, self.log_file(f"db ceiling {tag}") as log:
            m = Measured(self, f"pymongo insert_many ({shape}) {suffix}", argv, stdout=out, stderr=log, messages=n,
                         display=display_argv([".local/bench-venv/bin/python", "bench/run.py"] + [str(a) for a in argv[2:]]))
            r = m.wait(timeout=1800)
        self.check_exit(r, log.name)
        inner = json.loads(out_path.read_text())
        r.update(rate=n / inner["insert_seconds"], inner=inner)
        if inner["count"] != n:
            raise BenchError(f"database ceiling stored {inner['count']} documents, expected {n}")
        self.mongo.drop_database(db)
        return r

    # 3. consumers -----------------------------------------------------------------------------
    def catchup(self):
        big = self.cfg["backlog"]
        small = self.cfg["small_backlog"]
        self.small_topic = self.topic("backlog-small")
        self.kcat_produce("preload small backlog", self.small_topic, self.small_file, small)
        # metricsctl-lean: the same consumer with `--servers-per-window 0` (KPI windows without
        # their per-server list), to show what that list costs the database.
        # metricsctl-scraped: the same consumer serving `--metrics-addr`, scraped every second; it
        # alternates with plain runs of the same backlog (both best-of), so drift on the shared
        # machine weighs on both.
        plan = [("metricsctl", self.backlog_topic, big), ("metricsctl-scraped", self.backlog_topic, big),
                ("metricsctl-lean", self.backlog_topic, big), ("metricsctl", self.small_topic, small),
                ("baseline", self.backlog_topic, big), ("baseline", self.small_topic, small)]
        for _ in range(1, self.cfg["repeat"]):
            plan += [("metricsctl-scraped", self.backlog_topic, big), ("metricsctl", self.backlog_topic, big)]
        for impl, topic, n in plan:
            paired = None
            if impl == "metricsctl" and n == big:
                # The database's speed drifts on the shared machine (the stored-shape ceiling
                # moved from 3,227 to 9,694 docs/s between runs of one day), so each catch-up of
                # the large backlog gets a ceiling run of its own just before it: their ratio is
                # taken over the same minute of the database.
                paired = self.db_ceiling_run(f"pair{len(self.results['catchup'])}", "stored", "(paired)")
                paired.update(kind="db-stored-paired")
                self.results["ceilings"].append(paired)
                say(f"[catch-up] paired ceiling: {n:,} docs in {paired['inner']['insert_seconds']:.2f} s = "
                    f"{paired['rate']:,.0f} docs/s")
            r = self.consume_backlog(impl, topic, n)
            if paired:
                r["paired_ceiling"] = paired["rate"]
                say(f"[catch-up] × its paired ceiling: {r['rate'] / paired['rate']:.2f}")
            self.results["catchup"].append(r)

    def consumer_argv(self, impl, topic, group, db, idle, max_messages=None):
        """A consumer's command. It stops after `max_messages` (the whole backlog) when given,
        with `--exit-when-idle` only as a safety net: metricsctl at 7d77e30 starts its idle
        clock before it processes a fetched batch, so a batch that takes longer than the idle
        time to store ends the run with messages still unread."""
        common = ["--brokers", self.brokers, "--topic", topic, "--group", group,
                  "--mongodb-uri", self.mongodb_uri, "--database", db,
                  "--raw-collection", "raw", "--kpi-collection", "kpis"]
        if max_messages:
            common += ["--max-messages", str(max_messages)]
        if impl.startswith("metricsctl"):
            argv = [self.bin, "consume", *common, "--dlq-collection", "dlq", "--exit-when-idle", f"{idle:g}"]
            if impl == "metricsctl-lean":
                argv += ["--servers-per-window", "0"]
            if impl == "metricsctl-scraped":
                argv += ["--metrics-addr", f"127.0.0.1:{self.metrics_port()}"]
            return argv, display_argv(argv) + " 2> consume.log"
        argv = [sys.executable, CONSUMER_PY, *common, "--exit-when-idle", f"{idle:g}"]
        shown = [".local/bench-venv/bin/python", os.path.relpath(CONSUMER_PY, ROOT)] + [str(a) for a in argv[2:]]
        return argv, display_argv(shown) + " 2> consumer.log"

    def metrics_port(self):
        """A port nobody listens on now, for `--metrics-addr` (kept for the scraper)."""
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.scrape_port = sock.getsockname()[1]
        return self.scrape_port

    def count(self, db, collection):
        """A collection's document count from collStats. FerretDB (SQLite) answers it from the
        table without reading documents; `count`/`estimatedDocumentCount` read every document
        there (seconds at 200,000), which would load the database being measured."""
        return collection_count(self.mongo[db], collection)

    def consume_backlog(self, impl, topic, n):
        label = f"{impl} consume {n:,} backlog"
        # The run's index in the plan too: a repeat of the same consumer and backlog needs its own
        # group and database, or it would find the backlog already committed.
        run = len(self.results["catchup"])
        tag = f"c-{ {'metricsctl-lean': 'lean', 'metricsctl-scraped': 'scrp'}.get(impl, impl[:4]) }-{n}-{run}"
        db, group = self.database(tag), self.group(tag)
        idle = self.cfg["idle_net"]
        argv, display = self.consumer_argv(impl, topic, group, db, idle, max_messages=n)
        windows = n // WINDOW
        with self.log_file(label) as log:
            env = self.metricsctl_env() if impl.startswith("metricsctl") else None
            m = Measured(self, label, argv, env=env, stderr=log, stdout=log, display=display, messages=n)
            scraper = Scraper(self.scrape_port) if impl == "metricsctl-scraped" else None
            # Nothing is polled while it runs: counting documents loads the database under test
            # (collStats of a 10,000-document KPI collection took 0.35 s of FerretDB in a trial).
            # The consumer stops by itself once it has read the backlog (--max-messages), after
            # storing it: its wall time from start to exit is the catch-up time. A log that stops
            # growing for 120 s means it is stuck.
            last_size, last_change, last_say = -1, time.monotonic(), time.monotonic()
            while m.poll() is None:
                now = time.monotonic()
                size = os.path.getsize(log.name)
                if size != last_size:
                    last_size, last_change = size, now
                if now - last_change > 120:
                    m.kill()
                    raise BenchError(f"{label}: no log output for 120 s, killed; see {log.name}")
                if now - last_say > 30:
                    say(f"[catch-up] {label}: running for {m.elapsed():.0f} s")
                    last_say = now
                time.sleep(0.05 if m.elapsed() < 5 else 0.5)
            r = m.wait(timeout=60)
            if scraper:
                r["scrapes"] = scraper.stop()
                if r["scrapes"] < int(r["wall"]) - 2:
                    raise BenchError(f"{label}: only {r['scrapes']} scrapes answered in {r['wall']:.1f} s")
        self.check_exit(r, log.name)
        raw_exact, kpi_exact = self.count(db, "raw"), self.count(db, "kpis")
        if raw_exact != n or kpi_exact != windows:
            raise BenchError(f"{label}: stored {raw_exact} raw and {kpi_exact} windows, expected {n} and {windows}")
        r.update(impl=impl, backlog=n, done_s=r["wall"], rate=n / r["wall"], kind="catchup")
        say(f"[catch-up] {label}: {n:,} messages and {windows:,} windows stored in {r['wall']:.2f} s = "
            f"{r['rate']:,.0f} msg/s, peak RSS {mib(r['rss_kb']):.1f} MiB, CPU {r['user'] + r['sys']:.2f} s")
        self.mongo.drop_database(db)
        return r

    # 4. latency -------------------------------------------------------------------------------
    def latency(self):
        rate, secs = self.cfg["latency_rate"], self.cfg["latency_seconds"]
        servers = [f"lat{i:02d}" for i in range(1, 21)]
        interval = len(servers) / rate
        reports = max(1, round(rate * secs / len(servers)))
        n = reports * len(servers)
        windows = n // WINDOW
        topic, db, group = self.topic("latency"), self.database("latency"), self.group("latency")
        idle = self.cfg["idle_net"]
        argv, display = self.consumer_argv("metricsctl", topic, group, db, idle, max_messages=n)
        with self.log_file("latency consumer") as clog, self.log_file("latency producer") as plog:
            cons = Measured(self, "metricsctl consume (steady rate)", argv, env=self.metricsctl_env(),
                            stderr=clog, display=display, messages=n)
            self.wait_consumer_ready(db, cons)
            pargv = [self.bin, "produce", "--brokers", self.brokers, "--topic", topic,
                     "--servers", ",".join(servers), "--interval", f"{interval:g}", "--count", str(reports)]
            say(f"[latency] {n:,} messages at {rate:,}/s: {len(servers)} servers every {interval * 1000:g} ms for {secs} s")
            prod = Measured(self, "metricsctl produce (paced, RUST_LOG=warn)", pargv, env=self.metricsctl_env("warn"),
                            stderr=plog, messages=n,
                            display=display_argv(pargv, {"RUST_LOG": "warn"}) + " 2> produce.log")
            pr = prod.wait(timeout=secs * 3 + 60)
            self.check_exit(pr, plog.name)
            say("[latency] producer done; waiting for the consumer to store the rest and exit")
            cr = cons.wait(timeout=idle + 300)
        self.check_exit(cr, clog.name)
        raw_n, kpi_n = self.count(db, "raw"), self.count(db, "kpis")
        if raw_n != n or kpi_n != windows:
            raise BenchError(f"latency: stored {raw_n} raw and {kpi_n} windows, expected {n} and {windows}")
        lat = self.latency_figures(db, n, len(servers))
        lat.update(rate_target=rate, seconds=secs, messages=n, producer=pr, consumer=cr,
                   interval_ms=interval * 1000, servers=len(servers))
        self.results["latency"] = lat
        say(f"[latency] achieved {fmt_rate(lat['achieved_rate'])} msg/s; to raw p50 {fmt_s(lat['raw_p50'], 1)} ms, "
            f"p99 {fmt_s(lat['raw_p99'], 1)} ms; to window p50 {fmt_s(lat['win_p50'], 1)} ms, p99 {fmt_s(lat['win_p99'], 1)} ms")
        self.mongo.drop_database(db)

    def wait_consumer_ready(self, db, cons, limit=20.0):
        """Until the consumer has created its unique index (it does so at start), plus 1 s."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and cons.poll() is None:
            try:
                if any("message_uuid" in str(ix.get("key")) for ix in self.mongo[db]["raw"].list_indexes()):
                    break
            except Exception:  # noqa: BLE001 - collection not there yet
                pass
            time.sleep(0.1)
        else:
            self.results["notes"].append("latency: the consumer's unique index did not appear; started the producer anyway")
        time.sleep(1.0)
        if cons.poll() is not None:
            raise BenchError("latency: the consumer exited before the producer started")

    def latency_figures(self, db, n, per_report):
        d = self.mongo[db]
        raws = list(d["raw"].find({}, {"timestamp_utc": 1, "received_at": 1, "kafka": 1, "_id": 0}))
        kpis = list(d["kpis"].find({}, {"computed_at": 1, "kafka": 1, "_id": 0}))
        out = {"stored": len(raws), "windows": len(kpis), "win_note": None}
        ts, to_raw = [], []
        for doc in raws:
            t = datetime.fromisoformat(doc["timestamp_utc"])
            if t.tzinfo is None:
                t = t.replace(tzinfo=timezone.utc)
            ts.append(t)
            to_raw.append((doc["received_at"] - t).total_seconds() * 1000)
        span = (max(ts) - min(ts)).total_seconds() if ts else 0
        # Reports start on a schedule: the messages of all reports but the last span first → last.
        out["achieved_rate"] = (len(ts) - per_report) / span if span > 0 else None
        s = sorted(to_raw)
        out.update(raw_p50=percentile(s, 0.5), raw_p99=percentile(s, 0.99), raw_max=s[-1] if s else None)
        # Each window's per-partition offset ranges map a message to the window that counted it.
        ranges = {}
        try:
            for k in kpis:
                for p in k["kafka"]["partitions"]:
                    ranges.setdefault(p["partition"], []).append((p["first_offset"], p["last_offset"], k["computed_at"]))
            for v in ranges.values():
                v.sort(key=lambda x: x[0])
            firsts = {p: [x[0] for x in v] for p, v in ranges.items()}
            to_win = []
            for doc, t in zip(raws, ts):
                part, off = doc["kafka"]["partition"], doc["kafka"]["offset"]
                i = bisect.bisect_right(firsts.get(part, []), off) - 1
                if i >= 0 and ranges[part][i][0] <= off <= ranges[part][i][1]:
                    to_win.append((ranges[part][i][2] - t).total_seconds() * 1000)
            w = sorted(to_win)
            out.update(win_count=len(w), win_p50=percentile(w, 0.5), win_p99=percentile(w, 0.99),
                       win_max=w[-1] if w else None)
        except (KeyError, TypeError) as e:
            out.update(win_count=0, win_p50=None, win_p99=None, win_max=None,
                       win_note=f"KPI documents lack kafka.partitions offsets ({e!r}): no window latency")
        return out

    # goals ------------------------------------------------------------------------------------
    def best(self, rows, kind, codec=None):
        xs = [r for r in rows if r.get("kind") == kind and (codec is None or r.get("codec") == codec)]
        return max(xs, key=lambda r: r["rate"]) if xs else None

    def evaluate(self):
        P, C = self.results["producer"], self.results["ceilings"]
        # Per codec: the best run of kcat and of metricsctl at both log levels.
        by_codec = {c: {"kcat": self.best(P, "kcat", c), "info": self.best(P, "info", c),
                        "warn": self.best(P, "warn", c)} for c in self.codecs}
        first = by_codec.get("none") or by_codec[self.codecs[0]]
        # A codec that leaves the log no smaller than `none` did not take effect (or the payloads
        # do not compress): worth a note, not an error.
        for codec, b in by_codec.items():
            for kind in ("kcat", "info"):
                plain = (by_codec.get("none") or {}).get(kind)
                mine = b[kind]
                if codec == "none" or not (plain and mine) or (kind == "info" and not self.compression_flag):
                    continue
                x, y = mine.get("log_bytes_per_msg"), plain.get("log_bytes_per_msg")
                if x is not None and y is not None and x >= 0.95 * y:
                    self.results["notes"].append(
                        f"{mine['label'].rsplit(' #', 1)[0]}: {x:.0f} bytes in the log per message against {y:.0f} "
                        f"uncompressed ({plain['label'].rsplit(' #', 1)[0]}): the codec `{codec}` did not shrink it.")
        self.summary = {
            "producers": by_codec,
            # The uncompressed codec's (else the first codec's) runs, for the reading and section 5.
            "kcat_write": first["kcat"],
            "mc_info": first["info"],
            "mc_warn": first["warn"],
            "py_prod": self.best(P, "baseline"),
            "kafka_read": self.best(C, "kafka-read"),
            "db_stored": self.best(C, "db-stored"),
            "db_bare": self.best(C, "db-bare"),
            "db_paired": self.best(C, "db-stored-paired"),
        }
        cu = {}
        for r in self.results["catchup"]:  # the best run of each consumer and backlog
            key = (r["impl"], r["backlog"])
            if key not in cu or r["rate"] > cu[key]["rate"]:
                cu[key] = r
        big, small = self.cfg["backlog"], self.cfg["small_backlog"]
        self.summary["mc_big"], self.summary["mc_small"] = cu.get(("metricsctl", big)), cu.get(("metricsctl", small))
        self.summary["py_big"], self.summary["py_small"] = cu.get(("baseline", big)), cu.get(("baseline", small))
        self.summary["mc_lean"] = cu.get(("metricsctl-lean", big))
        self.summary["mc_scraped"] = cu.get(("metricsctl-scraped", big))
        s = self.summary
        rate = lambda r: r["rate"] if r else None  # noqa: E731
        goals = []
        best_cr = ratio(rate(s["mc_big"]), rate(s["db_stored"]))
        # Each catch-up of the large backlog over the ceiling run just before it; the goal takes
        # their median. Best against best (the ceilings of section 2, minutes earlier) is shown too.
        pairs = [(r["rate"], r["paired_ceiling"]) for r in self.results["catchup"]
                 if r["impl"] == "metricsctl" and r["backlog"] == big and r.get("paired_ceiling")]
        s["catchup_pairs"] = pairs
        cr = statistics.median(a / b for a, b in pairs) if pairs else best_cr
        measured = (f"paired runs: {', '.join(f'{fmt_rate(a)} vs {fmt_rate(b)}' for a, b in pairs)} docs/s, "
                    f"median **{fmt_ratio(cr)}**; best against best: " if pairs else "")
        measured += f"{fmt_rate(rate(s['mc_big']))} msg/s vs ceiling {fmt_rate(rate(s['db_stored']))} docs/s = {fmt_ratio(best_cr)}"
        goals.append(("catchup", measured, "≥ 0.80", cr is not None and cr >= 0.8))
        rss_big = mib(s["mc_big"]["rss_kb"]) if s["mc_big"] else None
        rss_small = mib(s["mc_small"]["rss_kb"]) if s["mc_small"] else None
        growth = ratio(rss_big, rss_small)
        goals.append(("rss", f"{fmt_s(rss_big, 1)} MiB at {big:,}, {fmt_s(rss_small, 1)} MiB at {small:,} (× {fmt_ratio(growth)})",
                      "≤ 64 MiB, × ≤ 1.10", rss_big is not None and rss_big <= 64 and growth is not None and growth <= 1.10))
        for codec, b in s["producers"].items():
            pr = ratio(rate(b["info"]), rate(b["kcat"]))
            measured = f"{fmt_rate(rate(b['info']))} vs {fmt_rate(rate(b['kcat']))} msg/s = {fmt_ratio(pr)}"
            met = pr is not None and pr >= PRODUCER_TARGET
            if not self.compression_flag:
                # metricsctl sent uncompressed with its old, not idempotent producer: not the goal's settings.
                measured += " (no --compression support)"
                met = None
            goals.append((f"producer:{codec}", measured, f"≥ {PRODUCER_TARGET:.2f}", met))
        er = ratio(rate(s["mc_scraped"]), rate(s["mc_big"]))
        goals.append(("endpoint", f"{fmt_rate(rate(s['mc_scraped']))} vs {fmt_rate(rate(s['mc_big']))} msg/s = {fmt_ratio(er)}",
                      f"≥ {ENDPOINT_TARGET:.2f}", er is not None and er >= ENDPOINT_TARGET))
        lat = self.results["latency"] or {}
        p99 = lat.get("raw_p99")
        goals.append(("latency", f"p99 {fmt_s(p99, 1)} ms at {fmt_rate(lat.get('achieved_rate'))} msg/s",
                      "≤ 250 ms", p99 is not None and p99 <= 250))
        self.goals = goals

    # profile ----------------------------------------------------------------------------------
    def profile(self):
        missed = {g for g, _, _, ok in self.goals if ok is False}
        if self.scale == "smoke" or self.args.profile == "off" or (self.args.profile == "auto" and not missed):
            return
        if self.args.profile == "on":
            missed = {f"producer:{self.codecs[0]}", "catchup"}
        tool = None
        perf_ok = shutil.which("perf") and "<not supported>" not in cmd_output(["perf", "stat", "-e", "instructions", "true"]) \
            and "instructions" in cmd_output(["perf", "stat", "-e", "instructions", "true"])
        if perf_ok:
            tool = "perf"
        elif shutil.which("valgrind") and shutil.which("callgrind_annotate"):
            tool = "callgrind"
        if tool is None:
            self.results["notes"].append("profile skipped: neither perf with hardware counters nor valgrind is available")
            return
        self.profile_tool = tool
        self.results["notes"].append(
            "perf: `perf stat -e instructions true` reports <not supported> here (no hardware counters), so callgrind was used"
            if tool == "callgrind" else "perf record was used (hardware counters available)")
        producer_missed = [g.split(":", 1)[1] for g, *_ in self.goals if g in missed and g.startswith("producer:")]
        if producer_missed:
            self.profile_producer(tool, producer_missed[0])
        if missed & {"catchup", "rss", "latency"}:
            self.profile_consumer(tool)

    def profiled_argv(self, tool, out, argv):
        if tool == "perf":
            return ["perf", "record", "-g", "-o", str(out), "--", *argv]
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]

    def profile_producer(self, tool, codec):
        """The producer of the first codec whose goal is missed, at the default log level."""
        reports = self.cfg["profile_reports"]
        n = reports * len(self.server_ids)
        topic = self.topic("prof-produce")
        out = self.work / f"produce.{tool}"
        argv = [self.bin, "produce", "--brokers", self.brokers, "--topic", topic, "--servers", self.servers_arg,
                "--interval", "0", "--count", str(reports)]
        if self.compression_flag:
            argv += ["--compression", codec]
        full = self.profiled_argv(tool, out, argv)
        say(f"[profile] {tool} on metricsctl produce, {n:,} messages (default log level"
            + (f", --compression {codec})" if self.compression_flag else ")"))
        with self.log_file("profile produce") as log:
            m = Measured(self, "profile produce", full, env=self.metricsctl_env(), stderr=log, messages=n,
                         display=display_argv(full, None, {self.servers_arg: "$SERVERS"}) + " 2> produce.log")
            r = m.wait(timeout=1800)
        self.check_exit(r, log.name)
        what = f"metricsctl produce --compression {codec}" if self.compression_flag else "metricsctl produce"
        self.results["profile"].append(self.profile_report(tool, out, what, n, r))
        self.drop_topic(topic)

    def profile_consumer(self, tool):
        n = self.cfg["profile_backlog"]
        topic = self.topic("prof-consume")
        self.kcat_produce("preload profile backlog", topic, self.profile_file, n)
        db, group = self.database("prof"), self.group("prof")
        out = self.work / f"consume.{tool}"
        argv, _ = self.consumer_argv("metricsctl", topic, group, db, self.cfg["idle_net"], max_messages=n)
        full = self.profiled_argv(tool, out, argv)
        say(f"[profile] {tool} on metricsctl consume, a {n:,}-message backlog")
        with self.log_file("profile consume") as log:
            m = Measured(self, "profile consume", full, env=self.metricsctl_env(), stderr=log, messages=n,
                         display=display_argv(full) + " 2> consume.log")
            r = m.wait(timeout=1800)
        self.check_exit(r, log.name)
        self.results["profile"].append(self.profile_report(tool, out, "metricsctl consume", n, r))

    def profile_report(self, tool, out, what, n, r):
        rows_self, rows_incl = [], []
        if tool == "callgrind":
            text = cmd_output(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", str(out)])
            rows_self = parse_callgrind(text)
            text = cmd_output(["callgrind_annotate", "--auto=no", "--inclusive=yes", "--threshold=100", str(out)])
            rows_incl = [r for r in parse_callgrind(text, max) if not RUNTIME_FRAMES.match(r[1])]
        else:
            text = cmd_output(["perf", "report", "--stdio", "--no-children", "-i", str(out), "--sort", "dso,symbol",
                               "--percent-limit", "0.01"])
            rows_self = parse_perf(text)
        by_crate = {}
        for pct, fn, obj in rows_self:
            key = crate_of(fn, obj)
            by_crate[key] = by_crate.get(key, 0.0) + pct
        return {"what": what, "tool": tool, "messages": n, "command": r["command"], "self": rows_self[:20],
                "inclusive": rows_incl[:25], "inclusive_all": rows_incl[25:400], "by_crate": sorted(by_crate.items(), key=lambda kv: -kv[1])[:12],
                "wall": r["wall"], "cpu": (r["user"] or 0) + (r["sys"] or 0)}

    def reading(self):
        """One bullet per missed goal: the figures of this run that locate the cost."""
        s, out = self.summary, []
        missed = {g for g, _, _, ok in self.goals if ok is False}
        prof = {p["what"]: p for p in self.results["profile"]}

        def incl(p, pattern):
            xs = [pct for pct, fn, _ in p["inclusive"] + p.get("inclusive_all", []) if re.search(pattern, fn)]
            return max(xs) if xs else None

        for codec, b in s["producers"].items():
            if f"producer:{codec}" not in missed or not (b["info"] and b["kcat"]):
                continue
            info, warn, kc = b["info"], b["warn"], b["kcat"]
            line = (f"**Producer, `{codec}`**" + ("" if self.compression_flag else " (no --compression support: "
                                                  "metricsctl sent uncompressed)") +
                    f": {fmt_rate(info['rate'])} msg/s at the default log level, "
                    f"{fmt_rate(warn['rate']) if warn else '-'} at RUST_LOG=warn "
                    f"(× {fmt_ratio(ratio(warn['rate'] if warn else None, info['rate']))}), kcat {fmt_rate(kc['rate'])}. "
                    f"CPU per 1,000 messages: metricsctl {fmt_s(cpu_per_1k(info), 3)} s "
                    f"(warn: {fmt_s(cpu_per_1k(warn) if warn else None, 3)}), kcat {fmt_s(cpu_per_1k(kc), 3)} s; "
                    f"bytes in the log per message: metricsctl {fmt_s(info.get('log_bytes_per_msg'), 0)}, "
                    f"kcat {fmt_s(kc.get('log_bytes_per_msg'), 0)}; the process is busy "
                    f"{fmt_ratio(ratio(info['user'] + info['sys'], info['wall']))} of a core over its wall time "
                    f"(kcat {fmt_ratio(ratio(kc['user'] + kc['sys'], kc['wall']))}), the rest of the time it waits for "
                    "the broker's acknowledgements.")
            p = prof.get(f"metricsctl produce --compression {codec}") or (
                None if self.compression_flag else prof.get("metricsctl produce"))
            if p:
                parts = [(name, incl(p, pat)) for name, pat in (
                    ("logging a line per message (env_logger `Log::log`)", r"env_logger::logger::Logger as log::Log>::log$"),
                    ("the kafka crate's produce call (encoding, CRC, socket)", r"kafka::client::KafkaClient::produce_messages$"),
                    ("metricsctl's Kafka producer (`metricsctl::kafka::producer`)", r"^<?metricsctl::kafka::producer::"),
                    ("compression (lz4, zstd, snap, flate2)", r"^<?(lz4|lz4_flex|zstd|zstd_safe|snap|flate2)::"),
                    ("JSON encoding (`MetricMessage::to_json`)", r"MetricMessage::to_json$"),
                    ("ANSI stripping of log output (anstream)", r"anstream::.*write|anstream::adapter::strip::next_bytes$"))]
                found = [(name, pct) for name, pct in parts if pct is not None and pct >= 0.5]
                if found:
                    line += " Callgrind (inclusive share of the instructions): " + "; ".join(
                        f"{name} {pct:.0f} %" for name, pct in found) + "."
            out.append(line)
        if "catchup" in missed and s["mc_big"] and s["db_stored"]:
            r, c = s["mc_big"], s["db_stored"]
            n = r["backlog"]
            line = (f"**Catch-up**: {n:,} messages in {r['done_s']:.1f} s. The metricsctl process used "
                    f"{r['user'] + r['sys']:.1f} CPU s (busy {fmt_ratio(ratio(r['user'] + r['sys'], r['done_s']))} of a core); "
                    f"FerretDB {fmt_s(r['ferretdb_cpu'], 1)} CPU s ({fmt_ratio(ratio(r['ferretdb_cpu'], r['done_s']))} of a core), "
                    f"Kafka {fmt_s(r['kafka_cpu'], 1)} CPU s. FerretDB CPU per 1,000 messages: "
                    f"{fmt_s(ratio(r['ferretdb_cpu'], n / 1000), 2)} s in the catch-up against "
                    f"{fmt_s(ratio(c['ferretdb_cpu'], c['messages'] / 1000), 2)} s per 1,000 documents in the ceiling: "
                    "the difference is the database work the consumer does beyond the ceiling's raw inserts "
                    f"(its {n // WINDOW:,} KPI documents among it) and any slower way it inserts.")
            lean = s.get("mc_lean")
            if lean:
                line += (f" The same consumer with `--servers-per-window 0` (windows without their per-server list, "
                         f"same backlog): {lean['done_s']:.1f} s, {fmt_rate(lean['rate'])} msg/s = "
                         f"{fmt_ratio(ratio(lean['rate'], c['rate']))} of the ceiling, FerretDB "
                         f"{fmt_s(ratio(lean['ferretdb_cpu'], n / 1000), 2)} CPU s per 1,000 messages.")
            out.append(line)
        if "rss" in missed and s["mc_big"] and s["mc_small"]:
            out.append(f"**Memory**: peak RSS {mib(s['mc_small']['rss_kb']):.0f} MiB at {s['mc_small']['backlog']:,} messages, "
                       f"{mib(s['mc_big']['rss_kb']):.0f} MiB at {s['mc_big']['backlog']:,}, "
                       f"{mib(self.results['latency']['consumer']['rss_kb']):.0f} MiB at a steady "
                       f"{self.results['latency']['rate_target']:,} msg/s (× {fmt_ratio(ratio(mib(s['mc_big']['rss_kb']), mib(s['mc_small']['rss_kb'])))} "
                       "from the small to the large backlog). The consume profile below shows where allocations come from "
                       "(malloc/free share, the functions that build documents).")
        if "latency" in missed and self.results["latency"]:
            lat = self.results["latency"]
            c = lat["consumer"]
            out.append(f"**Latency**: p50 {fmt_s(lat['raw_p50'], 0)} ms, p99 {fmt_s(lat['raw_p99'], 0)} ms to raw, while the "
                       f"consumer was busy only {fmt_ratio((c['user'] + c['sys']) / c['wall'])} of a core and FerretDB "
                       f"{fmt_ratio(ratio(c['ferretdb_cpu'], c['wall']))} of a core ({fmt_s(c['ferretdb_cpu'], 1)} CPU s over "
                       f"the consumer's {c['wall']:.1f} s): the time goes to waiting, on the database or between fetches, "
                       "not to the consumer's own computing, which is all callgrind can show. A consumer whose catch-up "
                       f"rate (section 3: {fmt_rate(s['mc_big']['rate'] if s['mc_big'] else None)} msg/s) is close to "
                       f"{lat['rate_target']:,} msg/s has no headroom: once behind, it fetches and stores large batches.")
        for p in self.results["profile"]:
            top = [fn for _, fn, _ in p["inclusive"] if fn.startswith(("metricsctl::", "<metricsctl::"))
                   and not fn.endswith(("::main", "::run"))][:6]
            if top:
                out.append(f"Heaviest metricsctl functions in the {p['what']} profile (inclusive): "
                           + ", ".join(f"`{md_cell(fn, 90)}`" for fn in top) + ".")
        return out

    # report -----------------------------------------------------------------------------------
    def write_report(self, path):
        s, e, cfg = self.summary, self.env, self.cfg
        L = []
        w = L.append
        label = {"full": "full", "quick": "QUICK (reduced counts, not the full sizes)",
                 "smoke": "SMOKE (tiny counts: checks the harness, the figures mean nothing)"}[self.scale]
        w("# metricsctl benchmarks")
        w("")
        w(f"Generated by `make bench BENCH_SCALE={self.scale}` (`bench/run.py`) on "
          f"{self.started.strftime('%Y-%m-%d %H:%M UTC')}; scale: **{label}**. "
          f"Run id `{self.run_id}`: every topic, group and database of the run was unique to it and removed at the end.")
        w("")
        w("The machine is shared and noisy (2 cores, other engineers building and testing on it): absolute figures "
          "move from run to run, so **read the ratios**, each taken between figures measured minutes apart in this one "
          f"run on the same broker, database and payloads. "
          + (f"Producers and ceilings ran {cfg['repeat']} times, interleaved; the best run of each counts and every "
             "run is listed. " if cfg["repeat"] > 1 else "Producers and ceilings ran once. ")
          + "Load average (1/5/15 min) at the start "
          f"{'/'.join(f'{x:.1f}' for x in self.load_start)}, at the end {'/'.join(f'{x:.1f}' for x in os.getloadavg())}.")
        w("")
        if e["source"]:
            w(f"metricsctl: `{e['metricsctl_bin']}` built {e['metricsctl_built']} from {e['source']}.")
        else:
            w(f"metricsctl: `{e['metricsctl_bin']}` built {e['metricsctl_built']}, work tree at commit `{e['git_head']}` "
              f"({e['git_subject']})" + (f", with uncommitted changes in {', '.join(f'`{x}`' for x in e['dirty'][:8])}"
                                         f"{' …' if len(e['dirty']) > 8 else ''}" if e["dirty"] else ", clean") + ".")
        w("")
        w("## Goals")
        w("")
        w("| goal | measured | target | status |")
        w("| --- | --- | --- | --- |")
        for key, measured, target, ok in self.goals:
            w(f"| {goal_text(key)} | {measured} | {target} | {status_text(ok)} |")
        w("")
        if self.scale != "full":
            w(f"At this scale the backlogs are {cfg['backlog']:,} and {cfg['small_backlog']:,} messages instead of 200,000 "
              "and 50,000, and the producer sends "
              f"{cfg['servers'] * cfg['reports']:,} messages instead of 200,000: the goals are stated for the full sizes.")
            w("")
        w("## Machine and versions")
        w("")
        w("| | |")
        w("| --- | --- |")
        for k, v in [("cores", e["cores"]), ("CPU", e["cpu"]), ("memory", f"{e['memory_gib']:.1f} GiB"),
                     ("OS, kernel", f"{e['os']}, {e['kernel']}"), ("Kafka", f"{e['kafka']} (KRaft, {len(self.brokers.split(','))} "
                               f"{'node' if len(self.brokers.split(',')) == 1 else 'nodes, every topic with replication factor 1'}, `{self.brokers}`)"),
                     ("database", f"{e['ferretdb']}, `{redact_uri(self.mongodb_uri)}`"), ("rustc", e["rustc"]),
                     ("Python", e["python"]), ("kafka-python", e["kafka-python"]), ("pymongo", e["pymongo"]),
                     ("kcat", e["kcat"]), ("GNU time", e["gnu_time"])]:
            w(f"| {k} | {v} |")
        w("")
        w("## 1. Producer: messages/s, `--interval 0`, per compression codec")
        w("")
        mc_settings = (
            "metricsctl runs with `--compression CODEC` (its producer: acks=all, idempotent), at the default log level "
            "and at RUST_LOG=warn"
            if self.compression_flag else
            "metricsctl runs at the default log level and at RUST_LOG=warn, but **this metricsctl has no "
            "`--compression`** (`metricsctl produce --help` lacks it): it ran without the flag, uncompressed and with its "
            "producer's own settings, in every codec's rows, marked \"(no --compression support)\", so in a compressed "
            "codec's rows it is compared with kcat compressing")
        w(f"{cfg['servers'] * cfg['reports']:,} messages: {cfg['reports']} reports of {cfg['servers']:,} servers "
          f"(`$SERVERS` = `srv0001,…,srv{cfg['servers']:04d}`), each producer into its own fresh {PARTITIONS}-partition topic. "
          f"Per codec ({', '.join(f'`{c}`' for c in self.codecs)}), side by side in each repeat: kcat -P with "
          "`-X acks=all -X enable.idempotence=true -X compression.codec=CODEC` (librdkafka's batching and defaults "
          "otherwise, `partitioner=murmur2_random`) sends the same pre-generated payloads (key = server id, drawn by the "
          f"baseline's own generator); {mc_settings}. × kcat is the ratio "
          "to kcat **in the same codec** of the same run. The baseline, the reference, runs once per repeat, not per "
          "codec: it is the exercise's producer with kafka-python defaults (acks=1, no key, no compression), one `send` "
          "per message, a print per message, a `flush` per report; its × kcat is to kcat `none`. Rates are messages / "
          "wall time of the whole process (start-up included). Logs go to files, not a terminal. Every topic is checked "
          "to hold exactly the messages sent. **log B / msg** = bytes of the topic's log segments on the broker's disk "
          "per message (record batch framing, keys and values after compression): it shows the codec took effect and "
          "how well the batches compress.")
        w("")
        w("| codec | producer | best msg/s | × kcat (same codec) | × baseline | runs (msg/s) | CPU s / 1k msgs | "
          "peak RSS MiB | avg payload B | log B / msg |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        py = s["py_prod"]
        rows = [(codec, kind, b[kind], b["kcat"]) for codec, b in s["producers"].items()
                for kind in ("kcat", "info", "warn")]
        none_kcat = s["producers"].get("none", {}).get("kcat")
        rows.append(("none (reference)", "baseline", py, none_kcat))
        for codec, kind, b, kc in rows:
            if not b:
                continue
            runs = [r for r in self.results["producer"] if r["kind"] == kind and
                    (kind == "baseline" or r.get("codec") == codec)]
            w(f"| {codec} | {b['label'].rsplit(' #', 1)[0]} | {fmt_rate(b['rate'])} | "
              f"{fmt_ratio(ratio(b['rate'], kc['rate'] if kc else None))} | "
              f"{fmt_ratio(ratio(b['rate'], py['rate'] if py else None))} | "
              f"{', '.join(fmt_rate(r['rate']) for r in runs)} | {fmt_s(statistics.median(cpu_per_1k(r) for r in runs), 3)} | "
              f"{fmt_s(max(mib(r['rss_kb']) for r in runs), 1)} | {fmt_s(b.get('payload_bytes'), 0)} | "
              f"{fmt_s(b.get('log_bytes_per_msg'), 0)} |")
        w("")
        w("## 2. Ceilings")
        w("")
        w(f"Kafka read: `kcat -C -e` of the {cfg['backlog']:,}-message backlog topic to /dev/null (rate = messages / wall). "
          f"Database: pymongo `insert_many` of the same {cfg['backlog']:,} payloads, batches of 1,000, `ordered=False`, into a "
          "fresh collection with a unique index on `message_uuid` (created before the clock starts), no Kafka; rate = "
          "documents / time of the insert loop. Two document shapes: **stored** = what metricsctl writes (the message plus "
          "`timestamp` and `received_at` dates and `kafka: {topic, partition, offset}`): the ceiling the catch-up goal is "
          "measured against; **bare** = the message as the baseline stores it. CPU is the client process's own (the insert "
          "loop only, for the database).")
        w("")
        w("| ceiling | best /s | runs (/s) | client CPU s / 1k | client peak RSS MiB |")
        w("| --- | --- | --- | --- | --- |")
        for key, kind, name in (("kafka_read", "kafka-read", "Kafka read, kcat -C -e"),
                                ("db_stored", "db-stored", "database, insert_many (stored shape)"),
                                ("db_bare", "db-bare", "database, insert_many (bare messages)"),
                                ("db_paired", "db-stored-paired", "database, stored shape, run before each catch-up (section 3)")):
            b = s[key]
            if not b:
                continue
            runs = [r for r in self.results["ceilings"] if r["kind"] == kind]
            cpus = [r["inner"]["cpu_seconds"] / cfg["backlog"] * 1000 if "inner" in r else cpu_per_1k(r) for r in runs]
            w(f"| {name} | {fmt_rate(b['rate'])} | {', '.join(fmt_rate(r['rate']) for r in runs)} | "
              f"{fmt_s(statistics.median(cpus), 3)} | {fmt_s(max(mib(r['rss_kb']) for r in runs), 1)} |")
        w("")
        w("## 3. Consumer catch-up")
        w("")
        w(f"A fresh group reads a {PARTITIONS}-partition topic preloaded with the backlog (written by kcat, keyed by server "
          "id) into a fresh database. **Catch-up** = time from the process's start to its exit, which comes after every message "
          f"is in the raw collection and every window of {WINDOW} is stored: both consumers stop by themselves once they "
          "have read the backlog (`--max-messages`), so start-up (connections, index) and shutdown (last commit) are "
          "included for both; the exact counts of both collections are checked afterwards. The database is not polled "
          "during the run: counting documents loads the database under test (in a trial, `collStats` of a "
          "10,000-document KPI collection took 0.35 s of FerretDB, `count` of a 200,000-document raw collection 14 s). "
          f"`--exit-when-idle {cfg['idle_net']:g}` is only a safety net: metricsctl at 7d77e30 starts its idle clock "
          "when a fetch returns, before it stores the batch, so a batch that takes longer than the idle time to store "
          "ends the run with messages unread (seen in a trial: 18,871 of 20,000 stored, one 22 s batch, then \"no new "
          "messages for 3 s: stopping\"). The database ceiling in the table is the best stored-shape one of section 2. "
          "Each metricsctl run of the large backlog follows a ceiling run of its own (\"paired\", section 2's last row), "
          "since the database's speed drifts on a shared machine; the goal is the median of those paired ratios: "
          + (", ".join(f"{fmt_rate(a)} / {fmt_rate(b)} = {fmt_ratio(a / b)}" for a, b in s.get("catchup_pairs", []))
             or "none ran") + ". "
          "Kafka/FerretDB CPU = CPU seconds the broker and database processes used during the run (they are shared "
          "services: other load on them shows up here too).")
        w("")
        w("| consumer | backlog | catch-up s | msg/s | × database ceiling | × Kafka read | × baseline | "
          "CPU s / 1k msgs | busy (CPU / catch-up) | peak RSS MiB | Kafka CPU s | FerretDB CPU s |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for key, base in (("mc_big", "py_big"), ("mc_scraped", "py_big"), ("mc_lean", "py_big"), ("mc_small", "py_small"),
                          ("py_big", None), ("py_small", None)):
            r = s.get(key)
            if not r:
                continue
            label = {"metricsctl-lean": "metricsctl `--servers-per-window 0`",
                     "metricsctl-scraped": "metricsctl `--metrics-addr`, scraped every 1 s"}.get(r["impl"], r["impl"])
            w(f"| {label} | {r['backlog']:,} | {r['done_s']:.2f} | {fmt_rate(r['rate'])} | "
              f"{fmt_ratio(ratio(r['rate'], s['db_stored']['rate']))} | {fmt_ratio(ratio(r['rate'], s['kafka_read']['rate']))} | "
              f"{fmt_ratio(ratio(r['rate'], s[base]['rate'])) if base and s[base] else '-'} | "
              f"{fmt_s(cpu_per_1k(r), 3)} | {fmt_ratio(ratio(r['user'] + r['sys'], r['done_s']))} | {mib(r['rss_kb']):.1f} | "
              f"{fmt_s(r['kafka_cpu'], 1)} | {fmt_s(r['ferretdb_cpu'], 1)} |")
        w("")
        lat = self.results["latency"]
        w(f"## 4. Latency at a steady {lat['rate_target']:,} messages/s")
        w("")
        w(f"metricsctl consume runs first (a fresh topic, group and database; the producer starts once the consumer has "
          f"created its index, plus 1 s; it stops after the last message, `--max-messages`); then `metricsctl produce` paces {lat['messages']:,} messages: {lat['servers']} "
          f"servers every {lat['interval_ms']:g} ms for {lat['seconds']} s, RUST_LOG=warn. Latency to raw = the raw "
          "document's `received_at` − the message's `timestamp_utc`; metricsctl stamps `received_at` when the fetch that "
          "brought the message returned, so the insert itself is not included. Latency to window = the KPI document's "
          "`computed_at` − `timestamp_utc`, the message mapped to its window by the window's per-partition offset ranges "
          "(`kafka.partitions`). Both clocks are this machine's; BSON dates have millisecond resolution. Percentiles are "
          "nearest-rank over every message.")
        w("")
        w("| | messages | achieved msg/s | p50 ms | p99 ms | max ms |")
        w("| --- | --- | --- | --- | --- | --- |")
        w(f"| to raw `received_at` | {lat['stored']:,} | {fmt_rate(lat['achieved_rate'])} | {fmt_s(lat['raw_p50'], 1)} | "
          f"{fmt_s(lat['raw_p99'], 1)} | {fmt_s(lat['raw_max'], 1)} |")
        w(f"| to window `computed_at` | {lat.get('win_count', 0):,} in {lat['windows']:,} windows | | "
          f"{fmt_s(lat['win_p50'], 1)} | {fmt_s(lat['win_p99'], 1)} | {fmt_s(lat['win_max'], 1)} |")
        if lat.get("win_note"):
            w("")
            w(lat["win_note"])
        w("")
        c, p = lat["consumer"], lat["producer"]
        w(f"At this rate the consumer used {fmt_s(cpu_per_1k(c), 3)} CPU s per 1,000 messages "
          f"({fmt_ratio((c['user'] + c['sys']) / p['wall'])} of a core over the producer's {p['wall']:.1f} s) with a peak "
          f"RSS of {mib(c['rss_kb']):.1f} MiB; the paced producer {fmt_s(cpu_per_1k(p), 3)} CPU s per 1,000 and "
          f"{mib(p['rss_kb']):.1f} MiB. The baseline consumer is not run here: its catch-up rate in section 3 "
          f"({fmt_rate(s['py_big']['rate'] if s['py_big'] else None)} msg/s) "
          + ("is below this rate, so its latency would grow without bound." if s["py_big"] and s["py_big"]["rate"] < lat["rate_target"]
             else "is above this rate."))
        w("")
        w("## 5. Every process: CPU and memory")
        w("")
        w("From `/usr/bin/time -v` around each process (user + system CPU; maximum resident set size). Producer and "
          "ceiling rows are the best run of each.")
        w("")
        w("| process | messages | wall s | CPU s | CPU s / 1k msgs | peak RSS MiB | Kafka CPU s | FerretDB CPU s |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- |")
        rows = [b[k] for b in s["producers"].values() for k in ("kcat", "info", "warn") if b[k]]
        rows += [s[k] for k in ("py_prod", "kafka_read", "db_stored", "db_bare",
                                "mc_big", "mc_lean", "mc_small", "py_big", "py_small") if s.get(k)]
        rows += [lat["producer"], lat["consumer"]]
        for r in rows:
            w(f"| {r['label'].rsplit(' #', 1)[0]} | {r['messages']:,} | {r['wall']:.2f} | {r['user'] + r['sys']:.2f} | "
              f"{fmt_s(cpu_per_1k(r), 3)} | {mib(r['rss_kb']):.1f} | {fmt_s(r['kafka_cpu'], 1)} | {fmt_s(r['ferretdb_cpu'], 1)} |")
        w("")
        if self.results["profile"] or any(ok is False for *_, ok in self.goals):
            w("## 6. Where the time goes (missed goals)")
            w("")
            w("Figures of this run that locate the cost, as a starting point for the fixes (written by the harness):")
            w("")
            for line in self.reading():
                w(f"- {line}")
            w("")
            for pr in self.results["profile"]:
                w(f"### {pr['what']}, {pr['messages']:,} messages, {pr['tool']}")
                w("")
                w(f"`{pr['command']}`")
                w("")
                if pr["tool"] == "callgrind":
                    w("Instructions executed by the metricsctl process (all threads), by function: *self* = in the "
                      "function's own code, *inclusive* = with what it calls. Callgrind counts instructions, not waiting: "
                      "time blocked on Kafka or the database does not appear (see the busy column of section 3 for that).")
                w("")
                w("By crate or library (self cost summed over every function):")
                w("")
                w("| self % | crate / library |")
                w("| --- | --- |")
                for name, pct in pr["by_crate"]:
                    w(f"| {pct:.1f} | {name} |")
                w("")
                w("Top functions by self cost:")
                w("")
                w("| self % | function |")
                w("| --- | --- |")
                for pct, fn, _ in pr["self"][:15]:
                    w(f"| {pct:.2f} | `{md_cell(fn)}` |")
                w("")
                if pr["inclusive"]:
                    w("Top functions by inclusive cost:")
                    w("")
                    w("| inclusive % | function |")
                    w("| --- | --- |")
                    for pct, fn, _ in pr["inclusive"][:25]:
                        w(f"| {pct:.2f} | `{md_cell(fn)}` |")
                    w("")
        w("## Commands")
        w("")
        w("Exactly as run (topic, group and database names carry the run id; `$SERVERS` as in section 1; `$WORK` is "
          "the run's temporary folder; "
          "`.local/bench-venv/bin/python` is `sys.executable` of the driver). Every process ran as "
          "`/usr/bin/time -v -o FILE <command>`.")
        w("")
        w("```")
        seen = set()
        for r in (self.results["producer"] + self.results["ceilings"] + self.results["catchup"] +
                  [lat["consumer"], lat["producer"]]):
            if r["label"].rsplit(" #", 1)[0] in seen:
                continue
            seen.add(r["label"].rsplit(" #", 1)[0])
            w(f"# {r['label'].rsplit(' #', 1)[0]}")
            w(r["command"].replace(str(self.work), "$WORK"))
        w("```")
        w("")
        if self.results["notes"]:
            w("## Notes")
            w("")
            for n in self.results["notes"]:
                w(f"- {n}")
            w("")
        w("## Reproduce")
        w("")
        w("```sh")
        w("make up                         # Kafka and FerretDB, if not running")
        w(f"make bench BENCH_SCALE={self.scale}   # full (default, ~15 min) | quick (~3 min) | smoke (seconds; writes to a temp file)")
        w(f"make bench BENCH_SCALE={self.scale} BENCH_ARGS=--codecs={','.join(self.codecs)}   # this run's codecs; "
          f"--codecs={','.join(CODECS)} for the full table")
        w("```")
        w("")
        write_or_splice(Path(path), L, f"# {'Full' if self.scale == 'full' else self.scale.capitalize()} run, commit "
                        f"`{e['git_head']}` ({self.started.strftime('%Y-%m-%d %H:%M UTC')})")
        return path


def status_text(ok):
    """A goal's status cell: met, missed, or n/a (None: not measurable in this run)."""
    if ok is None:
        return "**n/a** (not the goal's settings)"
    return "**met**" if ok else "**missed**"


def parse_codecs(text):
    """`none,lz4` → ["none", "lz4"]: known codecs only, in the given order, each once."""
    out = []
    for c in (x.strip().lower() for x in text.split(",")):
        if not c:
            continue
        if c not in CODECS:
            raise SystemExit(f"bench: unknown codec {c!r} in --codecs (known: {', '.join(CODECS)})")
        if c not in out:
            out.append(c)
    if not out:
        raise SystemExit("bench: --codecs names no codec")
    return out


def collection_count(db, collection):
    try:
        return int(db.command("collStats", collection).get("count", 0))
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def md_cell(text, limit=160):
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_callgrind(text, combine=sum):
    """(percent, function, file) rows of callgrind_annotate's function table, one per function:
    callgrind keeps a function apart per source file its inlined code came from and per
    recursion level ('2): combined here, summed for self cost, the largest for inclusive cost."""
    rows, order = {}, []
    for line in text.splitlines():
        m = re.match(r"^\s*[\d,]+\s+\(\s*([\d.]+)%\)\s+(.*?)(?:\s+\[[^\]]*\])?\s*$", line)
        if not m or m.group(2).startswith("PROGRAM TOTALS"):
            continue
        fm = re.match(r"^(.*?[^:]):(?!:)(.*)$", m.group(2))
        file, fn = (fm.group(1), fm.group(2)) if fm else ("???", m.group(2))
        fn = re.sub(r"'\d+$", "", re.sub(r"::h[0-9a-f]{16}\b", "", fn).strip())
        if fn not in rows:
            rows[fn] = [0.0, fn, file]
            order.append(fn)
        rows[fn][0] = combine((rows[fn][0], float(m.group(1))))
    return sorted((tuple(rows[f]) for f in order), key=lambda r: -r[0])


def parse_perf(text):
    rows = []
    for line in text.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[[.kH]\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), re.sub(r"::h[0-9a-f]{16}\b", "", m.group(3).strip()), m.group(2)))
    return rows


# Frames every Rust program has around its real work: left out of the inclusive table.
RUNTIME_FRAMES = re.compile(
    r"^(\(below main\)|main|__libc_start_main.*|__libc_start_call_main|_start|start_thread|clone3?|0x[0-9a-f]+|"
    r"std::rt::.*|std::sys::backtrace::__rust_begin_short_backtrace|.*thread_start|"
    r"core::ops::function::FnOnce::call_once.*|std::panicking::.*|std::panic::catch_unwind.*|"
    r"<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once|_dl_.*)$")

PRIMITIVES = {"f32", "f64", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128",
              "isize", "bool", "char", "str", "[T]", "T", "()", "dyn"}


def crate_of(fn, file):
    """The crate (Rust) or part of the C library a function belongs to, for the summary."""
    if "::" not in fn:
        f = file or ""
        if "malloc" in f or "malloc" in fn or fn in ("free", "cfree") or fn.startswith(("_int_", "unlink_chunk")):
            return "libc: malloc/free"
        if "/string/" in f or fn.startswith(("mem", "__mem", "str", "__str")):
            return "libc: memcpy/memset/str*"
        if "/elf/" in f or fn.startswith(("_dl_", "do_lookup", "dl_")):
            return "dynamic loader (process start)"
        if "nptl" in f or "pthread" in fn or "futex" in fn or "lll_" in fn:
            return "libc: threads and locks"
        return "other C (libc, syscalls)"
    name = fn
    while True:
        stripped = re.sub(r"^(<|&mut |&|\*const |\*mut |dyn |\[|\(|\s)+", "", name)
        if stripped == name:
            break
        name = stripped
    head = re.split(r"::|<| as |>|,|\]|\)", name, maxsplit=1)[0].strip()
    if head in PRIMITIVES or not name.startswith(head + "::"):
        trait = re.search(r" as (?:&mut |&|dyn )?([A-Za-z_][A-Za-z0-9_]*)::", fn)
        head = trait.group(1) if trait else head
    if head in ("core", "alloc", "std", "hashbrown", "__rustc"):
        return "Rust std (core, alloc, std)"
    return head or "other"


# --- The database ceiling, run as its own process -------------------------------------------

def db_ceiling(argv):
    p = argparse.ArgumentParser(prog="run.py db-ceiling")
    p.add_argument("--uri", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--collection", default="raw")
    p.add_argument("--payloads", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--shape", choices=["stored", "bare"], default="stored")
    p.add_argument("--topic", default="ceiling")
    p.add_argument("--batch", type=int, default=1000)
    a = p.parse_args(argv)
    from pymongo import ASCENDING, MongoClient

    docs = []
    now = datetime.now(timezone.utc)
    with open(a.payloads) as f:
        for i, line in enumerate(f):
            if i >= a.count:
                break
            d = json.loads(line.split("\t", 1)[1])
            if a.shape == "stored":
                d["timestamp"] = datetime.fromisoformat(d["timestamp_utc"])
                d["received_at"] = now
                d["kafka"] = {"topic": a.topic, "partition": i % PARTITIONS, "offset": i // PARTITIONS}
            docs.append(d)
    client = MongoClient(a.uri)
    coll = client[a.database][a.collection]
    coll.create_index([("message_uuid", ASCENDING)], unique=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for i in range(0, len(docs), a.batch):
        coll.insert_many(docs[i:i + a.batch], ordered=False)
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    count = collection_count(client[a.database], a.collection)
    client.close()
    print(json.dumps({"insert_seconds": elapsed, "count": count,
                      "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)}))


# The curated BENCHMARKS.md keeps hand-written sections (scale-out, where the goals stand) above
# the generated report and older runs below it. A run replaces only the part between these two
# markers, and the run it replaces moves, headings one level down, to the top of "# Earlier runs",
# so a `make bench` never throws the history away.
LATEST_START = "<!-- bench/run.py: the latest run starts here -->"
LATEST_END = "<!-- bench/run.py: the latest run ends here -->"
EARLIER = "# Earlier runs"


def write_or_splice(path, lines, heading):
    """Writes the report to `path`, or splices it between the markers when `path` has them."""
    old = path.read_text() if path.exists() else ""
    if LATEST_START not in old or LATEST_END not in old:
        path.write_text("\n".join(lines))
        return
    report = "\n".join([heading, *lines[1:]]).rstrip() + "\n"
    head, rest = old.split(LATEST_START, 1)
    previous, tail = rest.split(LATEST_END, 1)
    demoted, fenced = [], False
    for line in previous.strip().split("\n"):
        fenced ^= line.startswith("```")  # a "# " inside a code block is a shell comment, not a heading
        demoted.append("#" + line if line.startswith("#") and not fenced else line)
    demoted = "\n".join(demoted) + "\n"
    if EARLIER in tail:
        before, after = tail.split(EARLIER, 1)
        tail = f"{before}{EARLIER}\n\n{demoted}{after}"
    else:
        tail = f"{tail.rstrip()}\n\n{EARLIER}\n\n{demoted}"
    path.write_text(f"{head}{LATEST_START}\n{report}\n{LATEST_END}{tail}")


# --- Entry point ----------------------------------------------------------------------------

def main():
    if len(sys.argv) > 1 and sys.argv[1] == "db-ceiling":
        return db_ceiling(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default=os.environ.get("BENCH_SCALE", "full"))
    p.add_argument("--bin", default=str(ROOT / "target/release/metricsctl"))
    p.add_argument("--out", help="report path (default: BENCHMARKS.md; a temp file for smoke)")
    p.add_argument("--repeat", type=int, default=0, help="runs of each producer and ceiling (default per scale)")
    p.add_argument("--codecs", default=os.environ.get("BENCH_CODECS"),
                   help=f"comma-separated compression codecs of the producer comparison, of {','.join(CODECS)} "
                   f"(default: {DEFAULT_CODECS['full']}; {DEFAULT_CODECS['smoke']} at smoke scale)")
    p.add_argument("--profile", choices=["auto", "on", "off"], default=os.environ.get("BENCH_PROFILE", "auto"),
                   help="auto = profile metricsctl where a goal is missed (not at smoke scale)")
    p.add_argument("--keep", action="store_true", help="keep topics, databases and the work folder")
    p.add_argument("--kafka-pids", default="", help="pids of the broker processes (default: .local/run/kafka*.pid)")
    p.add_argument("--ferretdb-pids", default="", help="pid of the database process (default: .local/run/ferretdb.pid)")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    p.add_argument("--source", default="", help="where the binary was built from, for the report "
                   "(default: the work tree's commit and uncommitted files)")
    args = p.parse_args()
    parse_codecs(args.codecs or DEFAULT_CODECS[args.scale])  # a wrong codec stops here, before any work
    out = args.out
    if not out:
        out = (tempfile.mkstemp(prefix="metricsctl-bench-smoke-", suffix=".md")[1] if args.scale == "smoke"
               else str(ROOT / "BENCHMARKS.md"))
    for tool in ("kcat", GNU_TIME):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is missing (make bench installs it)")
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"bench: {args.bin} is not built (cargo build --release)")
    t0 = time.monotonic()
    try:
        bench = Bench(args)
    except Exception as e:  # noqa: BLE001 - the services are not there: one line, not a traceback
        raise SystemExit(f"bench: cannot reach the services (KAFKA_BROKERS={os.environ.get('KAFKA_BROKERS')}, "
                         f"MONGODB_URI={redact_uri(os.environ.get('MONGODB_URI'))}): {e!r}; run `make up`")
    say(f"scale {args.scale}, run id {bench.run_id}, binary {os.path.relpath(bench.bin, ROOT)}, work folder {bench.work}")
    ok = False
    bench.results["notes"].extend(args.note)
    try:
        bench.collect_environment()
        bench.make_payloads()
        bench.producers()
        bench.ceilings()
        bench.catchup()
        bench.latency()
        bench.evaluate()
        bench.profile()
        ok = True
    except KeyboardInterrupt:
        say("interrupted")
    except BenchError as e:
        say(f"error: {e}")
    except Exception as e:  # noqa: BLE001 - say it in one line, keep the traceback for the log
        import traceback
        traceback.print_exc()
        say(f"error: {e!r}")
    finally:
        bench.cleanup()
    if not ok:
        return 1
    bench.write_report(out)
    for key, measured, target, met in bench.goals:
        say(f"goal {'n/a   ' if met is None else 'met   ' if met else 'MISSED'} {goal_text(key)}: {measured} (target {target})")
    say(f"report written to {out} after {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
