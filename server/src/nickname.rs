//! When two nicknames are the same person to a reader: the form under which
//! nicknames are unique in a room.
//!
//! Compatibility normalisation (fullwidth `ａｌｉｃｅ` is `alice`), full case
//! folding (`STRASSE` is `straße`), and the confusable skeleton of Unicode
//! TR39 (Cyrillic `а` is Latin `a`, `1` and `I` are `l`), each from a
//! well-kept crate. The skeleton's prototypes may be capitals (`0` becomes
//! `O`), so folding comes again after it. One rule of our own: a capital I
//! looks like l and is the same letter as i, so i and l compare equal
//! (`paypaI` is `paypal`, and `ALICE` is still `alice`). Invisible and
//! direction-changing characters never get this far: `Pseudo::parse`
//! refuses them.

use app::protocol::Pseudo;
use caseless::default_case_fold_str;
use unicode_normalization::UnicodeNormalization;
use unicode_security::skeleton;

pub fn key(pseudo: &Pseudo) -> String {
    let folded = default_case_fold_str(&pseudo.as_str().nfkc().collect::<String>());
    let skeleton: String = skeleton(&folded).collect();
    default_case_fold_str(&skeleton)
        .nfc()
        .map(|c| if c == 'i' { 'l' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        key(&Pseudo::parse(a).unwrap()) == key(&Pseudo::parse(b).unwrap())
    }

    #[test]
    fn look_alikes_share_a_key() {
        for (original, look_alike) in [
            ("alice", "Alice"),
            ("alice", "ALICE"),
            ("alice", "\u{430}lice"),
            ("alice", "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}"),
            ("paypal", "paypaI"),
            ("paypal", "paypa1"),
            ("bob", "b0b"),
            ("STRASSE", "stra\u{df}e"),
            ("José", "Jose\u{301}"),
        ] {
            assert!(same(original, look_alike), "{original} / {look_alike}");
        }
    }

    #[test]
    fn different_names_stay_different() {
        for (a, b) in [("alice", "alicia"), ("bob", "rob"), ("anna", "hanna")] {
            assert!(!same(a, b), "{a} / {b}");
        }
    }
}
