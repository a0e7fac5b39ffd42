#!/usr/bin/env python3
"""Consumer-group scale-out of `metricsctl consume`: 1, 2 and 3 members of one group.

For each member count k (1, 2, 3; each repeated --repeat times, in the order 1,2,3,3,2,1,... so
that a drift in the machine's load does not favour one k), it:

  1. creates a fresh three-partition topic and preloads it with --messages metrics (kcat, the
     same payloads bench/run.py uses: the exercise's generator, keyed by server id over 1,000
     servers, so all three partitions get data);
  2. starts k `metricsctl consume` processes at the same moment, one group, one fresh database,
     windows of 20, RUST_LOG=info, each logging to its own file;
  3. polls the database and times, from the start of the processes, the first stored raw
     document (probed every 100 ms) and the moment every message and every window is stored
     (counted with collStats, paced so that counting takes at most a tenth of one FerretDB
     core: at 100 ms it took about one, see wait_until_stored). The members do not exit by
     themselves (`--exit-when-idle` would add 13.3 s for a member that owns part of the
     topic): they are stopped with SIGTERM once the counts are final, and must exit 0;
  4. checks what was stored (raw count, duplicates, window offset spans disjoint across all
     windows of the run, the uncounted tail) and reads from each member's log the partitions it
     was given and the windows it stored.

The report (Markdown, to --out or stdout) compares every k with k=1 of the same run: ratios,
never a timed assertion. The machine is assumed shared and noisy.

    python bench/scaleout.py --bin target/release/metricsctl [--messages 30000] [--repeat 2] [--out FILE]

Needs KAFKA_BROKERS and MONGODB_URI (`make bench-scaleout` sources .local/services.env), kcat,
kafka-python and pymongo (.local/bench-venv). Every topic, group and database is unique to the
run and removed at the end, also when the run fails.
"""

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

# bench/run.py is the main suite: its payload generator, the list of variables metricsctl reads
# and a few Kafka helpers are reused as they are, so both benchmarks load the system the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # no bench/__pycache__ left in the work tree (not git-ignored)
import run as suite  # noqa: E402

ROOT = suite.ROOT
WINDOW = suite.WINDOW
PARTITIONS = suite.PARTITIONS
MEMBER_COUNTS = (1, 2, 3)
SERVERS = 1000
PAYLOAD_SEED = 20261126  # the seed bench/run.py draws its payloads with
POLL_INTERVAL = 0.1
# The largest share of one FerretDB core the poller may take (see wait_until_stored).
POLLER_DUTY = 0.1
MAX_PAUSE = 1.0
# A member stopped with SIGTERM finishes its step and leaves the group well within this (README:
# "exit 0.25 s after SIGTERM" even mid-rebalance); longer means something is stuck.
STOP_TIMEOUT = 30.0
# FerretDB busy on this many cores (of the run's wall time) or more: it, not metricsctl, is
# likely what limits the throughput.
FERRETDB_BOTTLENECK_CORES = 1.6


