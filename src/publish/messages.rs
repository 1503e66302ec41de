//! MQTT payloads other than the verdict: the retained status, commands and
//! their replies. JSON Schemas for each are in `firmware-config/schemas/`.

use serde::{Deserialize, Serialize};

use crate::capture::CameraState;

pub const SCHEMA_VERSION: u32 = 1;

/// Topic names under `{prefix}/{station}/`.
pub struct Topics {
    pub verdict: String,
    pub status: String,
    /// `cmd/+`: what the station subscribes to.
    pub commands: String,
    pub reply: String,
    cmd_prefix: String,
}

impl Topics {
    pub fn new(prefix: &str, station: &str) -> Topics {
        let base = format!("{}/{station}", prefix.trim_end_matches('/'));
        Topics {
            verdict: format!("{base}/verdict"),
            status: format!("{base}/status"),
            commands: format!("{base}/cmd/+"),
            reply: format!("{base}/cmd/reply"),
            cmd_prefix: format!("{base}/cmd/"),
        }
    }

    /// The command name of a topic under `cmd/`, if it is one (the reply topic is not).
    pub fn command_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&self.cmd_prefix).filter(|n| *n != "reply")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StationState {
    Starting,
    Online,
    Stopping,
    /// The broker's last will: the station went away without saying goodbye.
    Offline,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictCounts {
    pub ok: u64,
    pub ng: u64,
}

/// Retained on `{prefix}/{station}/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema_version: u32,
    pub station: String,
    pub state: StationState,
    /// RFC 3339.
    pub time: String,
    pub engine: String,
    pub model_id: String,
    pub bank_id: String,
    pub recipe: String,
    pub threshold: f32,
    /// Verdicts per second over the last status interval.
    pub fps: f64,
    pub frames_captured: u64,
    pub verdicts: VerdictCounts,
    /// Frames dropped because inference was busy (newest wins), plus bad frames.
    pub drops: u64,
    pub outbox_depth: usize,
    pub outbox_dropped: u64,
    pub camera: CameraState,
    pub broker_connected: bool,
    pub uptime_s: u64,
    /// Enrollment in progress over MQTT, if any.
    pub enrollment: Option<EnrollmentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrollmentStatus {
    pub recipe: String,
    pub frames: usize,
    pub target: usize,
}

/// The last will: retained `offline` with nothing else known.
pub fn offline_status(station: &str) -> Vec<u8> {
    serde_json::json!({"schema_version": SCHEMA_VERSION, "station": station, "state": "offline"}).to_string().into_bytes()
}

/// A parsed command. Every command may carry `id` (echoed in the reply) and
/// `token` (required when `mqtt.command_token` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: Option<String>,
    pub token: Option<String>,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    Trigger { correlation_id: Option<String> },
    Recipe { recipe: String },
    /// `None` returns to the bank's calibrated threshold.
    Threshold { threshold: Option<f32> },
    Reload,
    EnrollStart { recipe: String, frames: usize },
    EnrollStop,
    EnrollCancel,
}

