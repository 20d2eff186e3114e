//! The action relay's frame rules, kept apart from the server so that they
//! can be tested and fuzzed without it (see `fuzz/`).
//!
//! The first frame registers: a JSON object with a non-empty string
//! `action`. Every later frame must be JSON (any JSON value); it is then
//! forwarded byte for byte.

use serde_json::Value;

/// Longest action name, in bytes: it becomes part of Redis key names.
pub const MAX_ACTION_BYTES: usize = 256;

/// The action of a registration frame, or why it is refused.
pub fn registration_action(text: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|err| format!("the first message must be JSON: {err}"))?;
    let Value::Object(fields) = value else {
        return Err("the first message must be a JSON object with an \"action\" key".into());
    };
    match fields.get("action") {
        None => Err("the first message must have an \"action\" key".into()),
        Some(Value::String(action)) if action.is_empty() => {
            Err("\"action\" must not be empty".into())
        }
        Some(Value::String(action)) if action.len() > MAX_ACTION_BYTES => Err(format!(
            "\"action\" must be at most {MAX_ACTION_BYTES} bytes"
        )),
        Some(Value::String(action)) => Ok(action.clone()),
        Some(_) => Err("\"action\" must be a string".into()),
    }
}

/// Checks a frame sent after registration: `Err` with the reason when it
/// is not JSON (it is then not forwarded).
pub fn check_frame(text: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|err| format!("message is not valid JSON: {err}"))
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
        for bad in [
            "nope",
            "[]",
            "\"action\"",
            "{}",
            r#"{"action":""}"#,
            r#"{"action":5}"#,
            r#"{"action":null}"#,
        ] {
            assert!(registration_action(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"action":"{}"}}"#, "a".repeat(257));
        assert!(registration_action(&long).is_err());
    }

    #[test]
    fn later_frames_must_be_json() {
        for good in ["{}", "[1,2]", "\"x\"", "5", "null", r#" {"on":true} "#] {
            assert_eq!(check_frame(good), Ok(()), "{good}");
        }
        let err = check_frame("{\"on\":").unwrap_err();
        assert!(err.starts_with("message is not valid JSON: "), "{err}");
        assert!(check_frame("").is_err());
        assert!(check_frame("{} {}").is_err());
    }
}
