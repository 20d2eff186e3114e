//! The properties the fuzz targets check, one function per target.
//!
//! Shared by the fuzz targets (this file is the fuzz crate's library) and by
//! `app/tests/fuzz_corpus.rs`, which replays the committed corpus with
//! `cargo test` on stable. Each function takes the raw input and returns a
//! description of the broken property, if any. Inputs that are not UTF-8
//! are skipped: WebSocket text frames, and so every string these functions
//! take, are UTF-8.

use app::protocol::{
    invisible, ClientMessage, ErrorCode, MessageText, Pseudo, PseudoError, TextError,
    MAX_PSEUDO_CHARS, MAX_TEXT_CHARS,
};
use app::relay::{check_frame, registration_action, RelayFrameError, MAX_ACTION_BYTES};
use serde::de::IgnoredAny;
use serde_json::Value;

/// `Err` names the property an input broke.
pub type Outcome = Result<(), String>;

/// serde_json errors for JSON that `Value` refuses and `IgnoredAny` takes
/// (escaped lone surrogates give either of the two in the middle).
const LENIENT: [&str; 4] = [
    "number out of range",
    "lone leading surrogate in hex escape",
    "unexpected end of hex escape",
    "recursion limit exceeded",
];

/// An input, quoted and cut short, for messages (formatted only on failure).
struct Show<'a>(&'a str);

impl std::fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX: usize = 120;
        match self.0.char_indices().nth(MAX) {
            Some((end, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..end], self.0.len()),
            None => write!(f, "{:?}", self.0),
        }
    }
}

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// `ClientMessage::decode`: what it accepts is a JSON object tagged by a
/// `"type"` string with the variant's fields, survives a round trip through
/// serde_json, and its nickname or text goes through the same checks as
/// [`pseudo`] and [`message_text`]; what it refuses gets the right code.
pub fn client_message(data: &[u8]) -> Outcome {
    let Ok(frame) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let input = Show(frame);
    let not_json = serde_json::from_str::<IgnoredAny>(frame).is_err();
    let msg = match ClientMessage::decode(frame) {
        Ok(msg) => msg,
        Err(err) => {
            ensure!(
                (err.code == ErrorCode::InvalidJson) == not_json,
                "{input}: code {:?}, but the frame is{} JSON",
                err.code,
                if not_json { " not" } else { "" }
            );
            ensure!(
                matches!(
                    err.code,
                    ErrorCode::InvalidJson | ErrorCode::UnknownType | ErrorCode::InvalidMessage
                ),
                "{input}: decode gave code {:?}",
                err.code
            );
            ensure!(!err.message.is_empty(), "{input}: empty error message");
            if let Ok(value) = serde_json::from_str::<Value>(frame) {
                ensure!(
                    value.is_object() || err.code == ErrorCode::InvalidMessage,
                    "{input}: not an object, but code {:?}",
                    err.code
                );
            }
            return Ok(());
        }
    };
    let fields = match serde_json::from_str::<Value>(frame) {
        Ok(Value::Object(fields)) => fields,
        other => return Err(format!("{input}: decoded to {msg:?}, but is {other:?}")),
    };
    let (tag, field) = match &msg {
        ClientMessage::Join { pseudo, .. } => ("join", Some(("pseudo", pseudo))),
        ClientMessage::Rename { pseudo } => ("rename", Some(("pseudo", pseudo))),
        ClientMessage::Say { text, .. } => ("say", Some(("text", text))),
        ClientMessage::Typing => ("typing", None),
        ClientMessage::Delete { .. } => ("delete", None),
        ClientMessage::Edit { text, .. } => ("edit", Some(("text", text))),
        ClientMessage::Kick { pseudo } => ("kick", Some(("pseudo", pseudo))),
        ClientMessage::Ban { pseudo, .. } => ("ban", Some(("pseudo", pseudo))),
        ClientMessage::Mute { pseudo, .. } => ("mute", Some(("pseudo", pseudo))),
        ClientMessage::SlowMode { .. } => ("slow_mode", None),
        ClientMessage::Older { .. } => ("older", None),
    };
    ensure!(
        fields.get("type") == Some(&Value::from(tag)),
        "{input}: decoded to {msg:?} without \"type\":{tag:?}"
    );
    if let Some((field, value)) = field {
        ensure!(
            fields.get(field) == Some(&Value::from(value.as_str())),
            "{input}: decoded to {msg:?}, but {field:?} is {:?}",
            fields.get(field)
        );
    }
    if let ClientMessage::Join { session, .. } = &msg {
        let given = match fields.get("session") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => uuid::Uuid::parse_str(s).ok(),
            Some(_) => return Err(format!("{input}: decoded a non-string session")),
        };
        ensure!(
            given == *session,
            "{input}: session {session:?}, the frame says {given:?}"
        );
    }
    let json = serde_json::to_string(&msg).map_err(|err| format!("{msg:?}: encode: {err}"))?;
    match ClientMessage::decode(&json) {
        Ok(again) => ensure!(again == msg, "{input}: {msg:?} came back as {again:?}"),
        Err(err) => return Err(format!("{input}: re-encoded as {json:?}, refused: {err:?}")),
    }
    match &msg {
        ClientMessage::Join { pseudo: p, .. } | ClientMessage::Rename { pseudo: p } => {
            pseudo(p.as_bytes())
        }
        ClientMessage::Say { text, .. } | ClientMessage::Edit { text, .. } => {
            message_text(text.as_bytes())
        }
        ClientMessage::Kick { pseudo: p }
        | ClientMessage::Ban { pseudo: p, .. }
        | ClientMessage::Mute { pseudo: p, .. } => pseudo(p.as_bytes()),
        ClientMessage::Typing
        | ClientMessage::Delete { .. }
        | ClientMessage::SlowMode { .. }
        | ClientMessage::Older { .. } => Ok(()),
    }
}

