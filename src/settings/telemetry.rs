//! Where `/metrics`, `/healthz` and `/readyz` are served, and when `/healthz` turns unhealthy.

use super::values::seconds;
use super::*;
use crate::telemetry::HealthThreshold;

/// Where `/metrics`, `/healthz` and `/readyz` are served (`None`: not at all), and when
/// `/healthz` turns unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A step running, or a service failing without a break, this long makes `/healthz` 503:
    /// for `consume` the step's limit is `--max-step-interval`, the outage's
    /// `--health-threshold`; for `produce` both are `--health-threshold`.
    pub health_threshold: HealthThreshold,
}

/// `--metrics-addr` and `--health-threshold`, shared by `produce` and `consume`. A step in
/// hand is stuck past `max_step` when given (`consume`'s `--max-step-interval`: the moment a
/// group member leaves, so `/healthz` and the group agree), else past the health threshold.
pub(super) fn telemetry(
    src: &Sources,
    addr: &Option<String>,
    threshold: &Option<String>,
    max_step: Option<Duration>,
) -> Result<TelemetrySettings, SettingError> {
    let metrics_addr = src
        .pick(addr, "metrics-addr", &["METRICS_ADDR"])
        .map(|v| metrics_addr(&v))
        .transpose()?;
    let health_threshold =
        match src.pick(threshold, "health-threshold", &["HEALTH_THRESHOLD_SECONDS"]) {
            Some(v) => Some(seconds(&v)?)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| v.error("must be a number of seconds above 0"))?,
            None => Duration::from_secs(DEFAULT_HEALTH_THRESHOLD_SECONDS),
        };
    Ok(TelemetrySettings {
        metrics_addr,
        health_threshold: HealthThreshold {
            step: max_step.unwrap_or(health_threshold),
            outage: health_threshold,
        },
    })
}

/// `HOST:PORT`, the host a name or an address (`[::1]:9100` for IPv6); the name is resolved
/// here, once, so a typo is a setting error and not a failure later.
pub(super) fn metrics_addr(v: &Value) -> Result<std::net::SocketAddr, SettingError> {
    use std::net::ToSocketAddrs;
    let text = v.text.trim();
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(v.error("must be HOST:PORT, e.g. 0.0.0.0:9100 or 127.0.0.1:9100"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(v.error("must be HOST:PORT with a port from 0 to 65535, e.g. 0.0.0.0:9100"));
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| v.error(format!("cannot resolve host {host:?}")))
}
