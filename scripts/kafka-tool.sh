#!/usr/bin/env bash
# Kafka's own command-line tools (what bin/kafka-*.sh runs in Kafka's binary distribution), run
# from the jars that scripts/services.sh fetched into .local/kafka/VERSION/libs.
#
# Usage: scripts/kafka-tool.sh TOOL [ARGS...]    (scripts/kafka-tool.sh list: the tools)
#   scripts/kafka-tool.sh consumer-groups --bootstrap-server 127.0.0.1:29092 --describe --group G
#   scripts/kafka-tool.sh topics --bootstrap-server 127.0.0.1:29092 --describe --topic T
#   scripts/kafka-tool.sh metadata-quorum --bootstrap-server 127.0.0.1:29092 describe --status
# TOOL is the bin/ script's name without "kafka-" and ".sh" (the full name works too). The tools
# log warnings and errors to stderr; KAFKA_TOOL_JAVA_OPTS adds JVM options (e.g. -Xmx1g).
# The version is KAFKA_VERSION (env; .local/services.env sets it), else the one `make up` last
# started (.local/kafka/version), else 4.4.0; its jars must have been fetched by `make up`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_HOME="$ROOT/.local/kafka"
DEFAULT_VERSION=4.4.0

# Tool name -> main class in Kafka 3.x (3.9) and in 4.x ("-": the tool does not exist there), as
# in each version's bin/ scripts. Classes checked in the jars: 4.0 moved the console producer,
# DumpLogSegments, BrokerApiVersionsCommand, AclCommand and ConfigCommand from the broker jar
# (kafka.tools, kafka.admin) to kafka-tools (org.apache.kafka.tools) and added the share- and
# streams-group tools; StorageTool stays in the broker jar.
TOOLS="
acls                      kafka.admin.AclCommand                        org.apache.kafka.tools.AclCommand
broker-api-versions       kafka.admin.BrokerApiVersionsCommand          org.apache.kafka.tools.BrokerApiVersionsCommand
client-metrics            org.apache.kafka.tools.ClientMetricsCommand   org.apache.kafka.tools.ClientMetricsCommand
cluster                   org.apache.kafka.tools.ClusterTool            org.apache.kafka.tools.ClusterTool
configs                   kafka.admin.ConfigCommand                     org.apache.kafka.tools.ConfigCommand
console-consumer          org.apache.kafka.tools.consumer.ConsoleConsumer org.apache.kafka.tools.consumer.ConsoleConsumer
console-producer          kafka.tools.ConsoleProducer                   org.apache.kafka.tools.ConsoleProducer
console-share-consumer    -                                             org.apache.kafka.tools.consumer.ConsoleShareConsumer
consumer-groups           org.apache.kafka.tools.consumer.group.ConsumerGroupCommand org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
consumer-perf-test        org.apache.kafka.tools.ConsumerPerformance    org.apache.kafka.tools.ConsumerPerformance
delegation-tokens         org.apache.kafka.tools.DelegationTokenCommand org.apache.kafka.tools.DelegationTokenCommand
delete-records            org.apache.kafka.tools.DeleteRecordsCommand   org.apache.kafka.tools.DeleteRecordsCommand
dump-log                  kafka.tools.DumpLogSegments                   org.apache.kafka.tools.DumpLogSegments
e2e-latency               org.apache.kafka.tools.EndToEndLatency        org.apache.kafka.tools.EndToEndLatency
features                  org.apache.kafka.tools.FeatureCommand         org.apache.kafka.tools.FeatureCommand
get-offsets               org.apache.kafka.tools.GetOffsetShell         org.apache.kafka.tools.GetOffsetShell
groups                    -                                             org.apache.kafka.tools.GroupsCommand
jmx                       org.apache.kafka.tools.JmxTool                org.apache.kafka.tools.JmxTool
leader-election           org.apache.kafka.tools.LeaderElectionCommand  org.apache.kafka.tools.LeaderElectionCommand
log-dirs                  org.apache.kafka.tools.LogDirsCommand         org.apache.kafka.tools.LogDirsCommand
metadata-quorum           org.apache.kafka.tools.MetadataQuorumCommand  org.apache.kafka.tools.MetadataQuorumCommand
producer-perf-test        org.apache.kafka.tools.ProducerPerformance    org.apache.kafka.tools.ProducerPerformance
reassign-partitions       org.apache.kafka.tools.reassign.ReassignPartitionsCommand org.apache.kafka.tools.reassign.ReassignPartitionsCommand
replica-verification      org.apache.kafka.tools.ReplicaVerificationTool org.apache.kafka.tools.ReplicaVerificationTool
share-consumer-perf-test  -                                             org.apache.kafka.tools.ShareConsumerPerformance
share-groups              -                                             org.apache.kafka.tools.consumer.group.ShareGroupCommand
storage                   kafka.tools.StorageTool                       kafka.tools.StorageTool
streams-application-reset org.apache.kafka.tools.StreamsResetter        org.apache.kafka.tools.StreamsResetter
streams-groups            -                                             org.apache.kafka.tools.streams.StreamsGroupCommand
topics                    org.apache.kafka.tools.TopicCommand           org.apache.kafka.tools.TopicCommand
transactions              org.apache.kafka.tools.TransactionsCommand    org.apache.kafka.tools.TransactionsCommand
verifiable-consumer       org.apache.kafka.tools.VerifiableConsumer     org.apache.kafka.tools.VerifiableConsumer
verifiable-producer       org.apache.kafka.tools.VerifiableProducer     org.apache.kafka.tools.VerifiableProducer
verifiable-share-consumer -                                             org.apache.kafka.tools.VerifiableShareConsumer
"