/// `Pseudo::parse`: the nickname rule, exactly: the input is trimmed, then
/// refused when empty, longer than `MAX_PSEUDO_CHARS` characters, when it
/// holds a control character, or an invisible one (checked in that order).
pub fn pseudo(data: &[u8]) -> Outcome {
    let Ok(raw) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let input = Show(raw);
    let trimmed = raw.trim();
    let expected = if trimmed.is_empty() {
        Err(PseudoError::Empty)
    } else if trimmed.chars().count() > MAX_PSEUDO_CHARS {
        Err(PseudoError::TooLong)
    } else if trimmed.chars().any(char::is_control) {
        Err(PseudoError::ControlCharacter)
    } else if trimmed.chars().any(invisible) {
        Err(PseudoError::Invisible)
    } else {
        Ok(trimmed)
    };
    let parsed = Pseudo::parse(raw);
    ensure!(
        parsed.as_ref().map(Pseudo::as_str) == expected.as_ref().copied(),
        "{input}: parsed as {parsed:?}, expected {expected:?}"
    );
    let Ok(nick) = parsed else {
        return Ok(());
    };
    let s = nick.as_str();
    ensure!(s.trim() == s, "{input}: {s:?} is not trimmed");
    ensure!(
        (1..=MAX_PSEUDO_CHARS).contains(&s.chars().count()),
        "{input}: {s:?} has {} characters",
        s.chars().count()
    );
    ensure!(
        !s.chars().any(char::is_control),
        "{input}: {s:?} has a control character"
    );
    ensure!(
        !s.chars().any(invisible),
        "{input}: {s:?} has an invisible character"
    );
    ensure!(nick.to_string() == s, "{input}: Display differs");
    ensure!(
        Pseudo::parse(s).as_ref() == Ok(&nick),
        "{input}: {s:?} does not parse to itself"
    );
    Ok(())
}