def say(msg):
    print(f"scaleout: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --- Reading the machine ----------------------------------------------------------------------

def machine_busy_ticks():
    """(busy, total) clock ticks of all cores since boot, from /proc/stat: how loaded the whole
    machine was over a span, metricsctl, the services and every other tenant together."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def ferretdb_pids():
    """The FerretDB server processes, found afresh per run: another test may restart the
    services between runs. pgrep -f also matches e.g. a `tail -f ferretdb.log`, so only
    processes whose own name starts with ferretdb count."""
    out = subprocess.run(["pgrep", "-f", "ferretdb"], capture_output=True, text=True)
    pids = []
    for tok in out.stdout.split():
        try:
            if Path(f"/proc/{tok}/comm").read_text().strip().startswith("ferretdb"):
                pids.append(int(tok))
        except (OSError, ValueError):
            pass
    return sorted(pids)


def kafka_pids():
    return sorted(p for p in (suite.read_pid(f) for f in (ROOT / ".local/run").glob("kafka*.pid")) if p)


def cpu_of(pids):
    """{pid: CPU seconds} of the live ones."""
    return {p: c for p in pids if (c := suite.proc_cpu_seconds(p)) is not None}


def cpu_delta(before, after):
    """CPU seconds the same processes used between two samples; None when one of them went away
    or appeared (a restarted service: its figure would mean nothing)."""
    if not before or set(before) != set(after):
        return None
    return sum(after[p] - before[p] for p in before)


# --- Member logs --------------------------------------------------------------------------

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s+(\w+)\s+(.*)$")
JOINED = re.compile(r"group \S+: joined as \S+ \(generation (\d+), ([^)]*)\), partitions \[([\d,]*)\] after ([\d.]+) s")
WINDOW_STORED = re.compile(r"^window \d+ stored: \d+ messages")
WINDOW_REPLAYED = re.compile(r"^window \S+ was already stored \(replayed\)")
DROPPED = re.compile(r"rebalancing; dropping the open window of (\d+) messages")
STOPPED = re.compile(r"consumer stopped: (\d+) messages read \((\d+) stored, (\d+) replayed, (\d+) dead-lettered\), "
                     r"(\d+) windows stored; the open window of (\d+) messages")
RESUMED = re.compile(r"^partition \d+: (?:starting at offset|offsets \S+ were deleted)")


def log_time(stamp):
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ" if "." in stamp else "%Y-%m-%dT%H:%M:%SZ") \
        .replace(tzinfo=timezone.utc).timestamp()


def parse_member_log(path, t0_wall):
    """What one member's INFO log says it did; times in seconds from the processes' start."""
    m = {"joins": [], "windows": 0, "replayed_windows": 0, "dropped": [], "stopped": None, "warnings": []}
    for line in Path(path).read_text(errors="replace").splitlines():
        parsed = LOG_LINE.match(line)
        if not parsed:
            continue
        at = log_time(parsed.group(1)) - t0_wall
        level, text = parsed.group(2), parsed.group(3)
        if level in ("WARN", "ERROR"):
            m["warnings"].append(f"{at:.2f} s {level} {text}")
        if j := JOINED.search(text):
            parts = [int(p) for p in j.group(3).split(",") if p]
            m["joins"].append({"at": at, "generation": int(j.group(1)), "role": j.group(2),
                               "partitions": parts, "join_s": float(j.group(4))})
        elif WINDOW_STORED.match(text):
            m["windows"] += 1
            m["last_window_at"] = at
        elif WINDOW_REPLAYED.match(text):
            m["replayed_windows"] += 1
        elif d := DROPPED.search(text):
            m["dropped"].append({"at": at, "messages": int(d.group(1))})
        elif s := STOPPED.search(text):
            m["stopped"] = {"at": at, "read": int(s.group(1)), "stored": int(s.group(2)),
                            "replayed": int(s.group(3)), "dead_lettered": int(s.group(4)),
                            "windows": int(s.group(5)), "open_window": int(s.group(6))}
        elif RESUMED.match(text) and m["joins"] and "reading_at" not in m["joins"][-1]:
            # The first partition line after a join: the member has looked up where to resume
            # (the group's offsets, the stored windows) and reads from here on.
            m["joins"][-1]["reading_at"] = at
    return m


# --- The benchmark ------------------------------------------------------------------------

class ScaleOut:
    # Borrowed from bench/run.py's Bench: they use only self.brokers and self.admin_call.
    admin_call = suite.Bench.admin_call
    wait_topic_ready = suite.Bench.wait_topic_ready

    def __init__(self, args):
        from pymongo import MongoClient

        self.args = args
        self.bin = str(Path(args.bin).resolve())
        self.brokers = os.environ["KAFKA_BROKERS"]
        self.mongodb_uri = os.environ["MONGODB_URI"]
        self.run_id = datetime.now(timezone.utc).strftime("%H%M%S") + uuid.uuid4().hex[:4]
        self.work = Path(tempfile.mkdtemp(prefix=f"metricsctl-scaleout-{self.run_id}-"))
        self.topics, self.groups, self.databases, self.live = [], [], [], []
        self.runs = []
        self.load_before = os.getloadavg()
        self.started = datetime.now(timezone.utc)
        self.admin_call(lambda admin: admin.list_topics())  # fails early when Kafka is not there
        self.mongo = MongoClient(self.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=10_000)
        self.mongo.admin.command("ping")

    # environment ----------------------------------------------------------------------------
    def collect_machine(self):
        cpu = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        git = lambda *a: suite.cmd_output(["git", "-C", str(ROOT), *a], default="")  # noqa: E731
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock").splitlines()]
        self.machine = {
            "nproc": os.cpu_count(),
            "cpu": cpu,
            "kernel": platform.release(),
            "bin": self.bin,
            "built": datetime.fromtimestamp(os.path.getmtime(self.bin), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "source": self.args.source or self.default_source(git, dirty),
        }

    def default_source(self, git, dirty):
        # Only a binary of this work tree's target/ is known to come from its sources.
        if not Path(self.bin).is_relative_to(ROOT / "target"):
            return "unknown: the binary is not in this work tree's target/ (pass --source)"
        return (f"{ROOT} at {git('rev-parse', '--short', 'HEAD') or 'unknown'} ({git('log', '-1', '--format=%s')})"
                + (f", uncommitted: {', '.join(dirty)}" if dirty else ""))

    # payloads ---------------------------------------------------------------------------------
    def make_payloads(self):
        """`key<TAB>json` lines drawn by the baseline producer's own generate_metric, seeded, the
        servers taken in turn, as bench/run.py makes its backlog. One file serves every run:
        each run has its own database, so the same message_uuids never meet."""
        spec = importlib.util.spec_from_file_location("baseline_producer", suite.PRODUCER_PY)
        producer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(producer)
        random.seed(PAYLOAD_SEED)
        servers = [f"srv{i:04d}" for i in range(1, SERVERS + 1)]
        self.payload_file = self.work / "payloads.tsv"
        with open(self.payload_file, "w") as f:
            for i in range(self.args.messages):
                sid = servers[i % len(servers)]
                f.write(f"{sid}\t{json.dumps(producer.generate_metric(sid))}\n")
        say(f"{self.args.messages:,} payloads generated over {len(servers)} servers")

    # Kafka ------------------------------------------------------------------------------------
    def create_topic(self, name):
        from kafka.admin import NewTopic

        self.topics.append(name)
        self.admin_call(lambda a: a.create_topics(
            [NewTopic(name=name, num_partitions=PARTITIONS, replication_factor=1)], timeout_ms=30_000))
        self.wait_topic_ready(name)

    def partition_counts(self, topic):
        from kafka import KafkaConsumer, TopicPartition

        meta = KafkaConsumer(bootstrap_servers=self.brokers.split(","), client_id="metricsctl-scaleout-meta",
                             enable_auto_commit=False)
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            begin, end = meta.beginning_offsets(tps), meta.end_offsets(tps)
            return [end[tp] - begin[tp] for tp in tps]
        finally:
            meta.close()

    def preload(self, topic):
        argv = ["kcat", "-P", "-b", self.brokers, "-t", topic, "-K", "\t",
                "-X", "acks=all", "-X", "partitioner=murmur2_random"]
        with open(self.payload_file, "rb") as stdin:
            out = subprocess.run(argv, stdin=stdin, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise BenchError(f"kcat -P into {topic} exited {out.returncode}: {out.stderr.strip()[-500:]}")
        counts = self.partition_counts(topic)
        if sum(counts) != self.args.messages:
            raise BenchError(f"topic {topic} holds {sum(counts)} messages, expected {self.args.messages}")
        if 0 in counts:
            raise BenchError(f"topic {topic}: a partition got no message ({counts}); members would idle")
        return counts

    def drop_group(self, group):
        """The group's committed offsets would otherwise stay in __consumer_offsets for a week."""
        try:
            self.admin_call(lambda a: a.delete_consumer_groups([group]))
            self.groups.remove(group)
        except Exception as e:  # noqa: BLE001 - left for the final cleanup
            say(f"could not delete group {group} now ({e}); the cleanup retries")

    def drop_topic(self, topic):
        try:
            self.admin_call(lambda a: a.delete_topics([topic], timeout_ms=30_000))
            self.topics.remove(topic)
        except Exception as e:  # noqa: BLE001 - left for the final cleanup
            say(f"could not delete {topic} now ({e}); the cleanup retries")

    # members ----------------------------------------------------------------------------------
    def consumer_argv(self, topic, group, database):
        """As bench/run.py's consumer_argv builds it, minus --exit-when-idle and --max-messages:
        a member's share is not known in advance, and idleness would cost 13.3 s per member."""
        return [self.bin, "consume", "--brokers", self.brokers, "--topic", topic, "--group", group,
                "--mongodb-uri", self.mongodb_uri, "--database", database,
                "--raw-collection", "raw", "--kpi-collection", "kpis", "--dlq-collection", "dlq",
                "--window-size", str(WINDOW)]

    def consumer_env(self):
        # Every variable metricsctl reads is removed so the caller's shell cannot leak in; the
        # members also run in the work folder, away from any .env file.
        env = {k: v for k, v in os.environ.items() if k not in suite.METRICSCTL_VARS}
        env["RUST_LOG"] = "info"
        return env

    def start_members(self, k, argv, tag):
        env = self.consumer_env()
        members = []
        for i in range(1, k + 1):
            log_path = self.work / f"{tag}-member{i}.log"
            with open(log_path, "wb") as log:
                # Own session: a Ctrl-C at the terminal reaches only this script, which then
                # stops the members itself (cleanup), by pid.
                popen = subprocess.Popen(argv, env=env, cwd=self.work, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
            member = {"index": i, "popen": popen, "log": log_path}
            members.append(member)
            self.live.append(member)
        return members

    def stop_members(self, members):
        """SIGTERM to all at once, as an operator stopping the group would; each must exit 0."""
        for m in members:
            m["cpu_s"] = suite.proc_cpu_seconds(m["popen"].pid)
            try:
                m["popen"].send_signal(signal.SIGTERM)
            except OSError:
                pass
        for m in members:
            try:
                m["rc"] = m["popen"].wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                m["popen"].kill()
                m["rc"] = f"killed: still running {STOP_TIMEOUT:.0f} s after SIGTERM"
                m["popen"].wait()
            if m in self.live:
                self.live.remove(m)

    def log_tail(self, member, lines=6):
        text = Path(member["log"]).read_text(errors="replace").splitlines()
        return "\n    ".join(text[-lines:])

    # one run ----------------------------------------------------------------------------------
    def measure(self, k, repeat, position):
        n = self.args.messages
        tag = f"k{k}-r{repeat}"
        topic = group = f"scaleout-{self.run_id}-{tag}"
        database = f"scaleout_{self.run_id}_k{k}_r{repeat}"
        self.databases.append(database)
        run = {"k": k, "n": n, "repeat": repeat, "position": position, "topic": topic, "database": database,
               "error": None, "checks": []}
        self.runs.append(run)
        members = []
        try:
            self.create_topic(topic)
            run["partition_counts"] = self.preload(topic)
            argv = self.consumer_argv(topic, group, database)
            run["command"] = "RUST_LOG=info " + " ".join(shlex.quote(a) for a in argv)

            pids = {"ferretdb": ferretdb_pids(), "kafka": kafka_pids()}
            start = self.sample(pids)
            t0_wall, t0 = time.time(), time.monotonic()
            self.groups.append(group)
            members = self.start_members(k, argv, tag)
            run["spawn_s"] = time.monotonic() - t0
            done = self.wait_until_stored(run, members, database, t0, pids)
            # Server CPU over the timed span only: from the start to the poll that saw the
            # final counts (the settling after it is idle time).
            span = run["done_s"]
            run["ferretdb_cpu_s"] = cpu_delta(start["ferretdb"], done["ferretdb"])
            run["kafka_cpu_s"] = cpu_delta(start["kafka"], done["kafka"])
            busy = (done["busy"][0] - start["busy"][0]) / max(1, done["busy"][1] - start["busy"][1])
            run["machine_busy_cores"] = busy * (os.cpu_count() or 1)
            run["ferretdb_cores"] = run["ferretdb_cpu_s"] / span if run["ferretdb_cpu_s"] is not None else None

            run["sigterm_s"] = time.time() - t0_wall
            self.stop_members(members)
            cost = self.count_cost(database, pids)
            run["poller_ferretdb_s"] = None if None in cost.values() else (
                run["polls"]["kpis"] * cost["kpis"] + run["polls"]["raw"] * cost["raw"])
            run["members"] = []
            for m in members:
                parsed = parse_member_log(m["log"], t0_wall)
                parsed.update(index=m["index"], rc=m["rc"], cpu_s=m.get("cpu_s"))
                run["members"].append(parsed)
            self.check(run, database)
        except BenchError as e:
            run["error"] = str(e)
            say(f"[{tag}] error: {e}")
        finally:
            for m in members:
                if m in self.live:
                    m["popen"].kill()
                    m["popen"].wait()
                    self.live.remove(m)
            self.drop_database(database)
            if group in self.groups:
                self.drop_group(group)
            if topic in self.topics:
                self.drop_topic(topic)
        return run

    @staticmethod
    def sample(pids):
        """CPU seconds of the services and the machine's busy ticks, now."""
        return {"ferretdb": cpu_of(pids["ferretdb"]), "kafka": cpu_of(pids["kafka"]), "busy": machine_busy_ticks()}

    def wait_until_stored(self, run, members, database, t0, pids):
        """Polls the database until every message is stored raw and the windows are final;
        records when the first raw document and the last document appeared.

        Counting is not free here: on FerretDB (SQLite) a collStats of 30,000 raw documents
        costs the server 40-90 ms of CPU, and of 1,500 windows about 30 ms (measured), so
        counting both every 100 ms would keep about one FerretDB core busy and the poller
        would measure itself. Hence:
          - until the first raw document: find_one (a LIMIT 1, under a millisecond) every 100 ms;
          - then the KPI count alone (windows × 20 is the progress), and the raw count only once
            the windows are nearly complete, until it reaches N;
          - after each count, a pause of (1 / POLLER_DUTY - 1) times its duration (at most
            MAX_PAUSE), which keeps the poller's share of one FerretDB core near POLLER_DUTY.
            The resulting resolution (the gap between the last two counts) is reported.

        The windows are final when at most 19 messages per member are left uncounted (each
        member's open window holds fewer than 20) and neither count has moved for --settle
        seconds: a member can store its last window a moment after another's last raw batch.
        The time reported is the count that first saw the final figures, not the end of the
        settling. Returns the CPU sample taken at that count."""
        n, k = self.args.messages, len(members)
        db = self.mongo[database]
        raw = windows = 0
        last_change, sample_at_change = 0.0, self.sample(pids)
        progress, count_times = [], []
        polls = {"find_one": 0, "raw": 0, "kpis": 0}
        run["first_raw_s"] = run["all_raw_s"] = None
        deadline = t0 + self.args.timeout
        while True:
            for m in members:
                if m["popen"].poll() is not None:
                    raise BenchError(f"member {m['index']} exited early with {m['popen'].returncode}:\n    {self.log_tail(m)}")
            q0 = time.monotonic()
            if run["first_raw_s"] is None:
                polls["find_one"] += 1
                if db["raw"].find_one({}, {"_id": 1}) is not None:
                    run["first_raw_s"] = time.monotonic() - t0
            else:
                polls["kpis"] += 1
                now_windows = suite.collection_count(db, "kpis")
                now_raw = raw
                if raw < n and n - now_windows * WINDOW <= (WINDOW - 1) * k:
                    polls["raw"] += 1
                    now_raw = suite.collection_count(db, "raw")
                at = time.monotonic() - t0
                count_times.append(at)
                if (now_raw, now_windows) != (raw, windows):
                    # Reading /proc costs microseconds: sampled only when the counts move.
                    raw, windows, last_change, sample_at_change = now_raw, now_windows, at, self.sample(pids)
                    polls_at_change = dict(polls)
                    progress.append((at, windows))
                if raw >= n and run["all_raw_s"] is None:
                    run["all_raw_s"] = at
                if raw >= n and n - windows * WINDOW <= (WINDOW - 1) * k and at - last_change >= self.args.settle:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"after {self.args.timeout:.0f} s: {raw} of {n} raw documents (last count) and "
                                 f"{windows} windows stored")
            took = time.monotonic() - q0
            # A count slowed down by a busy machine (not by its own cost) must not stretch the
            # pause without limit: at most MAX_PAUSE, which bounds the resolution.
            time.sleep(min(MAX_PAUSE, max(POLL_INTERVAL - took, took / POLLER_DUTY - took)))
        run["done_s"] = last_change
        run["windows_polled"] = windows
        run["polls"] = polls_at_change  # the counts within the timed span
        # The count before the final one saw something else: the end lies between the two.
        final = count_times.index(last_change)
        run["resolution_s"] = last_change - count_times[final - 1] if final > 0 else None
        # Throughput once every member works: windows between 10 % and 90 % of N, which leaves
        # out the start (joins, rebalances) and the tail.
        lo = next((p for p in progress if p[1] * WINDOW >= 0.1 * n), None)
        hi = next((p for p in progress if p[1] * WINDOW >= 0.9 * n), None)
        run["steady_rate"] = (hi[1] - lo[1]) * WINDOW / (hi[0] - lo[0]) if lo and hi and hi[0] > lo[0] else None
        say(f"[k={k} #{run['repeat']}] first raw {run['first_raw_s']:.2f} s, all raw {run['all_raw_s']:.2f} s, "
            f"all stored {run['done_s']:.2f} s ({n / run['done_s']:,.0f} msg/s), {windows} windows")
        return sample_at_change

    def count_cost(self, database, pids, calls=3):
        """FerretDB CPU seconds of one collStats of each collection at its final size (an upper
        bound for the earlier, smaller counts), to say how much of the server's CPU the poller
        took. Other tenants of the database add to it: a rough figure."""
        cost = {}
        for collection in ("raw", "kpis"):
            before = cpu_of(pids["ferretdb"])
            for _ in range(calls):
                suite.collection_count(self.mongo[database], collection)
            spent = cpu_delta(before, cpu_of(pids["ferretdb"]))
            cost[collection] = None if spent is None else spent / calls
        return cost

    # invariants -------------------------------------------------------------------------------
    def check(self, run, database):
        """What must hold whatever the timing; each as (name, ok, detail). ok None = not checkable."""
        n, k = self.args.messages, run["k"]
        db = self.mongo[database]
        checks = run["checks"]
        raws = list(db["raw"].find({}, {"_id": 0, "message_uuid": 1, "kafka.partition": 1, "kafka.offset": 1}))
        checks.append(("raw documents == N", len(raws) == n, f"{len(raws):,}"))
        uuids = {r["message_uuid"] for r in raws}
        checks.append(("no duplicate message_uuid", len(uuids) == len(raws), f"{len(raws) - len(uuids)} duplicates"))
        dlq = suite.collection_count(db, "dlq")
        checks.append(("no dead letters", dlq == 0, f"{dlq}"))

        windows = list(db["kpis"].find({}, {"_id": 1, "message_count": 1, "kafka.partitions": 1}))
        run["windows"] = len(windows)
        checks.append(("no window stored after the timing ended", len(windows) == run["windows_polled"],
                       f"{run['windows_polled']:,} when timed, {len(windows):,} at the end"))
        bad_shape, spans = [], {}
        for w in windows:
            parts = w["kafka"]["partitions"]
            if w["message_count"] != WINDOW or sum(p["message_count"] for p in parts) != w["message_count"]:
                bad_shape.append(w["_id"])
            for p in parts:
                # Only valid messages here, so a window's messages of one partition are
                # consecutive offsets: the span's length is its count.
                if p["last_offset"] - p["first_offset"] + 1 != p["message_count"]:
                    bad_shape.append(f"{w['_id']} p{p['partition']}")
                spans.setdefault(p["partition"], []).append((p["first_offset"], p["last_offset"], w["_id"]))
        checks.append((f"every window holds {WINDOW} consecutive-offset messages", not bad_shape,
                       f"{len(bad_shape)} bad: {bad_shape[:3]}" if bad_shape else f"{len(windows)} windows"))

        overlaps, holes = [], []
        for part, xs in spans.items():
            xs.sort()
            for (a0, a1, aid), (b0, b1, bid) in zip(xs, xs[1:]):
                if b0 <= a1:
                    overlaps.append(f"p{part} {aid} [{a0},{a1}] and {bid} [{b0},{b1}]")
                elif b0 != a1 + 1:
                    holes.append(f"p{part} offsets {a1 + 1}..{b0 - 1}")
            if xs and xs[0][0] != 0:
                holes.append(f"p{part} offsets 0..{xs[0][0] - 1}")
        checks.append(("window offset spans disjoint across all windows", not overlaps,
                       f"{len(overlaps)} overlaps: {overlaps[:2]}" if overlaps else "none overlap"))
        # Windows are stored in order, so what no window counts must be the tail of its partition.
        checks.append(("uncounted messages are partition tails (no hole)", not holes,
                       f"holes: {holes[:3]}" if holes else "no hole"))

        covered = 0
        for r in raws:
            xs = spans.get(r["kafka"]["partition"], [])
            off = r["kafka"]["offset"]
            # xs is sorted and disjoint: a bisection would do, but 30,000 × a few hundred is cheap.
            if any(a <= off <= b for a, b, _ in xs):
                covered += 1
        counted = sum(w["message_count"] for w in windows)
        run["covered"], run["uncounted"] = covered, n - covered
        checks.append(("every counted message is a stored raw document", covered == counted,
                       f"{covered:,} raw in spans, {counted:,} counted"))
        generations = max((j["generation"] for m in run["members"] for j in m["joins"]), default=1)
        run["generations"] = generations
        floor = n - k * (WINDOW - 1) * generations
        checks.append((f"covered ≥ N − k·{WINDOW - 1}·generations", covered >= floor,
                       f"{covered:,} ≥ {floor:,} (k={k}, {generations} generations)"))

        # Exact accounting from the logs: what no window counts is what the members held in
        # their open windows when stopped. Not checkable when a member rebalanced while the
        # group stopped (its open window then moved or was dropped).
        stopped = [m["stopped"] for m in run["members"]]
        late = [d for m in run["members"] for d in m["dropped"] if d["at"] >= run["sigterm_s"]]
        if None in stopped:
            checks.append(("uncounted == open windows at stop", False, "a member logged no `consumer stopped` line"))
        elif late:
            checks.append(("uncounted == open windows at stop", None, "a member rebalanced while the group stopped"))
        else:
            held = sum(s["open_window"] for s in stopped)
            checks.append(("uncounted == open windows at stop", held == run["uncounted"],
                           f"{run['uncounted']} uncounted, {' + '.join(str(s['open_window']) for s in stopped)} held"))
        exits = [m["rc"] for m in run["members"]]
        checks.append(("every member exits 0 on SIGTERM", all(rc == 0 for rc in exits), f"{exits}"))
        idle = [m["index"] for m in run["members"] if m["windows"] == 0]
        checks.append(("every member stored windows", not idle, f"idle: members {idle}" if idle else
                       " / ".join(str(m["windows"]) for m in run["members"])))
        run["ok"] = all(ok is not False for _, ok, _ in checks)

    # cleanup ----------------------------------------------------------------------------------
    def drop_database(self, name):
        try:
            self.mongo.drop_database(name)
            self.databases.remove(name)
        except Exception as e:  # noqa: BLE001 - left for the final cleanup
            say(f"could not drop database {name} now ({e}); the cleanup retries")

    def cleanup(self):
        for m in list(self.live):
            try:
                m["popen"].kill()
                m["popen"].wait(timeout=10)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        self.live.clear()
        if self.args.keep:
            say(f"--keep: leaving topics {self.topics}, databases {self.databases}, {self.work}")
            return
        for db in list(self.databases):
            self.drop_database(db)
        for group in list(self.groups):
            self.drop_group(group)
        existing = set(self.topics)
        try:
            existing = set(self.admin_call(lambda a: a.list_topics()))
        except Exception:  # noqa: BLE001 - try them all
            pass
        for topic in [t for t in self.topics if t in existing]:
            self.drop_topic(topic)
        try:
            self.mongo.close()
        except Exception:  # noqa: BLE001
            pass
        if self.args.keep_logs:
            say(f"member logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        left = len(self.topics) + len(self.groups) + len(self.databases)
        say(f"cleaned up run {self.run_id}" + (f": {self.topics} {self.groups} {self.databases} could not be removed" if left else ""))


# --- The report ---------------------------------------------------------------------------

def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def assignment_history(member):
    def one(j):
        resumed = f", reading from {j['reading_at']:.1f} s" if "reading_at" in j else ""
        return f"g{j['generation']}→[{','.join(map(str, j['partitions']))}] at {j['at']:.1f} s{resumed}"
    return "; ".join(one(j) for j in member["joins"]) or "never joined"


def last_window_logged(run):
    """When the run's last window was stored, by its member's log: a lower bound of the end (a
    member's last step may still store a few raw messages that close no window)."""
    return max((m["last_window_at"] for m in run["members"] if "last_window_at" in m), default=None)


def reread(run):
    """Messages read again after a rebalance, from the members' totals: those of dropped open
    windows, and those of steps a member stored raw but whose windows it never stored (the
    step is abandoned when the rebalance is noticed; it appears in no member's totals, so
    N + replayed - read counts it)."""
    replayed = sum(m["stopped"]["replayed"] for m in run["members"] if m["stopped"])
    read = sum(m["stopped"]["read"] for m in run["members"] if m["stopped"])
    dropped = sum(d["messages"] for m in run["members"] for d in m["dropped"])
    return {"replayed": replayed, "dropped": dropped, "abandoned": run["n"] + replayed - read}


def write_report(so, load_after):
    args, mc = so.args, so.machine
    n = args.messages
    L = []
    w = L.append
    # A run that raised, or was interrupted, has no checks: it is listed, not measured.
    ok_runs = [r for r in so.runs if not r["error"] and "ok" in r]
    w("# metricsctl consumer-group scale-out")
    w("")
    w(f"Run {so.run_id}, {so.started.strftime('%Y-%m-%d %H:%M UTC')}: `bench/scaleout.py --messages {n} "
      f"--repeat {args.repeat}`. Every figure is compared only with figures of this run.")
    w("")
    w(f"- machine: {mc['nproc']} cores ({mc['cpu']}), kernel {mc['kernel']}; load average before "
      f"{' '.join(f'{x:.2f}' for x in so.load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")
    w(f"- binary: `{mc['bin']}`, built {mc['built']}, from {mc['source']}")
    w(f"- workload: N = {n:,} messages preloaded by kcat on a fresh {PARTITIONS}-partition topic per run "
      f"(keyed by server id, {SERVERS} servers), a fresh group and database per run, windows of {WINDOW}")
    w("- order of the runs: " + ", ".join(f"k={r['k']}" for r in so.runs))
    w("- timing: from the start of the k processes (spawned together) to the first database count that saw every "
      "message stored raw and the windows final (at most 19 messages per member uncounted, then still for "
      f"{args.settle:g} s). The first raw document is probed every 100 ms (find_one); the counts (collStats) are "
      f"paced to take at most {POLLER_DUTY:.0%} of one FerretDB core, so the end is known to within the "
      "\"resolution\" column; the last window's log line bounds it from below")
    w("")

    by_k = {k: [r for r in ok_runs if r["k"] == k] for k in MEMBER_COUNTS}
    base = median_or_none([r["done_s"] for r in by_k[1]])
    base_steady = median_or_none([r["steady_rate"] for r in by_k[1]])
    base_logged = median_or_none([last_window_logged(r) for r in by_k[1]])
    w("## Throughput by member count")
    w("")
    w("| members | all stored, median s | each repeat s | msg/s | × k=1 | last window logged, median s | × k=1 | "
      "steady msg/s (10–90 %) | × k=1 | first raw doc s | windows per member (each repeat) | "
      "FerretDB CPU s (cores) | machine busy cores | checks |")
    w("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |")
    for k in MEMBER_COUNTS:
        rs = by_k[k]
        if not rs:
            w(f"| {k} | - | - | - | - | - | - | - | - | - | - | - | - | no completed run |")
            continue
        med = median_or_none([r["done_s"] for r in rs])
        steady = median_or_none([r["steady_rate"] for r in rs])
        fer = median_or_none([r["ferretdb_cpu_s"] for r in rs])
        fer_cores = median_or_none([r["ferretdb_cores"] for r in rs])
        speedup = base / med if base and med else None
        steady_x = steady / base_steady if steady and base_steady else None
        logged = median_or_none([last_window_logged(r) for r in rs])
        logged_x = base_logged / logged if base_logged and logged else None
        inv = "all ok" if all(r["ok"] for r in rs) else "**FAILED** (see below)"
        w(f"| {k} | {fmt(med)} | {', '.join(fmt(r['done_s']) for r in rs)} | {n / med:,.0f} | {fmt(speedup)} | "
          f"{fmt(logged)} | {fmt(logged_x)} | "
          f"{'-' if steady is None else f'{steady:,.0f}'} | {fmt(steady_x)} | "
          f"{fmt(median_or_none([r['first_raw_s'] for r in rs]))} | "
          f"{'; '.join(' / '.join(str(m['windows']) for m in r['members']) for r in rs)} | {fmt(fer, 1)} ({fmt(fer_cores)}) | "
          f"{fmt(median_or_none([r['machine_busy_cores'] for r in rs]))} | {inv} |")
    w("")
    failed = [r for r in so.runs if r not in ok_runs]
    for r in failed:
        w(f"- run k={r['k']} #{r['repeat']} did not complete: {r['error'] or 'interrupted'}")
    if failed:
        w("")

    w("## Each run")
    w("")
    w("| run | partitions' messages | first raw s | all raw s | all stored s (resolution) | last window logged s | "
      "windows | msgs in windows | uncounted | generations | all reading from s | re-read: dropped open / abandoned steps | "
      "FerretDB CPU s (poller's, est.) | Kafka CPU s | members' CPU s |")
    w("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |")
    for r in ok_runs:
        reading = [j.get("reading_at") for m in r["members"] for j in m["joins"][-1:]]
        last_window = last_window_logged(r)
        again = reread(r)
        w(f"| k={r['k']} #{r['repeat']} | {' / '.join(f'{c:,}' for c in r['partition_counts'])} | "
          f"{fmt(r['first_raw_s'])} | {fmt(r['all_raw_s'])} | {fmt(r['done_s'])} (±{fmt(r['resolution_s'])}) | "
          f"{fmt(last_window)} | {r['windows']:,} | {r['covered']:,} | {r['uncounted']} | {r['generations']} | "
          f"{'-' if None in reading else fmt(max(reading), 1)} | {again['dropped']} / {again['abandoned']} | "
          f"{fmt(r['ferretdb_cpu_s'], 1)} ({fmt(r['poller_ferretdb_s'], 1)}) | {fmt(r['kafka_cpu_s'], 1)} | "
          f"{' + '.join(fmt(m['cpu_s'], 1) for m in r['members'])} |")
    w("")
    w("CPU seconds are over the timed span, start to all stored (the members': up to the SIGTERM, a few seconds "
      "later, idle meanwhile); FerretDB's include whatever other tenants of the shared database did meanwhile. "
      "\"all reading from\": when the last member, after its last join, had looked up where to resume and started "
      "reading. \"re-read\": messages stored raw before a rebalance and counted in windows only after it, by the "
      "partitions' next owner: those of open windows dropped, and those of steps abandoned whole (stored raw, "
      "their windows refused because the member no longer owned the partitions), which appear in no member's "
      "totals (N + replayed − read).")
    w("")

    w("## Each member")
    w("")
    w("| run | member | assignments (generation → partitions, joined at, reading from) | windows stored | replayed windows | "
      "msgs read | stored raw | replayed msgs | open windows dropped (msgs at s) | open at stop | exit | WARN/ERROR |")
    w("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |")
    for r in ok_runs:
        for m in r["members"]:
            s = m["stopped"] or {}
            dropped = ", ".join(f"{d['messages']} at {d['at']:.1f} s" for d in m["dropped"]) or "-"
            w(f"| k={r['k']} #{r['repeat']} | {m['index']} | {assignment_history(m)} | {m['windows']:,} | "
              f"{m['replayed_windows']} | {s.get('read', '-')} | {s.get('stored', '-')} | {s.get('replayed', '-')} | "
              f"{dropped} | {s.get('open_window', '-')} | {m['rc']} | {len(m['warnings'])} |")
    w("")

    w("## Checks")
    w("")
    for r in ok_runs:
        w(f"- k={r['k']} #{r['repeat']}: " + "; ".join(
            f"{name}: {'ok' if ok else 'n/a' if ok is None else '**FAILED**'} ({detail})" for name, ok, detail in r["checks"]))
    w("")

    w("## Reading it")
    w("")
    for line in observations(so, by_k, base):
        w(f"- {line}")
    w("")
    w("## Command of a member")
    w("")
    w("```")
    w(ok_runs[0]["command"] if ok_runs else "(no run completed)")
    w("```")
    return "\n".join(L) + "\n"


def observations(so, by_k, base):
    """Plain statements the figures support, so the report says what limits the scale-out."""
    out = []
    cores = so.machine["nproc"] or 1
    all_runs = [r for rs in by_k.values() for r in rs]
    fer = [r["ferretdb_cores"] for r in all_runs if r["ferretdb_cores"] is not None]
    busy = [r["machine_busy_cores"] for r in all_runs]
    if fer:
        peak = max(fer)
        if peak >= FERRETDB_BOTTLENECK_CORES:
            out.append(f"FerretDB used up to {peak:.2f} cores of {cores} while the members worked: it is likely the "
                       "bottleneck, and more members cannot store faster than it writes.")
        else:
            out.append(f"FerretDB used at most {peak:.2f} cores of {cores} during the timed spans.")
    ratios = [sum(m["cpu_s"] or 0 for m in r["members"]) / r["ferretdb_cpu_s"] for r in all_runs if r["ferretdb_cpu_s"]]
    if ratios:
        out.append(f"The members together used {min(ratios):.0%}–{max(ratios):.0%} of the CPU FerretDB used in the same "
                   "run: the time per message is spent mostly in the database, so added members likely share its capacity "
                   "rather than add to it.")
    if busy and max(busy) >= 0.9 * cores:
        out.append(f"The whole machine was busy on {max(busy):.2f} of {cores} cores at peak (all processes, other "
                   "tenants included): with the broker, the database and the members on the same cores, a member "
                   "added mostly takes CPU from the others.")
    if base:
        for k in (2, 3):
            med = median_or_none([r["done_s"] for r in by_k[k]])
            if med:
                # The ideal is set by the busiest member: the range assignor gives 2 members of 3
                # partitions 2 and 1, so one of them has two thirds of the messages.
                ideal = median_or_none([sum(m["windows"] for m in r["members"]) / max(m["windows"] for m in r["members"])
                                        for r in by_k[k] if any(m["windows"] for m in r["members"])])
                out.append(f"k={k}: {base / med:.2f} × the throughput of k=1 (ideal {fmt(ideal)} × with this "
                           "assignment: total windows / the busiest member's).")
    for r in all_runs:
        if r["spawn_s"] > 0.2:
            out.append(f"k={r['k']} #{r['repeat']}: starting the {r['k']} processes took {r['spawn_s']:.2f} s.")
        for m in r["members"]:
            if m["windows"] == 0:
                out.append(f"k={r['k']} #{r['repeat']}: member {m['index']} stored no window ({assignment_history(m)}).")
            for line in m["warnings"][:3]:
                out.append(f"k={r['k']} #{r['repeat']} member {m['index']}: `{suite.md_cell(line, 200)}`")
        run_name = f"k={r['k']} #{r['repeat']}"
        joins = [(m["index"], j) for m in r["members"] for j in m["joins"]]
        slow = [f"member {i} generation {j['generation']} {j['join_s']:.1f} s" for i, j in joins if j["join_s"] >= 1.0]
        if slow:
            out.append(f"{run_name}: joins that waited ≥ 1 s for the group: {', '.join(slow)}.")
        stalls = [f"member {i} {j['reading_at'] - j['at']:.1f} s" for i, j in joins
                  if "reading_at" in j and j["reading_at"] - j["at"] >= 1.0]
        if stalls:
            out.append(f"{run_name}: from a join to reading (looking up where to resume), nothing is consumed: "
                       f"{', '.join(stalls)}.")
        again = reread(r)
        if again["dropped"] or again["abandoned"]:
            out.append(f"{run_name}: {r['generations']} generations; {again['replayed']} messages replayed: "
                       f"{again['dropped']} of open windows dropped at rebalances (logged), {again['abandoned']} of "
                       "steps abandoned whole at a rebalance (stored raw, their windows never stored; in no member's totals).")
    polled = [r for r in all_runs if r.get("poller_ferretdb_s") is not None and r["ferretdb_cpu_s"]]
    if polled:
        share = max(r["poller_ferretdb_s"] / r["ferretdb_cpu_s"] for r in polled)
        out.append(f"The poller's own counts are estimated at up to {share:.0%} of FerretDB's CPU in a run "
                   "(collStats cost at the final sizes × counts made).")
    return out


# --- Entry point --------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(ROOT / "target/release/metricsctl"))
    p.add_argument("--messages", type=int, default=30_000, help="backlog per run (default 30,000)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each member count (default 2)")
    p.add_argument("--out", help="report path (default: standard output)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds the counts must stay still before the windows count as final (default 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="limit per run, seconds (default 300)")
    p.add_argument("--source", default="", help="where the binary was built from, for the report "
                   "(default: this work tree's commit and uncommitted files)")
    p.add_argument("--keep", action="store_true", help="keep topics, databases and the work folder")
    p.add_argument("--keep-logs", action="store_true", help="keep the work folder with the members' logs")
    args = p.parse_args()
    missing = [v for v in ("KAFKA_BROKERS", "MONGODB_URI") if not os.environ.get(v)]
    if missing:
        raise SystemExit(f"scaleout: {' and '.join(missing)} not set; "
                         "`set -a; source .local/services.env; set +a` (make bench-scaleout does it)")
    if not shutil.which("kcat"):
        raise SystemExit("scaleout: kcat is missing (apt-get install kcat)")
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"scaleout: {args.bin} is not built (cargo build --release)")
    if args.messages < WINDOW * PARTITIONS or args.repeat < 1:
        raise SystemExit(f"scaleout: --messages must be at least {WINDOW * PARTITIONS} and --repeat at least 1")
    t0 = time.monotonic()
    try:
        so = ScaleOut(args)
    except Exception as e:  # noqa: BLE001 - the services are not there: one line, not a traceback
        raise SystemExit(f"scaleout: cannot reach the services (KAFKA_BROKERS={os.environ.get('KAFKA_BROKERS')}, "
                         f"MONGODB_URI={suite.redact_uri(os.environ.get('MONGODB_URI'))}): {e!r}")
    say(f"run id {so.run_id}, binary {so.bin}, {args.messages:,} messages, {args.repeat} repeat(s), work folder {so.work}")
    order = []
    for rep in range(args.repeat):
        order += list(MEMBER_COUNTS) if rep % 2 == 0 else list(reversed(MEMBER_COUNTS))
    completed = False
    try:
        so.collect_machine()
        so.make_payloads()
        seen = {}
        for position, k in enumerate(order, 1):
            seen[k] = seen.get(k, 0) + 1
            say(f"[{position}/{len(order)}] k={k} #{seen[k]}")
            so.measure(k, seen[k], position)
        completed = True
    except KeyboardInterrupt:
        say("interrupted")
    except Exception as e:  # noqa: BLE001 - one line; the traceback for whoever debugs it
        import traceback
        traceback.print_exc()
        say(f"error: {e!r}")
    finally:
        so.cleanup()
    report = write_report(so, os.getloadavg())
    if args.out:
        Path(args.out).write_text(report)
        say(f"report written to {args.out} after {time.monotonic() - t0:.0f} s")
    else:
        sys.stdout.write(report)
    good = completed and all(not r["error"] and r.get("ok") for r in so.runs)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
