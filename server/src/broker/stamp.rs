//! The position of an event inside its frame. The stream stamps it at the
//! front of the JSON object (`{"epoch":"…","offset":N,` then the event's
//! own fields), so that instances and connection writers can read it back
//! without parsing the rest of the frame.

use axum::extract::ws::Utf8Bytes;

const EPOCH: &str = "{\"epoch\":\"";
const OFFSET: &str = "\",\"offset\":";

/// The frame of an encoded event (a JSON object), stamped with its position.
pub fn stamp(frame: &str, epoch: &str, offset: u64) -> Utf8Bytes {
    let body = frame.strip_prefix('{').unwrap_or(frame);
    let mut stamped = String::with_capacity(frame.len() + epoch.len() + 32);
    stamped.push_str(EPOCH);
    stamped.push_str(epoch);
    stamped.push_str(OFFSET);
    stamped.push_str(&offset.to_string());
    if body != "}" {
        stamped.push(',');
    }
    stamped.push_str(body);
    stamped.into()
}

/// The (epoch, offset) of a stamped frame; `None` for any other frame.
pub fn position(frame: &str) -> Option<(&str, u64)> {
    let rest = frame.strip_prefix(EPOCH)?;
    let (epoch, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(",\"offset\":")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    Some((epoch, rest[..digits].parse().ok()?))
}

/// A new epoch name: hex digits only (safe in URLs and JSON unescaped),
/// sorting in the order epochs begin (the time in milliseconds, fixed
/// width), then random ones so that two instances starting one at the same
/// millisecond still differ.
pub fn new_epoch() -> String {
    let now_ms = crate::clock::now_ms();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{now_ms:012x}{}", &random[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_frame_is_json_and_gives_its_position_back() {
        let stamped = stamp(r#"{"type":"message","id":"x","text":"a\"b"}"#, "e1", 42);
        let json: serde_json::Value = serde_json::from_str(&stamped).unwrap();
        assert_eq!(json["epoch"], "e1");
        assert_eq!(json["offset"], 42);
        assert_eq!(json["text"], "a\"b");
        assert_eq!(position(&stamped), Some(("e1", 42)));
        let empty = stamp("{}", "e", 1);
        assert!(serde_json::from_str::<serde_json::Value>(&empty).is_ok());
        assert_eq!(position(r#"{"type":"count","count":1}"#), None);
        assert_eq!(position(r#"{"epoch":"e","offset":x}"#), None);
        let (first, second) = (new_epoch(), new_epoch());
        assert_eq!(first.len(), 18);
        assert_ne!(first, second);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_epoch() > first, "later epochs sort after earlier ones");
    }
}
