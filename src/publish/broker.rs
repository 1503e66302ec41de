//! The embedded MQTT broker (rumqttd), for a box without one: enabled by a
//! `[broker]` table, it listens on `broker.listen` (loopback by default) and
//! the station's own link connects to it like to any other broker.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("embedded broker on {listen}: {reason}")]
pub struct BrokerError {
    pub listen: SocketAddr,
    pub reason: String,
}

/// Starts the broker on its own thread and waits until it accepts connections.
pub fn start(listen: SocketAddr) -> Result<(), BrokerError> {
    let err = |reason: String| BrokerError { listen, reason };
    if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
        return Err(err("the address is already in use (another broker?)".into()));
    }
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "lineguard-v4"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 200
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).map_err(|e| err(format!("configuration: {e}")))?;
    std::thread::Builder::new()
        .name("lineguard-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(%listen, error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| err(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            tracing::info!(%listen, "embedded broker listening");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(err("did not start listening within 5 s".into()))
}
