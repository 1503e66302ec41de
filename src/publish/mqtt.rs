//! The MQTT link: one tokio task that owns the rumqttc client and drives it.
//!
//! * Verdicts come from the outbox, oldest first, QoS 1, at most
//!   `max_inflight` unacknowledged. Each PubAck is matched to its outbox
//!   record (packet ids arrive in `Outgoing::Publish` events in the order
//!   the requests were made) and only then is the record deleted.
//! * After any connection error the client is dropped whole and rebuilt
//!   after a backoff (0.5 s doubling to 30 s, with jitter): no hidden queue
//!   survives, and everything unacknowledged is sent again from the outbox,
//!   in order. Subscribers drop the duplicates by verdict `id`.
//! * The status is retained, refreshed every `status_interval_secs`, with a
//!   retained `offline` last will.
//! * Commands on `cmd/+` are parsed and checked here; valid ones go to the
//!   inference thread, bad ones get an error reply at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{Notify, mpsc, watch};

use super::messages::{Command, Reply, Status, Topics, offline_status, parse_command};
use super::outbox::Outbox;
use crate::config::MqttConfig;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("mqtt.{key}: {path}: {reason}")]
    File { key: &'static str, path: std::path::PathBuf, reason: String },
}

/// What the link needs from the rest of the station.
pub struct LinkContext {
    pub station: String,
    pub topics: Topics,
    pub outbox: Arc<Mutex<Outbox>>,
    /// Signalled when the outbox has something new.
    pub outbox_changed: Arc<Notify>,
    /// Replies to publish (from the inference thread).
    pub replies: mpsc::UnboundedReceiver<Reply>,
    /// Valid commands go here.
    pub commands: std::sync::mpsc::Sender<Command>,
    /// The current status.
    pub status: Arc<dyn Fn() -> Status + Send + Sync>,
    /// Signalled when the status should go out now (recipe switched, ...).
    pub status_changed: Arc<Notify>,
    pub connected: Arc<AtomicBool>,
    /// Becomes true when the station stops: flush, say goodbye, return.
    pub shutdown: watch::Receiver<bool>,
    pub flush_timeout: Duration,
    pub events: Arc<dyn LinkEvents>,
}

/// Telemetry hooks.
pub trait LinkEvents: Send + Sync {
    fn connected(&self);
    fn disconnected(&self, error: &str);
    fn published(&self, acked: u64);
    fn command_refused(&self, command: &str, error: &str);
}

/// Client options from the configuration (credentials and TLS files read here).
pub fn options(cfg: &MqttConfig, station: &str, topics: &Topics) -> Result<MqttOptions, LinkError> {
    let id = cfg.client_id.clone().unwrap_or_else(|| format!("lineguard-{station}"));
    let mut o = MqttOptions::new(id, cfg.host.clone(), cfg.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs));
    o.set_clean_session(true);
    // Our own window plus room for status and replies.
    o.set_inflight(cfg.max_inflight.saturating_add(16));
    o.set_max_packet_size(4 << 20, 4 << 20);
    o.set_last_will(LastWill::new(&topics.status, offline_status(station), QoS::AtLeastOnce, true));
    let read = |key: &'static str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| LinkError::File { key, path: p.into(), reason: e.to_string() })
    };
    if let Some(user) = &cfg.username {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => String::from_utf8_lossy(&read("password_file", f)?).trim_end_matches(['\r', '\n']).to_owned(),
            (None, None) => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if let Some(t) = &cfg.tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = read("tls.ca", &t.ca)?;
        let client_auth = match (&t.client_cert, &t.client_key) {
            (Some(c), Some(k)) => Some((read("tls.client_cert", c)?, read("tls.client_key", k)?)),
            _ => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
    }
    Ok(o)
}

/// One connection's bookkeeping; dropped with the client.
#[derive(Default)]
struct Session {
    /// Requests made, in order: `Some(seq)` for verdicts, `None` for status and replies.
    requested: VecDeque<Option<u64>>,
    /// Packet id -> outbox sequence, sent and awaiting PubAck.
    inflight: HashMap<u16, u64>,
    last_requested: Option<u64>,
}

impl Session {
    fn verdicts_in_flight(&self) -> usize {
        self.inflight.len() + self.requested.iter().filter(|r| r.is_some()).count()
    }
}