impl CommandKind {
    pub fn name(&self) -> &'static str {
        match self {
            CommandKind::Trigger { .. } => "trigger",
            CommandKind::Recipe { .. } => "recipe",
            CommandKind::Threshold { .. } => "threshold",
            CommandKind::Reload => "reload",
            CommandKind::EnrollStart { .. } | CommandKind::EnrollStop | CommandKind::EnrollCancel => "enroll",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    id: Option<String>,
    token: Option<String>,
    correlation_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeBody {
    id: Option<String>,
    token: Option<String>,
    recipe: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdBody {
    id: Option<String>,
    token: Option<String>,
    threshold: Option<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainBody {
    id: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum EnrollAction {
    Start,
    Stop,
    Cancel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    id: Option<String>,
    token: Option<String>,
    action: EnrollAction,
    recipe: Option<String>,
    frames: Option<usize>,
}

/// Why a command was refused before it did anything.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    pub command: String,
    pub id: Option<String>,
    pub error: String,
}

const MAX_ID: usize = 128;

/// Parses `payload` received on `cmd/{name}`.
pub fn parse_command(name: &str, payload: &[u8]) -> Result<Command, CommandError> {
    let fail = |error: String, id: Option<String>| CommandError { command: name.into(), id, error };
    // The request id, if the payload is JSON at all, so even a refusal can echo it.
    let loose_id = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
    let text = if payload.iter().all(|b| b.is_ascii_whitespace()) { b"{}".as_slice() } else { payload };
    fn body<T: for<'de> Deserialize<'de>>(t: &[u8]) -> Result<T, String> {
        serde_json::from_slice(t).map_err(|e| format!("bad payload: {e}"))
    }
    let (id, token, kind) = match name {
        "trigger" => {
            let b: TriggerBody = body(text).map_err(|e| fail(e, loose_id.clone()))?;
            if b.correlation_id.as_ref().is_some_and(|c| c.len() > MAX_ID) {
                return Err(fail(format!("correlation_id longer than {MAX_ID} characters"), b.id));
            }
            (b.id, b.token, CommandKind::Trigger { correlation_id: b.correlation_id })
        }
        "recipe" => {
            let b: RecipeBody = body(text).map_err(|e| fail(e, loose_id.clone()))?;
            (b.id, b.token, CommandKind::Recipe { recipe: b.recipe })
        }
        "threshold" => {
            let b: ThresholdBody = body(text).map_err(|e| fail(e, loose_id.clone()))?;
            if let Some(t) = b.threshold
                && !(t.is_finite() && t > 0.0)
            {
                return Err(fail(format!("threshold must be a positive number, got {t}"), b.id));
            }
            (b.id, b.token, CommandKind::Threshold { threshold: b.threshold })
        }
        "reload" => {
            let b: PlainBody = body(text).map_err(|e| fail(e, loose_id.clone()))?;
            (b.id, b.token, CommandKind::Reload)
        }
        "enroll" => {
            let b: EnrollBody = body(text).map_err(|e| fail(e, loose_id.clone()))?;
            let kind = match b.action {
                EnrollAction::Start => {
                    let recipe = b.recipe.ok_or_else(|| fail("enroll start needs \"recipe\"".into(), b.id.clone()))?;
                    let frames = b.frames.unwrap_or(100);
                    if !(crate::enroll::MIN_IMAGES..=10_000).contains(&frames) {
                        return Err(fail(format!("frames must be between {} and 10000, got {frames}", crate::enroll::MIN_IMAGES), b.id));
                    }
                    CommandKind::EnrollStart { recipe, frames }
                }
                EnrollAction::Stop => CommandKind::EnrollStop,
                EnrollAction::Cancel => CommandKind::EnrollCancel,
            };
            (b.id, b.token, kind)
        }
        other => {
            return Err(fail(
                format!("unknown command '{other}' (commands: trigger, recipe, threshold, reload, enroll)"),
                loose_id,
            ));
        }
    };
    if id.as_ref().is_some_and(|i| i.len() > MAX_ID) {
        return Err(fail(format!("id longer than {MAX_ID} characters"), None));
    }
    Ok(Command { id, token, kind })
}

/// Published on `{prefix}/{station}/cmd/reply`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub schema_version: u32,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Command-specific result (e.g. the new recipe, the bank written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Reply {
    pub fn ok(command: &str, id: Option<String>, detail: Option<serde_json::Value>) -> Reply {
        Reply { schema_version: SCHEMA_VERSION, command: command.into(), id, ok: true, error: None, detail }
    }

    pub fn error(command: &str, id: Option<String>, error: String) -> Reply {
        Reply { schema_version: SCHEMA_VERSION, command: command.into(), id, ok: false, error: Some(error), detail: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        let c = parse_command("trigger", br#"{"correlation_id":"part-17","id":"r1"}"#).unwrap();
        assert_eq!(c.kind, CommandKind::Trigger { correlation_id: Some("part-17".into()) });
        assert_eq!(c.id.as_deref(), Some("r1"));
        assert_eq!(parse_command("trigger", b"").unwrap().kind, CommandKind::Trigger { correlation_id: None });
        assert_eq!(parse_command("threshold", br#"{"threshold":null}"#).unwrap().kind, CommandKind::Threshold { threshold: None });
        let e = parse_command("threshold", br#"{"threshold":-1,"id":"x"}"#).unwrap_err();
        assert!(e.error.contains("positive") && e.id.as_deref() == Some("x"));
        let e = parse_command("recipe", br#"{"recipie":"b","id":"q"}"#).unwrap_err();
        assert!(e.error.contains("unknown field `recipie`"), "{}", e.error);
        assert_eq!(e.id.as_deref(), Some("q"), "refusals echo the id when they can");
        let e = parse_command("recipe", b"\xff\xfe not json").unwrap_err();
        assert!(e.error.starts_with("bad payload"));
        let e = parse_command("selfdestruct", b"{}").unwrap_err();
        assert!(e.error.contains("unknown command 'selfdestruct'"));
        let e = parse_command("enroll", br#"{"action":"start"}"#).unwrap_err();
        assert!(e.error.contains("needs \"recipe\""), "{}", e.error);
    }

    #[test]
    fn reply_topic_is_not_a_command() {
        let t = Topics::new("lineguard", "s1");
        assert_eq!(t.command_name("lineguard/s1/cmd/trigger"), Some("trigger"));
        assert_eq!(t.command_name("lineguard/s1/cmd/reply"), None);
        assert_eq!(t.commands, "lineguard/s1/cmd/+");
    }
}
