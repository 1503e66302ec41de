//! Real processes for the appliance tests: mosquitto, `lineguard run`, and an
//! MQTT subscriber/publisher (rumqttc) that records what arrives.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use super::*;

/// A free TCP port on loopback, never the same twice in this process
/// (tests run in parallel and bind their ports later).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut g = GIVEN.lock().unwrap();
        if !g.contains(&p) {
            g.push(p);
            return p;
        }
    }
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A real mosquitto, with persistence so that sessions survive its restarts.
pub struct Mosquitto {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// `extra` is appended to the configuration (e.g. a TLS listener).
    pub fn start(dir: &Path, extra: &str) -> Mosquitto {
        Self::start_on(dir, free_port(), extra)
    }

    pub fn start_on(dir: &Path, port: u16, extra: &str) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {}/\nuser root\nlistener {port} 127.0.0.1\n{extra}\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto { port, dir: dir.into(), conf, child: None };
        m.restart();
        m
    }

    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto is needed for the broker tests: run deploy/install-deps.sh (Debian package mosquitto)");
        self.child = Some(child);
        assert!(wait_for_port(self.port, Duration::from_secs(10)), "mosquitto did not start; see {}", self.dir.join("mosquitto.log").display());
    }

    /// Stops the broker (SIGTERM: it saves its sessions, as a restarted plant broker would have them).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc_kill(c.id() as i32, 15) };
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn signal(child: &Child, sig: i32) {
    unsafe { libc_kill(child.id() as i32, sig) };
}

/// `lineguard run` as a child process; its stderr goes to a log file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        let log = config.with_extension(format!("log{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("LINEGUARD_LOG", "info,rumqttd=warn")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(&self.child, 15);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real MQTT client that records every message on its subscriptions.
pub struct Mqtt {
    pub client: Client,
    rx: Receiver<(String, Vec<u8>)>,
    pub seen: Arc<Mutex<Vec<(String, Vec<u8>)>>>,
}

impl Mqtt {
    /// Connects with a persistent session (`clean_session = false`), so
    /// QoS 1 messages published while it is away are kept for it.
    pub fn connect(port: u16, id: &str, topics: &[&str], tls: Option<TlsConfiguration>) -> Mqtt {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(false);
        o.set_max_packet_size(4 << 20, 4 << 20);
        if let Some(t) = tls {
            o.set_transport(Transport::tls_with_config(t));
        }
        let (client, mut conn) = Client::new(o, 100);
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let c2 = client.clone();
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in &topics {
                            let _ = c2.try_subscribe(t.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        seen2.lock().unwrap().push((p.topic.clone(), p.payload.to_vec()));
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Mqtt { client, rx, seen }
    }

    /// The next message whose topic ends with `suffix`, within `timeout`.
    pub fn next(&self, suffix: &str, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, p)) if t.ends_with(suffix) => return Some(serde_json::from_slice(&p).unwrap_or_else(|e| panic!("{t}: {e}"))),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits until `pred` holds for a message on `suffix`; returns it.
    pub fn wait_for(&self, suffix: &str, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(v) = self.next(suffix, deadline.saturating_duration_since(Instant::now()))
                && pred(&v)
            {
                return Some(v);
            }
        }
        None
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).unwrap();
    }
}

/// The washer line: a model, 24 good synthetic parts enrolled into `washer.bank`
/// (and a second recipe `washer-b` with its own bank), shared by the tests.
pub fn washer_banks() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let dir = shared_dir().join("washer");
        if !dir.join("washer-b.bank").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let out = lineguard_cmd(&["synth", "--count", "24", "--seed", "1000", "--out"]).arg(dir.join("good")).output().unwrap();
            assert_success(&out, "synth");
            let cfg = write_config(&dir, &model(), "");
            for bank in ["washer.bank", "washer-b.bank"] {
                let out = lineguard_cmd(&["enroll", "--config"])
                    .arg(&cfg)
                    .arg("--images")
                    .arg(dir.join("good"))
                    .arg("--out")
                    .arg(dir.join(format!("{bank}.tmp")))
                    .output()
                    .unwrap();
                assert_success(&out, "enroll");
                std::fs::rename(dir.join(format!("{bank}.tmp")), dir.join(bank)).unwrap();
            }
        }
        dir
    })
    .clone()
}

/// A daemon configuration in `dir` for the washer line; `extra` adds tables.
pub fn daemon_config(dir: &Path, capture: &str, extra: &str) -> PathBuf {
    let banks = washer_banks();
    let text = format!(
        r#"[station]
name = "line-1"
recipe = "washer"
[model]
path = "{model}"
[engine]
kind = "cpu"
threads = 2
[recipes.washer]
bank = "{a}"
[recipes.washer-b]
bank = "{b}"
roi = {{ x = 16, y = 16, width = 224, height = 224 }}
[daemon]
state_dir = "state"
shutdown_flush_secs = 5
[http]
listen = "127.0.0.1:{http}"
[capture]
{capture}
{extra}
"#,
        model = model().display(),
        a = banks.join("washer.bank").display(),
        b = banks.join("washer-b.bank").display(),
        http = free_port(),
    );
    let p = dir.join("lineguard.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// GET over plain HTTP/1.0; returns (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    (code, body)
}

/// The http port written into a daemon config.
pub fn http_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("listen = \"127.0.0.1:")).unwrap();
    line.trim_end_matches('"').rsplit(':').next().unwrap().parse().unwrap()
}
