//! The appliance with real brokers (mosquitto and the embedded rumqttd) and
//! real faults: a broker killed mid-stream, the daemon SIGKILLed with a full
//! outbox, a camera that vanishes, a broken file in the hot folder, bad and
//! unauthorized commands, TLS with a client certificate.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::station::*;
use common::*;

const T: Duration = Duration::from_secs(60);

fn mqtt_table(port: u16, extra: &str) -> String {
    format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_secs = 2\nstatus_interval_secs = 1\n{extra}\n")
}

/// Verdict ids in order of first arrival, and the total including duplicates.
fn first_arrivals(seen: &[(String, Vec<u8>)]) -> (Vec<serde_json::Value>, usize) {
    let mut ids = BTreeSet::new();
    let mut firsts = Vec::new();
    let mut total = 0;
    for (t, p) in seen {
        if t.ends_with("/verdict") {
            total += 1;
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            if ids.insert(v["id"].as_str().unwrap().to_owned()) {
                firsts.push(v);
            }
        }
    }
    (firsts, total)
}

#[test]
fn broker_killed_mid_stream_loses_no_triggered_verdict_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path(), "");
    let sub = Mqtt::connect(broker.port, "test-subscriber", &["lineguard/line-1/verdict"], None);
    let cfg = daemon_config(
        dir.path(),
        "kind = \"synthetic\"\nfps = 25\nseed = 3",
        &format!("{}[trigger]\nmode = \"mqtt\"\ntimeout_ms = 60000\n", mqtt_table(broker.port, "")),
    );
    let daemon = Daemon::start(&cfg);
    let plc = Mqtt::connect(broker.port, "test-plc", &["lineguard/line-1/status"], None);
    assert!(plc.wait_for("/status", T, |s| s["state"] == "online").is_some(), "station never came online:\n{}", daemon.log_text());
    const N: usize = 24;
    for i in 0..N {
        plc.publish("lineguard/line-1/cmd/trigger", &format!(r#"{{"correlation_id":"part-{i:03}"}}"#));
    }
    // The first verdicts are out: take the broker away while the rest are being made.
    assert!(sub.next("/verdict", T).is_some(), "no verdict:\n{}", daemon.log_text());
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (firsts, _) = first_arrivals(&sub.seen.lock().unwrap());
        if firsts.len() >= N || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (firsts, total) = first_arrivals(&sub.seen.lock().unwrap());
    let corr: Vec<String> = firsts.iter().map(|v| v["correlation_id"].as_str().unwrap_or("?").to_owned()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("part-{i:03}")).collect();
    assert_eq!(corr, want, "every triggered verdict exactly once (by id), in order; {total} messages arrived\n{}", daemon.log_text());
    let seqs: Vec<u64> = firsts.iter().map(|v| v["frame"]["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "frames in capture order: {seqs:?}");
    assert!(daemon.log_text().contains("mqtt: connection lost"), "the outage happened while the station was running");
    assert!(daemon.stop().success());
}

#[test]
fn sigkilled_daemon_delivers_its_outbox_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port(); // nothing listens yet
    let table = mqtt_table(broker_port, "");
    let cfg = daemon_config(dir.path(), "kind = \"synthetic\"\nfps = 5\nframes = 12\ndefect_rate = 0.5", &table);
    let daemon = Daemon::start(&cfg);
    let http = http_port(&cfg);
    // Wait until all 12 frames are accounted for (stored, or dropped if a
    // loaded machine made inference miss one), then kill -9.
    let metric = |m: &str, name: &str| -> u64 {
        m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + T;
    let stored = loop {
        if wait_for_port(http, Duration::from_millis(100)) {
            let m = http_get(http, "/metrics").1;
            let (enqueued, dropped) = (metric(&m, "lineguard_outbox_enqueued_total "), metric(&m, "lineguard_frames_dropped_total{reason=\"busy\"} "));
            if enqueued + dropped == 12 && metric(&m, "lineguard_frames_captured_total ") == 12 {
                break enqueued;
            }
        }
        assert!(std::time::Instant::now() < deadline, "outbox never settled:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(stored >= 6, "most frames stored ({stored})");
    daemon.kill9();

    // The broker appears; the restarted daemon makes no new frames (frames = 0).
    let _broker = Mosquitto::start_on(dir.path(), broker_port, "");
    let sub = Mqtt::connect(broker_port, "test-subscriber", &["lineguard/line-1/verdict"], None);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("frames = 12", "frames = 0")).unwrap();
    let daemon = Daemon::start(&cfg);
    let mut got = Vec::new();
    while (got.len() as u64) < stored {
        match sub.next("/verdict", T) {
            Some(v) => got.push(v),
            None => panic!("only {} of {stored} verdicts after restart:\n{}", got.len(), daemon.log_text()),
        }
    }
    let seqs: Vec<u64> = got.iter().map(|v| v["frame"]["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs.iter().all(|&s| s < 12), "the first run's verdicts, in order: {seqs:?}");
    assert!(sub.next("/verdict", Duration::from_secs(2)).is_none(), "nothing more than what was stored");
    assert!(daemon.stop().success());
}

#[test]
fn vanished_camera_is_reported_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let cfg = daemon_config(
        dir.path(),
        "kind = \"synthetic\"\nfps = 10\noutage = { after_frames = 5, duration_ms = 3000 }",
        &mqtt_table(broker.port, ""),
    );
    let daemon = Daemon::start(&cfg);
    let sub = Mqtt::connect(broker.port, "test-watch", &["lineguard/line-1/status", "lineguard/line-1/verdict"], None);
    let lost = sub.wait_for("/status", T, |s| s["camera"]["state"] == "lost");
    assert!(lost.is_some(), "status never said the camera was lost:\n{}", daemon.log_text());
    assert_eq!(http_get(http_port(&cfg), "/healthz").0, 503, "healthz reports the lost camera");
    let back = sub.wait_for("/status", T, |s| s["camera"]["state"] == "ok");
    assert!(back.is_some(), "camera never came back:\n{}", daemon.log_text());
    assert!(sub.wait_for("/verdict", T, |v| v["frame"]["seq"].as_u64() > Some(5)).is_some(), "verdicts resume after the outage");
    let (code, body) = http_get(http_port(&cfg), "/healthz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(http_port(&cfg), "/metrics");
    assert!(metrics.contains("lineguard_verdicts_total{verdict=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("lineguard_stage_seconds_bucket{le="), "{metrics}");
    assert!(daemon.stop().success());
}

#[test]
fn hot_folder_inspects_each_file_once_and_explains_failures() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let cfg = daemon_config(dir.path(), &format!("kind = \"folder\"\npath = \"{}\"\npoll_ms = 50\nsettle_ms = 100", inbox.display()), "");
    let out = lineguard_cmd(&["synth", "--count", "3", "--seed", "77", "--defect-rate", "0.0", "--out"]).arg(&inbox).output().unwrap();
    assert_success(&out, "synth");
    std::fs::write(inbox.join("torn.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR half a file").unwrap();
    let daemon = Daemon::start(&cfg);
    let deadline = std::time::Instant::now() + T;
    while std::fs::read_dir(inbox.join("done")).map(|d| d.count()).unwrap_or(0) < 3 {
        assert!(std::time::Instant::now() < deadline, "files not done:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let reason = std::fs::read_to_string(inbox.join("failed/torn.png.reason.txt")).unwrap();
    assert!(reason.contains("torn.png") && reason.contains("not a readable image"), "{reason}");
    let log = daemon.log_text();
    assert!(daemon.stop().success());
    // No broker configured: verdicts are JSON lines on stdout.
    let verdicts: Vec<serde_json::Value> = log.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(verdicts.len(), 3, "{log}");
    // A restart inspects nothing again.
    let daemon = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.log_text();
    assert!(daemon.stop().success());
    assert_eq!(log.lines().filter(|l| l.starts_with('{')).count(), 0, "{log}");
    assert_eq!(std::fs::read_dir(inbox.join("done")).unwrap().count(), 3);
}

#[test]
fn commands_are_validated_authorized_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let cfg = daemon_config(
        dir.path(),
        "kind = \"synthetic\"\nfps = 5",
        &format!("{}[recipes.fresh]\nbank = \"fresh.bank\"\n", mqtt_table(broker.port, "command_token = \"s3cret\"")),
    );
    let daemon = Daemon::start(&cfg);
    let ops = Mqtt::connect(broker.port, "test-ops", &["lineguard/line-1/cmd/reply", "lineguard/line-1/status", "lineguard/line-1/verdict"], None);
    assert!(ops.wait_for("/status", T, |s| s["state"] == "online").is_some(), "{}", daemon.log_text());
    let reply = |payload_topic: &str, payload: &str| {
        ops.publish(&format!("lineguard/line-1/cmd/{payload_topic}"), payload);
        ops.next("/cmd/reply", T).unwrap_or_else(|| panic!("no reply to {payload_topic} {payload}:\n{}", daemon.log_text()))
    };
    let r = reply("recipe", r#"{"id":"a1","recipe":"washer-b""#);
    assert_eq!((r["ok"].as_bool(), r["id"].as_str()), (Some(false), None), "malformed JSON: {r}");
    assert!(r["error"].as_str().unwrap().contains("bad payload"), "{r}");
    let r = reply("recipe", r#"{"id":"a2","recipe":"washer-b"}"#);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("unauthorized"), "{r}");
    let r = reply("selfdestruct", r#"{"id":"a3","token":"s3cret"}"#);
    assert!(r["error"].as_str().unwrap().contains("unknown command"), "{r}");
    let r = reply("recipe", r#"{"id":"a4","token":"s3cret","recipe":"no-such"}"#);
    assert!(r["error"].as_str().unwrap().contains("no-such"), "{r}");
    // Nothing above changed the station.
    let s = ops.wait_for("/status", T, |_| true).unwrap();
    assert_eq!(s["recipe"], "washer");
    let r = reply("recipe", r#"{"id":"a5","token":"s3cret","recipe":"washer-b"}"#);
    assert_eq!((r["ok"].as_bool(), r["id"].as_str()), (Some(true), Some("a5")), "{r}");
    assert!(ops.wait_for("/status", T, |s| s["recipe"] == "washer-b").is_some());
    assert!(ops.wait_for("/verdict", T, |v| v["recipe"] == "washer-b").is_some(), "verdicts use the new recipe");
    let r = reply("threshold", r#"{"id":"a6","token":"s3cret","threshold":123.5}"#);
    assert_eq!(r["detail"]["threshold"], 123.5);
    assert!(ops.wait_for("/verdict", T, |v| v["threshold"] == 123.5 && v["verdict"] == "OK").is_some());
    let r = reply("trigger", r#"{"token":"s3cret"}"#);
    assert!(r["error"].as_str().unwrap().contains("trigger.mode"), "{r}");
    // Enrollment over MQTT: collect 4 frames, build the bank, switch to it.
    let r = reply("enroll", r#"{"id":"e1","token":"s3cret","action":"start","recipe":"fresh","frames":4}"#);
    assert_eq!(r["ok"], true, "{r}");
    let done = ops.next("/cmd/reply", T).expect("enrollment result");
    assert_eq!((done["ok"].as_bool(), done["detail"]["images"].as_u64()), (Some(true), Some(4)), "{done}");
    assert!(dir.path().join("fresh.bank").is_file());
    let r = reply("recipe", r#"{"token":"s3cret","recipe":"fresh"}"#);
    assert_eq!(r["detail"]["bank_id"], done["detail"]["bank_id"], "{r}");
    assert!(daemon.stop().success());
    // Everything the station said matches its schemas.
    let (status, reply_schema, verdict) = (schema("status"), schema("reply"), schema("verdict"));
    let seen = ops.seen.lock().unwrap().clone();
    for (topic, payload) in &seen {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        match topic.rsplit('/').next().unwrap() {
            "status" => assert_valid(&status, &v, topic),
            "reply" => assert_valid(&reply_schema, &v, topic),
            "verdict" => assert_valid(&verdict, &v, topic),
            _ => panic!("unexpected topic {topic}"),
        }
    }
    // The clean stop leaves a retained offline status.
    let late = Mqtt::connect(broker.port, "test-late", &["lineguard/line-1/status"], None);
    let s = late.next("/status", T).unwrap();
    assert_eq!(s["state"], "offline");
}

#[test]
fn embedded_broker_serves_verdicts_status_and_archives_ng_frames() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = daemon_config(
        dir.path(),
        "kind = \"synthetic\"\nfps = 10\ndefect_rate = 1.0\nseed = 5",
        &format!("{}[broker]\nlisten = \"127.0.0.1:{port}\"\n[archive]\nmax_bytes = 600000\n", mqtt_table(port, "")),
    );
    let daemon = Daemon::start(&cfg);
    assert!(wait_for_port(port, T), "embedded broker not listening:\n{}", daemon.log_text());
    let sub = Mqtt::connect(port, "test-sub", &["lineguard/line-1/verdict", "lineguard/line-1/status"], None);
    let ng = sub.wait_for("/verdict", T, |v| v["verdict"] == "NG").unwrap_or_else(|| panic!("no NG verdict:\n{}", daemon.log_text()));
    let id = ng["archive_id"].as_str().expect("NG verdicts carry the archive id");
    let archive = dir.path().join("state/archive");
    for suffix in [".png", ".heatmap.png", ".json"] {
        assert!(archive.join(format!("{id}{suffix}")).is_file(), "{id}{suffix} missing");
    }
    assert!(sub.wait_for("/status", T, |s| s["broker_connected"] == true && s["verdicts"]["ng"].as_u64() > Some(0)).is_some());
    // Let the budget (600 kB) force deletions, then check it holds.
    std::thread::sleep(Duration::from_secs(4));
    let bytes: u64 = std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(bytes <= 600_000, "archive holds {bytes} bytes");
    assert!(daemon.stop().success());
}

#[test]
fn tls_with_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA, a server certificate for 127.0.0.1 and a client certificate, made here.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "lineguard test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (p.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker");
    let (client, client_key) = leaf(vec![], "line-1");
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        std::fs::write(d.join(name), pem).unwrap();
    }
    let tls_port = free_port();
    let broker = Mosquitto::start(
        d,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\nuse_identity_as_username true\n",
            d.display()
        ),
    );
    assert!(wait_for_port(tls_port, T));
    let tls = format!(
        "[mqtt.tls]\nca = \"{0}/ca.pem\"\nclient_cert = \"{0}/client.pem\"\nclient_key = \"{0}/client.key\"\n",
        d.display()
    );
    let cfg = daemon_config(d, "kind = \"synthetic\"\nfps = 5", &format!("{}{tls}", mqtt_table(tls_port, "")));
    let daemon = Daemon::start(&cfg);
    // The test listens on the plain listener of the same broker.
    let sub = Mqtt::connect(broker.port, "test-sub", &["lineguard/line-1/verdict"], None);
    assert!(sub.next("/verdict", T).is_some(), "no verdict over TLS:\n{}", daemon.log_text());
    assert!(daemon.stop().success());

    // Without the client certificate the broker refuses the station, which keeps retrying.
    let no_cert = format!("[mqtt.tls]\nca = \"{}/ca.pem\"\n", d.display());
    let cfg = daemon_config(d, "kind = \"synthetic\"\nfps = 5", &format!("{}{no_cert}", mqtt_table(tls_port, "")));
    let daemon = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.log_text();
    assert!(log.contains("mqtt: connection lost"), "{log}");
    assert!(daemon.stop().success());
}

#[test]
fn bad_daemon_configuration_stops_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = daemon_config(dir.path(), "kind = \"synthetic\"\nfps = 5\nfsp = 3", "");
    let out = lineguard_cmd(&["run", "--config"]).arg(&cfg).output().unwrap();
    let err = expect_failure(&out);
    assert!(err.contains("lineguard.toml") && err.contains("capture") && err.contains("fsp"), "{err}");
    let cfg = daemon_config(dir.path(), "kind = \"folder\"\npath = \"/no/such/folder\"", "");
    let err = expect_failure(&lineguard_cmd(&["run", "--config"]).arg(&cfg).output().unwrap());
    assert!(err.contains("/no/such/folder") && err.contains("not a folder"), "{err}");
}
