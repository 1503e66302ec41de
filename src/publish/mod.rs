//! Getting verdicts to the line: the durable outbox, the MQTT link, the
//! embedded broker and the payloads.

pub mod broker;
pub mod messages;
pub mod mqtt;
pub mod outbox;
