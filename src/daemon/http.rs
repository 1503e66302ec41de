//! `GET /metrics` (Prometheus text) and `GET /healthz` (200 when the camera
//! delivers, the inference loop runs and the broker is connected; 503 with
//! the reasons otherwise).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::telemetry::Telemetry;
use crate::capture::CameraState;

#[derive(Clone)]
struct Shared {
    telemetry: Arc<Telemetry>,
    broker_expected: bool,
}

/// Binds now (so a busy port is a start-up error) and serves in the background.
pub async fn serve(listen: SocketAddr, telemetry: Arc<Telemetry>, broker_expected: bool) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Shared { telemetry, broker_expected });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok(())
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.telemetry.render())
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    let mut problems = Vec::new();
    let camera = s.telemetry.camera.lock().expect("camera lock").clone();
    if camera != CameraState::Ok {
        problems.push(format!("camera: {camera:?}"));
    }
    if s.telemetry.since_heartbeat() > Duration::from_secs(10) {
        problems.push("inference loop stalled".to_owned());
    }
    if s.broker_expected && !s.telemetry.connected.load(std::sync::atomic::Ordering::Relaxed) {
        problems.push("broker not connected".to_owned());
    }
    let body = serde_json::json!({"ok": problems.is_empty(), "problems": problems}).to_string();
    let code = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}
