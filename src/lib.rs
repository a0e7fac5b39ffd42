//! metricsctl: a system-metrics pipeline on Apache Kafka and MongoDB.
//!
//! The data path is `simulate -> Kafka -> validate -> (raw store, window) -> KPI store -> show`.
//! The core (`metric`, `simulate`, `window`, `engine` (the consumer's exactly-once protocol and
//! the loop that drives it), `outbox`, `retry`, and `kpi_series`, `chart`, `plot` that draw
//! stored windows) is pure and knows nothing of Kafka or MongoDB; `kafka` and `store` are the
//! only adapters (each retries its own transient failures through `retrying`); `commands` wire
//! them together.

pub mod build_info;
pub mod chart;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod kafka;
pub mod kpi_series;
pub mod metric;
pub mod outbox;
pub mod plot;
pub mod redact;
pub mod retry;
pub mod retrying;
pub mod settings;
pub mod shutdown;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod window;
