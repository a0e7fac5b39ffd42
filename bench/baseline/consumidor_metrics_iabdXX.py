"""The exercise's consumer (Part B), as a student would write it: the benchmark's baseline.

A kafka-python consumer in the exercise's group with a JSON value deserializer and the client's
defaults (auto-commit, earliest offset for a new group). For each message it stores the JSON
document as received with one pymongo `insert_one` into the raw collection, logs one INFO line,
and every 20 messages (a tumbling window, counter reset) computes the KPIs the exercise asks for
(average cpu, memory, disk, network; sum of errors; messages per second) and stores them with
one more `insert_one`, together with the computation timestamp, the window's duration and its
message count. `finally` closes Kafka and MongoDB.

Only what the benchmark needs is parametrised, by flag or environment variable: brokers, topic,
group, connection string, database, collections, and a stop condition (the exercise runs
until Ctrl-C): `--exit-when-idle SECS` (kafka-python's consumer_timeout_ms) or
`--max-messages N`.
"""

import argparse
import json
import logging
import os
import signal
import sys
import time
from datetime import datetime, timezone

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from pymongo import MongoClient
from pymongo.errors import PyMongoError

WINDOW_SIZE = 20  # N = 20 mensajes por ventana


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description="Baseline consumer of the exercise (kafka-python + pymongo).")
    p.add_argument("--brokers", default=env("KAFKA_BROKERS", "127.0.0.1:29092"))
    p.add_argument("--topic", default=env("KAFKA_TOPIC", "system-metrics-topic-iabdXX"))
    p.add_argument("--group", default=env("KAFKA_GROUP_ID", "grupo_iabdXX_id"))
    p.add_argument(
        "--mongodb-uri",
        default=env("CONNECTION_STRING") or env("MONGODB_URI", "mongodb://127.0.0.1:27017"),
    )
    p.add_argument("--database", default=env("MONGODB_DATABASE", "monitoring"))
    p.add_argument("--raw-collection", default=env("MONGODB_RAW_COLLECTION", "system_metrics_raw_iabdXX"))
    p.add_argument("--kpi-collection", default=env("MONGODB_KPI_COLLECTION", "system_metrics_kpis_iabdXX"))
    p.add_argument("--exit-when-idle", type=float, default=float(env("EXIT_WHEN_IDLE_SECONDS", "0")))
    p.add_argument("--max-messages", type=int, default=int(env("MAX_MESSAGES", "0")))
    return p.parse_args()


def compute_kpis(window, duration_s):
    """The exercise's KPIs over one window of messages."""
    n = len(window)
    metrics = [m["metrics"] for m in window]
    return {
        "avg_cpu_percent": sum(m["cpu_percent"] for m in metrics) / n,
        "avg_memory_percent": sum(m["memory_percent"] for m in metrics) / n,
        "avg_disk_io_mbps": sum(m["disk_io_mbps"] for m in metrics) / n,
        "avg_network_mbps": sum(m["network_mbps"] for m in metrics) / n,
        "total_error_count": sum(m["error_count"] for m in metrics),
        "messages_per_second": n / duration_s if duration_s > 0 else None,
    }


def stop_on_sigterm(_signum, _frame):
    """SIGTERM stops like Ctrl-C."""
    raise KeyboardInterrupt


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("consumidor")

    signal.signal(signal.SIGTERM, stop_on_sigterm)

    consumer = None
    client = None
    try:
        consumer = KafkaConsumer(
            args.topic,
            bootstrap_servers=args.brokers.split(","),
            group_id=args.group,
            auto_offset_reset="earliest",
            value_deserializer=lambda m: json.loads(m.decode("utf-8")),
            consumer_timeout_ms=args.exit_when_idle * 1000 if args.exit_when_idle > 0 else float("inf"),
        )
        client = MongoClient(args.mongodb_uri)
        db = client[args.database]
        raw = db[args.raw_collection]
        kpis = db[args.kpi_collection]
        log.info("Consumiendo %s (grupo %s) hacia %s", args.topic, args.group, args.database)

        window = []
        window_start = time.time()
        received = 0
        windows = 0
        for message in consumer:
            metric = message.value
            try:
                raw.insert_one(metric)
            except PyMongoError as e:
                log.error("Error insertando métrica en MongoDB: %s", e)
                continue
            received += 1
            log.info("Recibida métrica de %s (partición %d, offset %d)", metric.get("server_id"), message.partition, message.offset)
            window.append(metric)

            if len(window) == WINDOW_SIZE:
                now = time.time()
                duration = now - window_start
                kpi_doc = {
                    "computed_at": datetime.now(timezone.utc),
                    "window_duration_s": duration,
                    "message_count": len(window),
                    "kpis": compute_kpis(window, duration),
                }
                try:
                    kpis.insert_one(kpi_doc)
                    windows += 1
                    log.info("KPIs de la ventana %d guardados: %s", windows, kpi_doc["kpis"])
                except PyMongoError as e:
                    log.error("Error insertando KPIs en MongoDB: %s", e)
                window = []
                window_start = now

            if args.max_messages and received >= args.max_messages:
                break
        log.info("Fin: %d mensajes, %d ventanas", received, windows)
    except KeyboardInterrupt:
        log.info("Consumidor detenido por el usuario.")
    except (KafkaError, PyMongoError) as e:
        log.error("Error: %s", e)
        return 1
    finally:
        if consumer is not None:
            consumer.close()
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
