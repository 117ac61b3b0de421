//! Chunking invariance and totality of the parser (and, through `build`, of
//! everything downstream of it): however a reply is split into chunks, the
//! result equals a single `parse`, and no input panics.

use std::collections::HashMap;

use blaze_tags::search_replace;
use blaze_tags::{Guardrails, Parsed, Parser, Tag, build, guard, parse};
use proptest::prelude::*;
use proptest::test_runner::Config;

const SAMPLES: &[&str] = &[
    concat!(
        "I'll add a button.\n\n",
        "<think>Should I use <blaze-write path=\"x\">? yes</think>",
        "<blaze-write path=\"src/components/Button.tsx\" description=\"Add &quot;Button&quot;\">\n```tsx\n",
        "export function Button() {\n  return <button className=\"a<b\">Hi</button>;\n}\n```\n</blaze-write>\n",
        "Then <b>tweak</b> the app: a < b && c > d.\n",
        "<blaze-search-replace path=\"src/App.tsx\">\n<<<<<<< SEARCH\n<div/>\n=======\n<Button/>\n>>>>>>> REPLACE\n</blaze-search-replace>\n",
        "<blaze-rename   from=\"a.ts\"\n  to='b.ts' ></blaze-rename >",
        "<blaze-delete path=\"old\"/><blaze-add-dependency packages=\"react-icons zod@3.23.8\"></blaze-add-dependency>",
        "<blaze-output type=\"error\" message=\"m\">ignored</blaze-output></blaze-write>",
        "<blaze-chat-summary>Add button</blaze-chat-summary><blaze-command type=\"rebuild\"></blaze-command>\n",
        "Done — ✓ 日本語.",
    ),
    "<<< <blaze- <blaze-write path=unquoted>x</blaze-write> </blaze-delete > <thinking> <think>a</thin</think>z <blaze-write path=\"cut",
    "text <blaze-write path=\"a.ts\">partial </blaze-wri",
    "<blaze-status title=\"s\"><blaze-write path=\"in-status\">no</blaze-write></blaze-status>tail<think>unclosed",
];

/// Feed `doc` split at the given byte offsets (ignored where they are not
/// char boundaries) and return the parse plus the tags `push` reported.
fn parse_chunked(doc: &str, cuts: &[usize]) -> (Parsed, Vec<Tag>) {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c <= doc.len() && doc.is_char_boundary(c)).collect();
    cuts.sort_unstable();
    let mut parser = Parser::new();
    let mut pushed = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([doc.len()]) {
        pushed.extend(parser.push(&doc[start..cut]));
        start = cut;
    }
    (parser.finish(), pushed)
}

fn assert_same_as_whole(doc: &str, cuts: &[usize]) {
    let whole = parse(doc);
    let (chunked, pushed) = parse_chunked(doc, cuts);
    assert_eq!(chunked, whole, "doc {doc:?} cut at {cuts:?}");
    // `push` reports each completed tag exactly once; `finish` completes none
    // (an unclosed tag is reported as such, never as a tag).
    assert_eq!(pushed, whole.tags, "doc {doc:?} cut at {cuts:?}");
}

#[test]
fn split_at_every_index_matches_single_parse() {
    for doc in SAMPLES {
        for cut in 0..=doc.len() {
            assert_same_as_whole(doc, &[cut]);
        }
    }
}

#[test]
fn char_by_char_matches_single_parse() {
    for doc in SAMPLES {
        let cuts: Vec<usize> = doc.char_indices().map(|(i, _)| i).collect();
        assert_same_as_whole(doc, &cuts);
    }
}

#[test]
fn random_splits_match_single_parse() {
    // Small deterministic PRNG: reproducible without extra dependencies.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for doc in SAMPLES {
        for _ in 0..500 {
            let count = (next() % 12) as usize;
            let cuts: Vec<usize> = (0..count).map(|_| (next() % (doc.len() as u64 + 1)) as usize).collect();
            assert_same_as_whole(doc, &cuts);
        }
    }
}

