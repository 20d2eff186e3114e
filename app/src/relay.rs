//! The action relay's frames, kept apart from the server so that they can be
//! tested and fuzzed without it (see `fuzz/`), and so that its clients (the
//! load generator) speak them through the same types.
//!
//! The first frame registers: a JSON object with a non-empty string
//! `action` ([`Registration`]). Every later frame must be JSON (any JSON
//! value); it is then forwarded byte for byte. The relay answers with a
//! [`RelayReply`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use uuid::Uuid;

/// Longest action name, in bytes: it becomes part of Redis key names.
pub const MAX_ACTION_BYTES: usize = 256;

/// What the relay sends a client of its own (everything else it receives is
/// other clients' frames, byte for byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Strict: another client's frame that merely looks like a reply, extra
// fields and all, is not one.
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RelayReply {
    /// The registration was accepted: `id` is the client's id, recorded
    /// under `action`.
    Registered { id: Uuid, action: String },
    /// Why a frame or the registration was refused.
    Error { error: String },
}

impl RelayReply {
    /// The frame's text; keys in the original Node server's order (`type`
    /// first, then `id`, `action`).
    pub fn encode(&self) -> String {
        // A tag, a UUID and strings: serialization cannot fail.
        serde_json::to_string(self).expect("relay replies serialize")
    }

    /// Reads a frame the relay sent; `None` for anything that is not one of
    /// its replies.
    pub fn decode(text: &str) -> Option<RelayReply> {
        // serde would also take an array that starts with the tag
        // (`["error","x"]`): replies are objects only.
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

/// The first frame a relay client sends (extra fields are allowed by the
/// server; this is the minimal one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration<'a> {
    pub action: &'a str,
    /// An access token, for a relay that requires one (`RELAY_AUTH`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
}

impl Registration<'_> {
    /// The frame's text.
    pub fn encode(&self) -> String {
        // Strings only: serialization cannot fail.
        serde_json::to_string(self).expect("registrations serialize")
    }
}

/// Why the relay refuses a frame. Its text (`to_string()`) is what the
/// client is told in a [`RelayReply::Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayFrameError {
    /// The registration is not JSON; serde's description of why.
    RegistrationNotJson(String),
    /// The registration is JSON, but not an object.
    RegistrationNotObject,
    MissingAction,
    EmptyAction,
    /// Longer than [`MAX_ACTION_BYTES`].
    ActionTooLong,
    ActionNotString,
    /// A frame after the registration is not JSON; serde's description of
    /// why.
    FrameNotJson(String),
}

impl fmt::Display for RelayFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayFrameError::RegistrationNotJson(err) => {
                write!(f, "the first message must be JSON: {err}")
            }
            RelayFrameError::RegistrationNotObject => {
                f.write_str("the first message must be a JSON object with an \"action\" key")
            }
            RelayFrameError::MissingAction => {
                f.write_str("the first message must have an \"action\" key")
            }
            RelayFrameError::EmptyAction => f.write_str("\"action\" must not be empty"),
            RelayFrameError::ActionTooLong => {
                write!(f, "\"action\" must be at most {MAX_ACTION_BYTES} bytes")
            }
            RelayFrameError::ActionNotString => f.write_str("\"action\" must be a string"),
            RelayFrameError::FrameNotJson(err) => write!(f, "message is not valid JSON: {err}"),
        }
    }
}

impl std::error::Error for RelayFrameError {}

/// The action of a registration frame, or why it is refused.
pub fn registration_action(text: &str) -> Result<String, RelayFrameError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|err| RelayFrameError::RegistrationNotJson(err.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(RelayFrameError::RegistrationNotObject);
    };
    match fields.get("action") {
        None => Err(RelayFrameError::MissingAction),
        Some(Value::String(action)) if action.is_empty() => Err(RelayFrameError::EmptyAction),
        Some(Value::String(action)) if action.len() > MAX_ACTION_BYTES => {
            Err(RelayFrameError::ActionTooLong)
        }
        Some(Value::String(action)) => Ok(action.clone()),
        Some(_) => Err(RelayFrameError::ActionNotString),
    }
}