/// `MessageText::parse`: refused when nothing visible is in it, when longer
/// than `MAX_TEXT_CHARS` characters, or with a control character other than
/// newline and tab; otherwise kept exactly as typed.
pub fn message_text(data: &[u8]) -> Outcome {
    let Ok(raw) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let input = Show(raw);
    let chars = raw.chars().count();
    let expected = if raw.chars().all(|c| c.is_whitespace() || invisible(c)) {
        Err(TextError::Empty)
    } else if chars > MAX_TEXT_CHARS {
        Err(TextError::TooLong)
    } else if raw
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        Err(TextError::ControlCharacter)
    } else {
        Ok(raw)
    };
    let parsed = MessageText::parse(raw).map(MessageText::into_string);
    ensure!(
        parsed.as_deref() == expected.as_ref().copied(),
        "{input}: parsed as {parsed:?}, expected {expected:?}"
    );
    let Ok(text) = parsed else {
        return Ok(());
    };
    ensure!(!text.trim().is_empty(), "{input}: accepted a blank text");
    ensure!(
        text.chars().count() <= MAX_TEXT_CHARS,
        "{input}: accepted {chars} characters"
    );
    ensure!(
        MessageText::parse(&text).map(MessageText::into_string) == Ok(text.clone()),
        "{input}: does not parse to itself"
    );
    Ok(())
}

/// The relay: `registration_action` accepts exactly a JSON object whose
/// `"action"` is a non-empty string of at most `MAX_ACTION_BYTES` bytes, and
/// gives a reason otherwise; `check_frame` (later frames) accepts
/// every JSON value, and everything a registration accepts.
pub fn relay_frame(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let input = Show(text);
    let value = serde_json::from_str::<Value>(text);
    let frame = check_frame(text);
    if let Err(reason) = &frame {
        ensure!(
            matches!(reason, RelayFrameError::FrameNotJson(_))
                && reason
                    .to_string()
                    .starts_with("message is not valid JSON: "),
            "{input}: frame refused with {reason:?}"
        );
    }
    // The frame check (serde's `IgnoredAny`) accepts all JSON, and a little
    // more than `Value` does, as JavaScript's JSON.parse on the other side
    // would: numbers beyond f64, escaped lone surrogates, any nesting depth.
    match (&frame, &value) {
        (Ok(()), Ok(_)) | (Err(_), Err(_)) => {}
        (Ok(()), Err(err)) => ensure!(
            LENIENT.iter().any(|m| err.to_string().starts_with(m)),
            "{input}: forwarded, but JSON parse says {err}"
        ),
        (Err(reason), Ok(_)) => return Err(format!("{input}: JSON, refused: {reason}")),
    }
    // The rule as properties, not as a second copy of the code: accepted
    // exactly when the frame is an object whose "action" is a string of 1 to
    // MAX_ACTION_BYTES bytes, and then that string is the action.
    let field = match &value {
        Ok(Value::Object(fields)) => match fields.get("action") {
            Some(Value::String(action)) => Some(action.as_str()),
            _ => None,
        },
        _ => None,
    };
    let registered = registration_action(text);
    match (&registered, field) {
        (Ok(action), Some(field)) => ensure!(
            action == field,
            "{input}: registered {action:?}, the frame says {field:?}"
        ),
        (Ok(action), None) => {
            return Err(format!(
                "{input}: registered {action:?} without a string action"
            ))
        }
        (Err(reason), Some(field)) => ensure!(
            match reason {
                RelayFrameError::EmptyAction => field.is_empty(),
                RelayFrameError::ActionTooLong => field.len() > MAX_ACTION_BYTES,
                _ => false,
            },
            "{input}: action {field:?} refused: {reason}"
        ),
        (Err(reason), None) => ensure!(
            !reason.to_string().is_empty(),
            "{input}: refused without a reason"
        ),
    }
    if let Ok(action) = registered {
        ensure!(!action.is_empty(), "{input}: empty action");
        ensure!(
            action.len() <= MAX_ACTION_BYTES,
            "{input}: action of {} bytes",
            action.len()
        );
        ensure!(frame.is_ok(), "{input}: registered, but not a valid frame");
    }
    Ok(())
}