die() { # message [exit code]
  echo "kafka-tool: error: $1" >&2
  exit "${2:-1}"
}

# The Kafka version whose jars run the tool.
version="${KAFKA_VERSION:-}"
if [[ -z "$version" && -s "$KAFKA_HOME/version" ]]; then version="$(<"$KAFKA_HOME/version")"; fi
LIBS=""
# Before per-version folders, one version's jars lay in .local/kafka/libs: they serve until the
# next `make up` moves .local/kafka to the new layout.
if [[ -z "$version" ]] && legacy="$(compgen -G "$KAFKA_HOME/libs/kafka_2.13-*.jar")"; then
  legacy="$(basename "${legacy%%$'\n'*}" .jar)"
  version="${legacy#kafka_2.13-}"
  LIBS="$KAFKA_HOME/libs"
fi
version="${version:-$DEFAULT_VERSION}"
LIBS="${LIBS:-$KAFKA_HOME/$version/libs}"
[[ "$version" =~ ^([0-9]+)\.[0-9]+\.[0-9]+$ ]] || die "KAFKA_VERSION must look like 4.4.0, not '$version'" 2
major="${BASH_REMATCH[1]}"
case "$major" in
  3) column=2 ;;
  4) column=3 ;;
  *) die "Kafka $version: only 3.x and 4.x tools are known here" 2 ;;
esac

usage() {
  echo "usage: $0 TOOL [ARGS...]; TOOL is one of (Kafka $version):" >&2
  awk -v c="$column" 'NF && $c != "-" { printf "  %s\n", $1 }' <<<"$TOOLS" >&2
  exit 2
}

(($# > 0)) || usage
tool="${1#kafka-}"
tool="${tool%.sh}"
shift
if [[ "$tool" == list ]]; then
  awk -v c="$column" 'NF && $c != "-" { print $1 }' <<<"$TOOLS"
  exit 0
fi
[[ "$tool" == -h || "$tool" == --help || "$tool" == help ]] && usage
class="$(awk -v t="$tool" -v c="$column" '$1 == t { print $c }' <<<"$TOOLS")"
[[ -n "$class" ]] || die "unknown tool '$tool'; '$0 list' shows the tools" 2
[[ "$class" != - ]] || die "Kafka $version has no '$tool' tool (it came with Kafka 4.0)" 2

command -v java >/dev/null 2>&1 || die "java is missing (a JDK 17+ runs Kafka's tools)"
if ! compgen -G "$LIBS/kafka-tools-[0-9]*.jar" >/dev/null; then
  die "no Kafka $version tools jars in ${LIBS#"$ROOT"/}; 'make up KAFKA_VERSION=$version' fetches them when it starts Kafka (after a pom change, while Kafka runs: make down up)"
fi

# Kafka 3.x logs through reload4j (log4j 1 syntax), 4.x through log4j2.
if ((major >= 4)); then
  logging="-Dlog4j2.configurationFile=$ROOT/scripts/kafka/tools-log4j2.xml"
else
  logging="-Dlog4j.configuration=file:$ROOT/scripts/kafka/tools-log4j.properties"
fi

# shellcheck disable=SC2086 # KAFKA_TOOL_JAVA_OPTS is a list of JVM options
exec java -Xmx256m -XX:+UseSerialGC -Djava.awt.headless=true ${KAFKA_TOOL_JAVA_OPTS:-} \
  "$logging" -cp "$LIBS/*" "$class" "$@"