pub async fn run(cfg: MqttConfig, opts: MqttOptions, mut cx: LinkContext) {
    let mut backoff = Duration::from_millis(500);
    let mut stopping = false;
    loop {
        let (client, mut eventloop) = AsyncClient::new(opts.clone(), 64);
        let mut session = Session::default();
        let outcome = connection(&cfg, &client, &mut eventloop, &mut session, &mut cx, &mut stopping, &mut backoff).await;
        cx.connected.store(false, Ordering::Relaxed);
        match outcome {
            Ended::Stopped => return,
            Ended::Lost(e) => {
                cx.events.disconnected(&e);
                if stopping {
                    tracing::warn!(error = %e, pending = cx.outbox.lock().expect("outbox lock").depth(), "broker unreachable while stopping; pending verdicts stay in the outbox for the next start");
                    return;
                }
                let jitter = rand::rng().random_range(0.8..1.2);
                let wait = backoff.mul_f64(jitter);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "mqtt: connection lost");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cx.shutdown.changed() => { stopping = true; }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    cfg: &MqttConfig,
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    s: &mut Session,
    cx: &mut LinkContext,
    stopping: &mut bool,
    backoff: &mut Duration,
) -> Ended {
    let mut status_tick = tokio::time::interval(Duration::from_secs(cfg.status_interval_secs.max(1)));
    let mut flush_deadline: Option<tokio::time::Instant> = None;
    loop {
        if *stopping && flush_deadline.is_none() {
            flush_deadline = Some(tokio::time::Instant::now() + cx.flush_timeout);
        }
        if let Some(deadline) = flush_deadline {
            let empty = cx.outbox.lock().expect("outbox lock").depth() == 0;
            if (empty || tokio::time::Instant::now() >= deadline) && cx.connected.load(Ordering::Relaxed) {
                return goodbye(client, eventloop, cx).await;
            }
        }
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("mqtt: connected");
                    cx.connected.store(true, Ordering::Relaxed);
                    cx.events.connected();
                    *backoff = Duration::from_millis(500);
                    let _ = client.try_subscribe(&cx.topics.commands, QoS::AtLeastOnce);
                    publish_status(client, s, cx);
                    pump(client, s, cfg.max_inflight as usize, cx);
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    if let Some(seq) = s.inflight.remove(&a.pkid) {
                        let mut ob = cx.outbox.lock().expect("outbox lock");
                        if let Err(e) = ob.ack(seq) {
                            tracing::error!(error = %e, "outbox: cannot record a delivery; the verdict will be sent again");
                        }
                        cx.events.published(ob.acked());
                    }
                    pump(client, s, cfg.max_inflight as usize, cx);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(name) = cx.topics.command_name(&p.topic) {
                        handle_command(client, s, cx, cfg, name, &p.payload);
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(Some(seq)) = s.requested.pop_front() {
                        s.inflight.insert(pkid, seq);
                    }
                }
                Ok(_) => {}
                Err(e) => return Ended::Lost(e.to_string()),
            },
            _ = cx.outbox_changed.notified() => pump(client, s, cfg.max_inflight as usize, cx),
            Some(reply) = cx.replies.recv() => publish_reply(client, s, &cx.topics, &reply),
            _ = status_tick.tick() => publish_status(client, s, cx),
            _ = cx.status_changed.notified() => publish_status(client, s, cx),
            _ = cx.shutdown.changed(), if !*stopping => { *stopping = true; }
            _ = tokio::time::sleep(Duration::from_millis(200)), if flush_deadline.is_some() => {}
        }
    }
}

/// Requests the next verdicts from the outbox, keeping `max_inflight` in flight.
fn pump(client: &AsyncClient, s: &mut Session, max_inflight: usize, cx: &LinkContext) {
    if !cx.connected.load(Ordering::Relaxed) {
        return;
    }
    while s.verdicts_in_flight() < max_inflight {
        let next = cx.outbox.lock().expect("outbox lock").next_after(s.last_requested).cloned();
        let Some(r) = next else { break };
        match client.try_publish(r.topic.as_str(), QoS::AtLeastOnce, false, r.payload) {
            Ok(()) => {
                s.requested.push_back(Some(r.seq));
                s.last_requested = Some(r.seq);
            }
            // Request channel full: the next event pumps again.
            Err(_) => break,
        }
    }
}

fn publish_status(client: &AsyncClient, s: &mut Session, cx: &LinkContext) {
    let payload = serde_json::to_vec(&(cx.status)()).expect("status serializes");
    if client.try_publish(cx.topics.status.as_str(), QoS::AtLeastOnce, true, payload).is_ok() {
        s.requested.push_back(None);
    }
}

fn publish_reply(client: &AsyncClient, s: &mut Session, topics: &Topics, reply: &Reply) {
    let payload = serde_json::to_vec(reply).expect("reply serializes");
    if client.try_publish(topics.reply.as_str(), QoS::AtLeastOnce, false, payload).is_ok() {
        s.requested.push_back(None);
    } else {
        tracing::warn!(command = %reply.command, "mqtt: reply dropped (client busy)");
    }
}

fn handle_command(client: &AsyncClient, s: &mut Session, cx: &LinkContext, cfg: &MqttConfig, name: &str, payload: &[u8]) {
    let refuse = |s: &mut Session, id: Option<String>, error: String| {
        tracing::warn!(command = name, %error, "command refused");
        cx.events.command_refused(name, &error);
        publish_reply(client, s, &cx.topics, &Reply::error(name, id, error));
    };
    match parse_command(name, payload) {
        Err(e) => refuse(s, e.id, e.error),
        Ok(cmd) => {
            if let Some(expected) = &cfg.command_token
                && cmd.token.as_deref() != Some(expected.as_str())
            {
                return refuse(s, cmd.id, "unauthorized: missing or wrong token".into());
            }
            if cx.commands.send(cmd).is_err() {
                refuse(s, None, "the station is stopping".into());
            }
        }
    }
}

/// Clean stop: the retained status says offline (a clean disconnect does not fire the will).
async fn goodbye(client: &AsyncClient, eventloop: &mut EventLoop, cx: &LinkContext) -> Ended {
    let left = cx.outbox.lock().expect("outbox lock").depth();
    if left > 0 {
        tracing::warn!(pending = left, "stopping with verdicts still in the outbox; they go out at the next start");
    }
    let _ = client.try_publish(cx.topics.status.as_str(), QoS::AtLeastOnce, true, offline_status(&cx.station));
    let _ = client.try_disconnect();
    let wait = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(wait);
    loop {
        tokio::select! {
            ev = eventloop.poll() => if ev.is_err() || matches!(ev, Ok(Event::Outgoing(Outgoing::Disconnect))) { break },
            _ = &mut wait => break,
        }
    }
    Ended::Stopped
}
