"""The exercise's producer (Part A), as a student would write it: the benchmark's baseline.

Per message it does what the exercise asks and nothing more: draw the metrics with `random`
exactly as the exercise's example does, build the dict with `timestamp_utc` from
`datetime.now(timezone.utc).isoformat()` and a fresh `uuid4`, `producer.send()` it with a JSON
value serializer (no key, as in the exercise) and print one line saying which server's metric
was sent. After each full report it flushes and sleeps the interval; `finally` closes the
producer. kafka-python's defaults are kept (acks=1, linger 0 ms, no compression).

Only what the benchmark needs is parametrised, by flag or environment variable: brokers,
topic, server list, interval (0 = no pause) and a report count (the exercise loops forever).

    python productor_metrics_iabdXX.py --topic T --servers a,b,c --interval 0 --count 200
"""

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import datetime, timezone

from kafka import KafkaProducer
from kafka.errors import KafkaError

# --- Configuración (the exercise's values, overridable for the benchmark) ---
SERVER_IDS = ["web01", "web02", "db01", "app01", "cache01"]
REPORTING_INTERVAL_SECONDS = 10
KAFKA_TOPIC = "system-metrics-topic-iabdXX"
KAFKA_BROKERS = "127.0.0.1:29092"


def parse_args():
    p = argparse.ArgumentParser(description="Baseline producer of the exercise (kafka-python).")
    p.add_argument("--brokers", default=os.environ.get("KAFKA_BROKERS", KAFKA_BROKERS))
    p.add_argument("--topic", default=os.environ.get("KAFKA_TOPIC", KAFKA_TOPIC))
    p.add_argument(
        "--servers",
        default=os.environ.get("SERVER_IDS", ",".join(SERVER_IDS)),
        help="comma-separated server ids",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=float(os.environ.get("REPORTING_INTERVAL_SECONDS", REPORTING_INTERVAL_SECONDS)),
        help="seconds to sleep after each full report (0 = none)",
    )
    p.add_argument(
        "--count",
        type=int,
        default=int(os.environ.get("REPORT_COUNT", "0")),
        help="number of full reports, 0 = forever (the exercise's while True)",
    )
    return p.parse_args()


def generate_metric(server_id):
    """One metric message, drawn exactly as the exercise's example code draws it."""
    cpu_percent = random.uniform(5.0, 75.0)
    # Añadir un pico ocasional de CPU
    if random.random() < 0.1:  # 10% de probabilidad
        cpu_percent = random.uniform(85.0, 98.0)

    memory_percent = random.uniform(20.0, 85.0)
    # Añadir un pico ocasional de memoria
    if random.random() < 0.05:  # 5% de probabilidad
        memory_percent = random.uniform(90.0, 99.0)

    disk_io_mbps = random.uniform(0.1, 50.0)
    network_mbps = random.uniform(1.0, 100.0)

    # Errores deben ser poco frecuentes
    error_count = 0
    if random.random() < 0.08:  # 8% probabilidad de tener algún error
        error_count = random.randint(1, 3)

    return {
        "server_id": server_id,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(),
        "metrics": {
            "cpu_percent": round(cpu_percent, 2),
            "memory_percent": round(memory_percent, 2),
            "disk_io_mbps": round(disk_io_mbps, 2),
            "network_mbps": round(network_mbps, 2),
            "error_count": error_count,
        },
        "message_uuid": str(uuid.uuid4()),  # Identificador único del mensaje
    }


def main():
    args = parse_args()
    server_ids = [s.strip() for s in args.servers.split(",") if s.strip()]
    print("Iniciando productor de métricas...")
    print(f"Servidores simulados: {len(server_ids)}")
    print(f"Intervalo de reporte: {args.interval} segundos")
    print(f"Topic: {args.topic} en {args.brokers}")
    print("-" * 30)

    producer = None
    try:
        producer = KafkaProducer(
            bootstrap_servers=args.brokers.split(","),
            value_serializer=lambda v: json.dumps(v).encode("utf-8"),
        )
    except KafkaError as e:
        print(f"Error conectando con Kafka: {e}", file=sys.stderr)
        return 1

    reports = 0
    try:
        while args.count == 0 or reports < args.count:
            for server_id in server_ids:
                metric_message = generate_metric(server_id)
                try:
                    producer.send(args.topic, value=metric_message)
                    print(f"Enviada métrica de {server_id} a Kafka.")
                except KafkaError as e:
                    print(f"Error enviando métrica de {server_id}: {e}", file=sys.stderr)
            # Que el reporte completo salga antes de la pausa.
            producer.flush()
            reports += 1
            if args.interval > 0:
                print(f"Reporte completo enviado. Esperando {args.interval} segundos...")
                time.sleep(args.interval)
    except KeyboardInterrupt:
        print("\nProductor detenido por el usuario.")
    finally:
        if producer is not None:
            producer.flush()
            producer.close()
            print(f"Productor cerrado tras {reports} reportes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
