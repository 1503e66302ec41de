//! systemd integration (Type=notify): READY once the station inspects,
//! WATCHDOG pings only while the inference loop is alive, STATUS lines.
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use super::telemetry::Telemetry;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

pub fn reloading() {
    let _ = sd_notify::notify(&[NotifyState::Reloading]);
}

/// The watchdog interval systemd asked for (WatchdogSec), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog at half its interval while the inference loop has
/// gone round recently; a hung loop stops the pings and systemd restarts us.
pub async fn watchdog(telemetry: Arc<Telemetry>) {
    let Some(interval) = watchdog_interval() else { return };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        let stale = telemetry.since_heartbeat();
        if stale < interval {
            let status = format!(
                "{} verdicts ({:.1}/s), camera {:?}",
                telemetry.verdicts_total(),
                telemetry.fps(),
                *telemetry.camera.lock().expect("camera lock")
            );
            let _ = sd_notify::notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            tracing::error!(stale_ms = stale.as_millis() as u64, "inference loop stalled; withholding the watchdog ping");
        }
    }
}
