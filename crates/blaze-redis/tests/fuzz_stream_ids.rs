//! Bounded fuzzing of resume-id validation. Resume ids come from clients
//! (`Last-Event-ID`, `?after=`) and go straight into `XRANGE`, so the check
//! must accept exactly the documented shape `<ms>[-<seq>]`, ASCII digits
//! only, at most 20 of them each (the width of a `u64`).
//!
//! `make fuzz` raises `BLAZE_FUZZ_CASES` for long runs.

use std::sync::LazyLock;

use blaze_redis::streams::is_stream_id;
use proptest::prelude::*;
use proptest::test_runner::Config;
use regex::Regex;

/// The contract, stated independently of the implementation.
static SHAPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9]{1,20}(-[0-9]{1,20})?$").expect("valid regex"));

/// Cases per property: `BLAZE_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> Config {
    let cases = std::env::var("BLAZE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Near misses: digit runs around the length limit, dashes in every place,
/// non-ASCII digits, signs, spaces and Redis' special ids.
fn near_miss() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[0-9]{0,22}",
        2 => Just("-".to_owned()),
        1 => prop::sample::select(vec!["+", " ", "*", "$", ">", "0x", "١", "９", "\u{0}", "\n", "e3", "."]).prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(cases(4096))]

    #[test]
    fn fuzz_arbitrary_strings_are_accepted_only_in_shape(s in "\\PC{0,48}") {
        prop_assert_eq!(is_stream_id(&s), SHAPE.is_match(&s), "{:?}", s);
    }

    #[test]
    fn fuzz_near_misses_are_accepted_only_in_shape(s in near_miss()) {
        prop_assert_eq!(is_stream_id(&s), SHAPE.is_match(&s), "{:?}", s);
    }

    #[test]
    fn fuzz_every_id_of_the_shape_is_accepted(ms in "[0-9]{1,20}", seq in prop::option::of("[0-9]{1,20}")) {
        let id = match seq {
            Some(seq) => format!("{ms}-{seq}"),
            None => ms,
        };
        prop_assert!(is_stream_id(&id), "{:?}", id);
    }
}
