//! What the backend receives: one JSON body per event, and its signature.
//!
//! - a room event: `{"key":"<room>:<epoch>:<offset>","room":…,"event":…}`,
//!   the event exactly as clients receive it;
//! - a relay registration: `{"key":"relay:<id>:registered"` (or
//!   `unregistered`) `,"action":…,"id":…,"data":…}`, `data` being the
//!   client's registration message;
//! - a gap: `{"key":"<room>:gap:<epoch>:<offset>","room":…,"event":
//!   {"type":"gap","after":{epoch,offset} or null,"resume":{epoch,offset}}}`:
//!   the events between were lost before the backend had them.

use super::plan::Gap;
use crate::broker::Position;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// Streams of relay registrations are named after their action behind
/// this, which no room name can start with.
pub const RELAY_STREAM: &str = "!relay:";

/// The body announcing the stored event at `at` of the stream `room`.
pub fn event_body(room: &str, at: &Position, frame: &str) -> String {
    if let Some(action) = room.strip_prefix(RELAY_STREAM) {
        return relay_body(action, frame);
    }
    let key = format!("{room}:{}:{}", at.epoch, at.offset);
    format!(
        r#"{{"key":{},"room":{},"event":{frame}}}"#,
        Value::from(key),
        Value::from(room)
    )
}

/// A relay stream's event as the backend gets it (the stream's own
/// position is left out: the key names the registration).
fn relay_body(action: &str, frame: &str) -> String {
    let event: Value = serde_json::from_str(frame).unwrap_or(Value::Null);
    let (kind, id) = (&event["type"], &event["id"]);
    json!({
        "key": format!("relay:{}:{}", id.as_str().unwrap_or_default(), kind.as_str().unwrap_or_default()),
        "action": action,
        "id": id,
        "data": event["data"],
    })
    .to_string()
}

/// The stored frame of a relay registration or unregistration (`kind`).
pub fn relay_event(kind: &str, id: uuid::Uuid, action: &str, data: &str, ts: u64) -> String {
    let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    json!({"type": kind, "id": id, "action": action, "data": data, "ts": ts}).to_string()
}

pub fn gap_body(room: &str, gap: &Gap) -> String {
    let resume = &gap.resume;
    json!({
        "key": format!("{room}:gap:{}:{}", resume.epoch, resume.offset),
        "room": room,
        "event": {"type": "gap", "after": gap.after, "resume": resume},
    })
    .to_string()
}

/// The `X-Signature-256` header's value: `sha256=<hex of HMAC-SHA256(secret,
/// body)>`.
pub fn signature(secret: &str, body: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_event_is_wrapped_as_it_is_with_its_key() {
        let at = Position {
            epoch: "E".into(),
            offset: 7,
        };
        let body = event_body(
            "général \"x\"",
            &at,
            r#"{"epoch":"E","offset":7,"type":"message"}"#,
        );
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["key"], "général \"x\":E:7");
        assert_eq!(value["room"], "général \"x\"");
        assert_eq!(value["event"]["type"], "message");
    }

    #[test]
    fn a_relay_registration_names_the_client() {
        let id = uuid::Uuid::new_v4();
        let frame = relay_event("registered", id, "jump", r#"{"action":"jump","x":1}"#, 5);
        let at = Position {
            epoch: "E".into(),
            offset: 1,
        };
        let value: Value = serde_json::from_str(&event_body("!relay:jump", &at, &frame)).unwrap();
        assert_eq!(value["key"], format!("relay:{id}:registered"));
        assert_eq!(value["action"], "jump");
        assert_eq!(value["id"], id.to_string());
        assert_eq!(value["data"]["x"], 1);
    }

    #[test]
    fn the_signature_is_the_rfc_4231_hmac() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