/// Checks a frame sent after registration: `Err` with the reason when it
/// is not JSON (it is then not forwarded).
pub fn check_frame(text: &str) -> Result<(), RelayFrameError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|err| RelayFrameError::FrameNotJson(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        assert_eq!(
            registration_action(r#"{"action":"a","x":1}"#),
            Ok("a".into())
        );
        for (bad, error) in [
            ("[]", RelayFrameError::RegistrationNotObject),
            ("\"action\"", RelayFrameError::RegistrationNotObject),
            ("{}", RelayFrameError::MissingAction),
            (r#"{"action":""}"#, RelayFrameError::EmptyAction),
            (r#"{"action":5}"#, RelayFrameError::ActionNotString),
            (r#"{"action":null}"#, RelayFrameError::ActionNotString),
        ] {
            assert_eq!(registration_action(bad), Err(error), "{bad}");
        }
        assert!(matches!(
            registration_action("nope"),
            Err(RelayFrameError::RegistrationNotJson(_))
        ));
        let long = format!(r#"{{"action":"{}"}}"#, "a".repeat(257));
        assert_eq!(
            registration_action(&long),
            Err(RelayFrameError::ActionTooLong)
        );
    }

    #[test]
    fn refusals_read_as_before() {
        let said = |text: &str| registration_action(text).unwrap_err().to_string();
        assert_eq!(
            said("[]"),
            "the first message must be a JSON object with an \"action\" key"
        );
        assert_eq!(said("{}"), "the first message must have an \"action\" key");
        assert_eq!(said(r#"{"action":""}"#), "\"action\" must not be empty");
        assert_eq!(said(r#"{"action":5}"#), "\"action\" must be a string");
        let long = format!(r#"{{"action":"{}"}}"#, "a".repeat(257));
        assert_eq!(said(&long), "\"action\" must be at most 256 bytes");
        assert_eq!(
            said("nope"),
            "the first message must be JSON: expected ident at line 1 column 2"
        );
        assert_eq!(
            check_frame("{\"on\":").unwrap_err().to_string(),
            "message is not valid JSON: EOF while parsing a value at line 1 column 6"
        );
    }

    #[test]
    fn later_frames_must_be_json() {
        for good in ["{}", "[1,2]", "\"x\"", "5", "null", r#" {"on":true} "#] {
            assert_eq!(check_frame(good), Ok(()), "{good}");
        }
        for bad in ["{\"on\":", "", "{} {}"] {
            assert!(
                matches!(check_frame(bad), Err(RelayFrameError::FrameNotJson(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_keep_the_original_bytes() {
        let id = Uuid::new_v4();
        let registered = RelayReply::Registered {
            id,
            action: "a".into(),
        };
        assert_eq!(
            registered.encode(),
            format!(r#"{{"type":"registered","id":"{id}","action":"a"}}"#)
        );
        let error = RelayReply::Error { error: "x".into() };
        assert_eq!(error.encode(), r#"{"type":"error","error":"x"}"#);
        for reply in [registered, error] {
            assert_eq!(RelayReply::decode(&reply.encode()), Some(reply));
        }
    }

    #[test]
    fn other_frames_are_not_replies() {
        for frame in [
            r#"{"action":"a"}"#,
            r#"{"type":"registered","action":"a"}"#,
            r#"{"type":"registered","id":"nope","action":"a"}"#,
            r#"{"type":"error","error":"x","from":"another client"}"#,
            r#"{"type":"message","error":"x"}"#,
            r#"["error","x"]"#,
            "not json",
        ] {
            assert_eq!(RelayReply::decode(frame), None, "{frame}");
        }
    }

    #[test]
    fn registrations_are_what_the_relay_accepts() {
        let bare = Registration {
            action: "a\"b",
            token: None,
        };
        assert_eq!(bare.encode(), r#"{"action":"a\"b"}"#);
        assert_eq!(registration_action(&bare.encode()), Ok("a\"b".into()));
        let with_token = Registration {
            token: Some("t"),
            ..bare
        };
        assert_eq!(with_token.encode(), r#"{"action":"a\"b","token":"t"}"#);
        assert_eq!(registration_action(&with_token.encode()), Ok("a\"b".into()));
    }
}
