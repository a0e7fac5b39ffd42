"""What TLS and SASL cost metricsctl: the producer and the consumer, each run over the plaintext
listener and over the SASL_SSL one (SCRAM-SHA-512) of the local services, alternately, the same
work each time; prints each run and the ratio of the medians (SASL_SSL / plaintext throughput).

    make bench-tls                      (also the last step of `make bench`)
    python bench/tls_cost.py --bin target/release/metricsctl [--reports 4000] [--produce-reports 40000] [--repeat 3]

Needs `make up` (the LOCAL_KAFKA_* names of .local/services.env) and the bench venv (pymongo and
kafka-python, to drop what it made). The issue's goal: TLS costs at most 10 % of throughput.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

GOAL = 0.90  # SASL_SSL throughput / plaintext throughput, at least
SERVERS = 5  # metricsctl's default fleet: messages per report


def env_of(mode):
    """metricsctl's variables for one mode, from the environment `make` loads from services.env."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_") or k == "KAFKA_VERSION"}
    e["MONGODB_URI"] = os.environ["MONGODB_URI"]
    e["RUST_LOG"] = "warn"
    if mode == "plaintext":
        e["KAFKA_BROKERS"] = os.environ["KAFKA_BROKERS"]
    else:
        e.update({
            "KAFKA_BROKERS": os.environ["LOCAL_KAFKA_SASL_SSL_BROKERS"],
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": os.environ["LOCAL_KAFKA_SASL_USERNAME"],
            "KAFKA_SASL_PASSWORD": os.environ["LOCAL_KAFKA_SASL_PASSWORD"],
            "KAFKA_SSL_CA_LOCATION": os.environ["LOCAL_KAFKA_SSL_CA_LOCATION"],
        })
    return e


def timed(argv, env):
    started = time.monotonic()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
    wall = time.monotonic() - started
    if r.returncode != 0:
        sys.exit(f"tls_cost: {' '.join(argv[:2])} failed ({r.returncode}): {r.stderr[-2000:]}")
    return wall


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/metricsctl")
    p.add_argument("--reports", type=int, default=4000, help="reports the consumer reads per run (5 messages each)")
    p.add_argument("--produce-reports", type=int, default=40000,
                   help="reports the producer sends per run (5 messages each); more than the consumer reads, since "
                        "at 20,000 messages a producer run lasts about 0.1 s and its connection set-up (the TLS "
                        "handshake and SCRAM exchange among it) weighs as much as its sending")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    if "LOCAL_KAFKA_SASL_SSL_BROKERS" not in os.environ:
        sys.exit("tls_cost: LOCAL_KAFKA_SASL_SSL_BROKERS is not set: run `make up`, then source .local/services.env")
    run_id = uuid.uuid4().hex[:8]
    messages = args.reports * SERVERS
    sent = max(args.produce_reports, args.reports) * SERVERS
    rates = {("produce", m): [] for m in ("plaintext", "sasl_ssl")}
    rates.update({("consume", m): [] for m in ("plaintext", "sasl_ssl")})
    topics, databases = [], []
    try:
        # Round 0 warms the broker and the page cache and is not counted; then the order
        # alternates (plaintext first, then SASL_SSL first, ...) so a drift favours neither.
        for rep in range(0, args.repeat + 1):
            order = ("plaintext", "sasl_ssl") if rep % 2 else ("sasl_ssl", "plaintext")
            for mode in order:
                name = f"bench-tls-{run_id}-{rep}-{mode}"
                topics.append(name)
                databases.append(name.replace("-", "_"))
                env = env_of(mode)
                produced = sent / timed([args.bin, "produce", "--topic", name, "--interval", "0",
                                         "--count", str(sent // SERVERS)], env)
                consumed = messages / timed([args.bin, "consume", "--topic", name, "--group", name,
                                             "--database", databases[-1], "--max-messages", str(messages)], env)
                if rep > 0:
                    rates[("produce", mode)].append(produced)
                    rates[("consume", mode)].append(consumed)
                print(f"[{rep}/{args.repeat}{' warm-up' if rep == 0 else ''}] {mode:9}: produce {produced:9,.0f} msg/s "
                      f"({sent:,} messages), consume {consumed:9,.0f} msg/s ({messages:,} messages)", flush=True)
    finally:
        cleanup(topics, databases)
    worst = 1.0
    for side in ("produce", "consume"):
        plain = statistics.median(rates[(side, "plaintext")])
        secured = statistics.median(rates[(side, "sasl_ssl")])
        ratio = secured / plain
        worst = min(worst, ratio)
        print(f"{side}: plaintext {plain:,.0f} msg/s, SASL_SSL (SCRAM-SHA-512) {secured:,.0f} msg/s: "
              f"ratio {ratio:.3f} (TLS costs {100 * (1 - ratio):+.1f} %)")
    verdict = "met" if worst >= GOAL else "MISSED"
    print(f"goal (SASL_SSL at least {GOAL:.0%} of plaintext throughput): {verdict}")


def cleanup(topics, databases):
    try:
        from kafka.admin import KafkaAdminClient
        from pymongo import MongoClient
    except ImportError:
        print("tls_cost: kafka-python or pymongo missing: topics and databases left behind", file=sys.stderr)
        return
    try:
        admin = KafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BROKERS"].split(","))
        admin.delete_topics(topics, timeout_ms=30_000)
        admin.close()
    except Exception as e:  # noqa: BLE001 - a leftover topic is harmless
        print(f"tls_cost: could not delete topics ({e})", file=sys.stderr)
    client = MongoClient(os.environ["MONGODB_URI"])
    for d in databases:
        client.drop_database(d)


if __name__ == "__main__":
    main()