#[test]
fn sample_document_semantics() {
    let parsed = parse(SAMPLES[0]);
    assert_eq!(parsed.tags.len(), 7);
    assert_eq!(
        parsed.tags[0],
        Tag::Write {
            path: "src/components/Button.tsx".into(),
            description: Some("Add \"Button\"".into()),
            content: "export function Button() {\n  return <button className=\"a<b\">Hi</button>;\n}\n".into(),
        }
    );
    assert_eq!(parsed.tags[2], Tag::Rename { from: "a.ts".into(), to: "b.ts".into() });
    assert!(parsed.text.starts_with("I'll add a button.\n\n\nThen <b>tweak</b> the app: a < b && c > d.\n"));
    assert!(parsed.text.ends_with("Done — ✓ 日本語."));
    assert_eq!(parsed.unclosed, None);

    let garbage = parse(SAMPLES[1]);
    assert_eq!(garbage.tags, vec![Tag::Write { path: "unquoted".into(), description: None, content: "x\n".into() }]);
    assert_eq!(garbage.text, "<<< <blaze-   <thinking> z ");
    let cut = garbage.unclosed.expect("cut-off opening tag");
    assert_eq!((cut.name.as_str(), cut.attrs.len()), ("blaze-write", 0));

    let status = parse(SAMPLES[3]);
    assert_eq!(status.tags, vec![]);
    assert_eq!(status.text, "tail");
}

fn fragment() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "<blaze-write path=\"a\">",
        "<blaze-write path=\"src/b.ts\" description=\"d &amp; e\">",
        "</blaze-write>",
        "</blaze-write ",
        "<blaze-search-replace path=\"a\">",
        "</blaze-search-replace>",
        "<<<<<<< SEARCH\n",
        "=======\n",
        ">>>>>>> REPLACE\n",
        "<blaze-delete path=\"a\"/>",
        "<blaze-rename from=\"a\" to=\"b\">",
        "</blaze-rename>",
        "<blaze-add-dependency packages=\"zod react\">",
        "</blaze-add-dependency>",
        "<blaze-chat-summary>",
        "</blaze-chat-summary>",
        "<blaze-command type=\"build\"/>",
        "<blaze-output type=\"error\">",
        "</blaze-output>",
        "<think>",
        "</think>",
        "<thin",
        "<blaze-",
        "write",
        " path=",
        "```",
        "```tsx\n",
        "\"",
        "'",
        "<",
        ">",
        "</",
        "/>",
        "=",
        "&quot;",
        "\n",
        " ",
        "é",
        "日本",
    ])
    .prop_map(str::to_owned);
    prop_oneof![4 => fixed, 1 => "[a-z <>/=\"'\n-]{0,6}", 1 => ".{0,4}"]
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..48).prop_map(|parts| parts.concat())
}

fn config() -> Config {
    Config { cases: 256, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chunking_never_changes_the_result(doc in document(), cuts in prop::collection::vec(any::<usize>(), 0..10)) {
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (doc.len() + 1)).collect();
        let whole = parse(&doc);
        let (chunked, pushed) = parse_chunked(&doc, &cuts);
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(&pushed, &whole.tags);
        let every_char: Vec<usize> = doc.char_indices().map(|(i, _)| i).collect();
        let (by_char, _) = parse_chunked(&doc, &every_char);
        prop_assert_eq!(&by_char, &whole);
    }

    #[test]
    fn arbitrary_strings_never_panic(doc in ".{0,200}", cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (doc.len() + 1)).collect();
        let (chunked, _) = parse_chunked(&doc, &cuts);
        prop_assert_eq!(chunked, parse(&doc));
    }

    #[test]
    fn downstream_is_total(doc in document(), file in "[a-z \n]{0,60}", path in ".{0,12}", spec in ".{0,12}") {
        let files: HashMap<String, String> = [("a".to_owned(), file.clone()), ("src/b.ts".to_owned(), file.clone())].into_iter().collect();
        let plan = build(&parse(&doc).tags, &files, &Guardrails::default());
        let _ = plan.error_output();
        let _ = plan.changed_paths();
        let _ = guard::check_path(&path);
        let _ = guard::check_package(&spec, &Guardrails::default());
        if let Ok(blocks) = search_replace::parse_blocks(&doc) {
            let _ = search_replace::apply(&file, &blocks);
        }
    }
}
