//! The HTTP endpoint of `--metrics-addr`: a blocking server on a thread of its own, answering
//! `GET /metrics` (Prometheus text format 0.0.4), `/healthz` and `/readyz` (200 or 503 with a
//! one-line reason). It only reads the metrics the loops keep: a scrape takes no lock a step
//! holds for longer than an update.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use log::{info, warn};
use prometheus_client::encoding::prometheus_text;
use tiny_http::{Header, Method, Response, Server};

use super::{Exposed, HealthThreshold};

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens on `addr` and serves `exposed` from a thread. The error is one line: the address
/// is taken, or not one of this machine's.
pub fn serve(
    addr: SocketAddr,
    exposed: &'static dyn Exposed,
    health_threshold: HealthThreshold,
) -> Result<MetricsServer, String> {
    let server = Arc::new(Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let serving = server.clone();
    let thread = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for request in serving.incoming_requests() {
                let (status, body, content_type) =
                    answer(request.method(), request.url(), exposed, health_threshold);
                let mut response = Response::from_string(body).with_status_code(status);
                if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
                    response.add_header(h);
                }
                if let Err(e) = request.respond(response) {
                    warn!("metrics endpoint: cannot answer a request ({e})");
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    info!("serving /metrics, /healthz and /readyz on http://{bound}");
    Ok(MetricsServer {
        server,
        thread: Some(thread),
        addr: bound,
    })
}

/// Status, body and content type for one request.
fn answer(
    method: &Method,
    url: &str,
    exposed: &dyn Exposed,
    health_threshold: HealthThreshold,
) -> (u16, String, &'static str) {
    if !matches!(method, Method::Get | Method::Head) {
        return (405, "only GET\n".into(), "text/plain");
    }
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_text::encode(&mut body, exposed.registry()) {
                Ok(()) => (200, body, TEXT_FORMAT),
                Err(_) => (500, "cannot encode the metrics\n".into(), "text/plain"),
            }
        }
        "/healthz" => verdict(exposed.health().check(Instant::now(), health_threshold)),
        "/readyz" => verdict(exposed.health().ready()),
        _ => (
            404,
            "not found: /metrics, /healthz or /readyz\n".into(),
            "text/plain",
        ),
    }
}

fn verdict(v: Result<(), String>) -> (u16, String, &'static str) {
    match v {
        Ok(()) => (200, "ok\n".into(), "text/plain"),
        Err(why) => (503, format!("{why}\n"), "text/plain"),
    }
}
