//! Replays the committed fuzz inputs (`fuzz/seeds/<target>/` and
//! `fuzz/corpus/<target>/`) through the same property checks as the fuzz
//! targets, so that `cargo test` on stable guards what fuzzing found.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

fn replay(target: &str, check: fn(&[u8]) -> checks::Outcome) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut failures = Vec::new();
    for dir in ["seeds", "corpus"] {
        let dir = fuzz.join(dir).join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            files += 1;
            match catch_unwind(AssertUnwindSafe(|| check(&data))) {
                Ok(Ok(())) => {}
                Ok(Err(broken)) => failures.push(format!("{}: {broken}", path.display())),
                Err(_) => failures.push(format!("{}: panicked", path.display())),
            }
        }
        assert!(files > 0, "{} is empty", dir.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn client_message_corpus() {
    replay("client_message", checks::client_message);
}

#[test]
fn pseudo_corpus() {
    replay("pseudo", checks::pseudo);
}

#[test]
fn message_text_corpus() {
    replay("message_text", checks::message_text);
}

#[test]
fn relay_frame_corpus() {
    replay("relay_frame", checks::relay_frame);
}
