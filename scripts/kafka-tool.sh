#!/usr/bin/env bash
# Kafka's own command-line tools (what bin/kafka-*.sh runs in Kafka's binary distribution), run
# from the Kafka 3.9.2 jars that scripts/services.sh fetched into .local/kafka/libs.
#
# Usage: scripts/kafka-tool.sh TOOL [ARGS...]    (scripts/kafka-tool.sh list: the tools)
#   scripts/kafka-tool.sh consumer-groups --bootstrap-server 127.0.0.1:29092 --describe --group G
#   scripts/kafka-tool.sh topics --bootstrap-server 127.0.0.1:29092 --describe --topic T
#   scripts/kafka-tool.sh metadata-quorum --bootstrap-server 127.0.0.1:29092 describe --status
# TOOL is the bin/ script's name without "kafka-" and ".sh" (the full name works too). The tools
# log warnings and errors to stderr; KAFKA_TOOL_JAVA_OPTS adds JVM options (e.g. -Xmx1g).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIBS="$ROOT/.local/kafka/libs"
LOG4J="$ROOT/scripts/kafka/tools-log4j.properties"

# Tool name -> main class, as in Kafka 3.9.2's bin/ scripts (classes checked in the jars: some
# tools moved to org.apache.kafka.tools in kafka-tools, others are still in the broker jar).
TOOLS="
acls                 kafka.admin.AclCommand
broker-api-versions  kafka.admin.BrokerApiVersionsCommand
cluster              org.apache.kafka.tools.ClusterTool
configs              kafka.admin.ConfigCommand
console-consumer     org.apache.kafka.tools.consumer.ConsoleConsumer
console-producer     kafka.tools.ConsoleProducer
consumer-groups      org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
consumer-perf-test   org.apache.kafka.tools.ConsumerPerformance
delegation-tokens    org.apache.kafka.tools.DelegationTokenCommand
delete-records       org.apache.kafka.tools.DeleteRecordsCommand
dump-log             kafka.tools.DumpLogSegments
e2e-latency          org.apache.kafka.tools.EndToEndLatency
features             org.apache.kafka.tools.FeatureCommand
get-offsets          org.apache.kafka.tools.GetOffsetShell
jmx                  org.apache.kafka.tools.JmxTool
leader-election      org.apache.kafka.tools.LeaderElectionCommand
log-dirs             org.apache.kafka.tools.LogDirsCommand
metadata-quorum      org.apache.kafka.tools.MetadataQuorumCommand
producer-perf-test   org.apache.kafka.tools.ProducerPerformance
reassign-partitions  org.apache.kafka.tools.reassign.ReassignPartitionsCommand
replica-verification org.apache.kafka.tools.ReplicaVerificationTool
storage              kafka.tools.StorageTool
topics               org.apache.kafka.tools.TopicCommand
transactions         org.apache.kafka.tools.TransactionsCommand
verifiable-consumer  org.apache.kafka.tools.VerifiableConsumer
verifiable-producer  org.apache.kafka.tools.VerifiableProducer
"

die() { # message [exit code]
  echo "kafka-tool: error: $1" >&2
  exit "${2:-1}"
}

usage() {
  echo "usage: $0 TOOL [ARGS...]; TOOL is one of:" >&2
  awk 'NF { printf "  %s\n", $1 }' <<<"$TOOLS" >&2
  exit 2
}

(($# > 0)) || usage
tool="${1#kafka-}"
tool="${tool%.sh}"
shift
if [[ "$tool" == list ]]; then
  awk 'NF { print $1 }' <<<"$TOOLS"
  exit 0
fi
[[ "$tool" == -h || "$tool" == --help || "$tool" == help ]] && usage
class="$(awk -v t="$tool" '$1 == t { print $2 }' <<<"$TOOLS")"
[[ -n "$class" ]] || die "unknown tool '$tool'; '$0 list' shows the tools" 2

command -v java >/dev/null 2>&1 || die "java is missing (a JDK 11+ runs Kafka's tools)"
if ! compgen -G "$LIBS/kafka-tools-[0-9]*.jar" >/dev/null; then
  die "no Kafka tools jars in ${LIBS#"$ROOT"/}; 'make up' fetches them when it starts Kafka (after a pom change, while Kafka runs: make down up)"
fi

# shellcheck disable=SC2086 # KAFKA_TOOL_JAVA_OPTS is a list of JVM options
exec java -Xmx256m -XX:+UseSerialGC -Djava.awt.headless=true ${KAFKA_TOOL_JAVA_OPTS:-} \
  -Dlog4j.configuration="file:$LOG4J" -cp "$LIBS/*" "$class" "$@"
