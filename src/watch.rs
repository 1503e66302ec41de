//! `lineguard watch`: a line monitor for people. Subscribes to a station's
//! verdicts and status and prints one line per event; duplicates (QoS 1 may
//! repeat a verdict) are recognised by verdict id and not printed twice.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

pub struct Watch {
    pub host: String,
    pub port: u16,
    pub station: String,
    pub prefix: String,
}

/// Counts by verdict and, for the synthetic line, by what the part really was.
#[derive(Debug, Default)]
pub struct Summary {
    pub verdicts: u64,
    pub ng: u64,
    pub duplicates: u64,
    /// Synthetic parts only: (truth NG, verdict NG) pairs.
    pub confusion: [[u64; 2]; 2],
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} verdicts ({} NG), {} duplicates dropped", self.verdicts, self.ng, self.duplicates)?;
        let [[ok_ok, ok_ng], [ng_ok, ng_ng]] = self.confusion;
        if ok_ok + ok_ng + ng_ok + ng_ng > 0 {
            write!(f, "; synthetic truth: {ng_ng} of {} defective parts caught, {ok_ng} of {} good parts rejected", ng_ok + ng_ng, ok_ok + ok_ng)?;
        }
        Ok(())
    }
}

impl Watch {
    pub fn run(&self, duration: Option<Duration>, out: &mut dyn Write) -> Result<Summary, rumqttc::ClientError> {
        let id = format!("lineguard-watch-{}", std::process::id());
        let mut o = MqttOptions::new(id, self.host.clone(), self.port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut conn) = Client::new(o, 10);
        let base = format!("{}/{}", self.prefix, self.station);
        let started = Instant::now();
        let mut seen = HashSet::new();
        let mut summary = Summary::default();
        loop {
            if duration.is_some_and(|d| started.elapsed() >= d) {
                return Ok(summary);
            }
            let ev = match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => ev,
                Err(_) => continue,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.subscribe(format!("{base}/verdict"), QoS::AtLeastOnce)?;
                    client.subscribe(format!("{base}/status"), QoS::AtLeastOnce)?;
                    client.subscribe(format!("{base}/cmd/reply"), QoS::AtLeastOnce)?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        let _ = writeln!(out, "{}: not JSON ({} bytes)", p.topic, p.payload.len());
                        continue;
                    };
                    if p.topic.ends_with("/verdict") {
                        let id = v["id"].as_str().unwrap_or_default().to_owned();
                        if !seen.insert(id) {
                            summary.duplicates += 1;
                            continue;
                        }
                        summary.verdicts += 1;
                        let ng = v["verdict"] == "NG";
                        summary.ng += ng as u64;
                        let source = v["frame"]["source"].as_str().unwrap_or("");
                        if let Some(truth) = source.strip_prefix("synthetic/") {
                            summary.confusion[truth.starts_with("ng") as usize][ng as usize] += 1;
                        }
                        let boxes: Vec<String> = v["regions"]
                            .as_array()
                            .map(|r| r.iter().map(|r| format!("{}x{}@{},{}", r["width"], r["height"], r["x"], r["y"])).collect())
                            .unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "#{:<6} {}  score {:>7.2} / {:<7.2} {:>6.1} ms  {:<22} {}",
                            v["frame"]["seq"],
                            if ng { "NG" } else { "ok" },
                            v["score"].as_f64().unwrap_or(f64::NAN),
                            v["threshold"].as_f64().unwrap_or(f64::NAN),
                            v["latency_ms"]["total"].as_f64().unwrap_or(f64::NAN),
                            source,
                            boxes.join(" ")
                        );
                    } else if p.topic.ends_with("/status") {
                        let _ = writeln!(
                            out,
                            "status: {} recipe {} camera {} fps {:.1} drops {} outbox {}",
                            v["state"].as_str().unwrap_or("?"),
                            v["recipe"].as_str().unwrap_or("-"),
                            v["camera"]["state"].as_str().unwrap_or("-"),
                            v["fps"].as_f64().unwrap_or(0.0),
                            v["drops"],
                            v["outbox_depth"]
                        );
                    } else {
                        let _ = writeln!(out, "reply: {v}");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = writeln!(out, "broker {}:{}: {e}; retrying", self.host, self.port);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}
