//! What the backend receives: one JSON body per event, its id and its
//! signature.
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
use sha2::{Digest, Sha256};

/// The one stream relay registrations of every action are appended to,
/// named as no room can be: the broker holds one bounded stream for them
/// all, not one per action a stranger names.
pub const RELAY_STREAM: &str = "!relay";

/// The body announcing the stored event at `at` of the stream `room`.
pub fn event_body(room: &str, at: &Position, frame: &str) -> String {
    if room == RELAY_STREAM {
        return relay_body(frame);
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
fn relay_body(frame: &str) -> String {
    let event: Value = serde_json::from_str(frame).unwrap_or(Value::Null);
    let (kind, id, action) = (&event["type"], &event["id"], &event["action"]);
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

/// The `X-Webhook-Signature` header's value, as Stripe's: `t=<unix
/// seconds>,v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>`. The time is
/// signed with the body, so that a receiver refuses a captured request
/// replayed later (it checks that `t` is recent).
pub fn signature(secret: &str, unix_secs: u64, body: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{unix_secs}.").as_bytes());
    mac.update(body.as_bytes());
    format!(
        "t={unix_secs},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The `X-Webhook-Id` header's value: the same for every try of one event
/// (its body's `key`), for the receiver to drop repeats by; hex, as
/// header values must be ASCII while keys carry room names.
pub fn delivery_id(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Keyed<'a> {
        #[serde(borrow)]
        key: std::borrow::Cow<'a, str>,
    }
    let key = serde_json::from_str::<Keyed>(body).map_or_else(|_| body.into(), |k| k.key);
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
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
        let value: Value = serde_json::from_str(&event_body(RELAY_STREAM, &at, &frame)).unwrap();
        assert_eq!(value["key"], format!("relay:{id}:registered"));
        assert_eq!(value["action"], "jump");
        assert_eq!(value["id"], id.to_string());
        assert_eq!(value["data"]["x"], 1);
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_time_and_the_body() {
        // RFC 4231, test case 2, with "what do ya" as the time's place.
        let body = " want for nothing?";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(format!("7.{body}").as_bytes());
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(signature("Jefe", 7, body), format!("t=7,v1={expected}"));
        // Another time, another signature: a replay cannot move its time.
        assert_ne!(signature("Jefe", 8, body), signature("Jefe", 7, body));
    }

    #[test]
    fn a_delivery_id_is_the_events_and_stays_the_same() {
        let one = r#"{"key":"général:E:7","room":"général"}"#;
        let again = r#"{"key":"général:E:7","room":"général","event":{}}"#;
        let other = r#"{"key":"général:E:8"}"#;
        assert_eq!(delivery_id(one), delivery_id(again));
        assert_ne!(delivery_id(one), delivery_id(other));
        assert!(delivery_id(one).bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
