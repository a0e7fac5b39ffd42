# Entry points for people and CI. Every target works on a fresh machine:
# scripts/services.sh downloads and builds what it needs into .local/ (git-ignored).
SHELL := /bin/bash
SERVICES := scripts/services.sh
SERVICES_ENV := .local/services.env
BIN := target/release/metricsctl
# A demo of a few reports, fast; override e.g. `make demo DEMO_REPORTS=20`.
DEMO_REPORTS ?= 8
DEMO_INTERVAL ?= 1
# Kafka nodes: 1 or 3 (a three-node KRaft cluster), e.g. `make up BROKERS=3`. Unset: the mode
# `up` last started (remembered in .local/kafka/mode), else 1.
BROKERS ?=

.PHONY: up up-cluster down status test demo build lint fmt

up:
	@BROKERS="$(BROKERS)" bash $(SERVICES) up

up-cluster:
	@BROKERS=3 bash $(SERVICES) up

down:
	@BROKERS="$(BROKERS)" bash $(SERVICES) down

status:
	@BROKERS="$(BROKERS)" bash $(SERVICES) status

build:
	cargo build --release

# Unit tests need nothing; integration tests need the broker and the database,
# which `up` starts (a no-op when they already run).
test: up
	set -a && source $(SERVICES_ENV) && set +a && cargo test -- --test-threads=4

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt

# The whole exercise in one command: services, the consumer running while the producer sends a
# few reports, then the KPIs. The consumer exits once idle.
demo: build up
	set -a && source $(SERVICES_ENV) && set +a && \
	{ $(BIN) consume --exit-when-idle 5 & consumer=$$!; } && \
	$(BIN) produce --count $(DEMO_REPORTS) --interval $(DEMO_INTERVAL) && \
	wait $$consumer && \
	$(BIN) kpis show --limit 5
