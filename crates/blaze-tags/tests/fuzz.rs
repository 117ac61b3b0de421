//! Bounded fuzzing of everything in this crate that sees model output: the
//! tag parser, SEARCH/REPLACE parsing and application, and the path guard.
//!
//! `make test` runs a few hundred cases per property; `make fuzz` raises
//! `BLAZE_FUZZ_CASES` for long runs. Properties are stated against
//! independent oracles (one-shot parse, string splicing, the documented
//! rules) rather than "does not panic" alone.

use blaze_tags::guard::{self, MAX_PATH_BYTES};
use blaze_tags::render::escape_attr;
use blaze_tags::search_replace::{self, ApplyError, Block};
use blaze_tags::{Parsed, Parser, Tag, parse};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property: `BLAZE_FUZZ_CASES`, or `default` (sized so each
/// property takes well under a second in a debug build).
fn cases(default: u32) -> Config {
    let cases = std::env::var("BLAZE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    Config { cases, max_global_rejects: cases.max(1024), failure_persistence: None, ..Config::default() }
}

/// Byte fragments biased towards the dialect, plus invalid UTF-8 (a lone
/// continuation byte, a truncated three-byte sequence) and random bytes.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        3 => prop::sample::select(vec![
            &b"<blaze-write path=\"a.ts\">"[..],
            b"</blaze-write>",
            b"<blaze-search-replace path='b'>",
            b"</blaze-search-replace >",
            b"<<<<<<< SEARCH\n",
            b"=======\n",
            b">>>>>>> REPLACE\n",
            b"<blaze-delete path=x/>",
            b"<blaze-rename from=\"a\" to=\"b\">",
            b"</blaze-rename>",
            b"<think>",
            b"</think>",
            b"<blaze-",
            b"</",
            b"<",
            b">",
            b"\"",
            b"&amp;",
            b"```\n",
            b"\r\n",
            b"\xff",
            b"\xe2\x82",
            "日本".as_bytes(),
        ])
        .prop_map(<[u8]>::to_vec),
        2 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

/// Feed `doc` in chunks of the given lengths (each moved forward to the next
/// char boundary) and return the result plus the tags `push` reported.
fn parse_in_chunks(doc: &str, lengths: &[usize]) -> (Parsed, Vec<Tag>) {
    let mut parser = Parser::new();
    let mut pushed = Vec::new();
    let mut start = 0;
    for &len in lengths {
        let mut end = (start + len).min(doc.len());
        while !doc.is_char_boundary(end) {
            end += 1;
        }
        pushed.extend(parser.push(&doc[start..end]));
        start = end;
    }
    pushed.extend(parser.push(&doc[start..]));
    (parser.finish(), pushed)
}

/// Prose that can not open or close a tag.
fn prose() -> impl Strategy<Value = String> {
    "[^<]{0,40}"
}

/// Number of (possibly overlapping) occurrences of `needle` in `hay`.
fn occurrences(hay: &str, needle: &str) -> usize {
    hay.char_indices().filter(|(i, _)| hay[*i..].starts_with(needle)).count()
}

/// A SEARCH/REPLACE line that can not be taken for a marker.
fn block_line() -> impl Strategy<Value = String> {
    "[a-z \t(){};.é]{0,12}"
}

fn render_blocks(blocks: &[Block]) -> String {
    blocks.iter().map(|b| format!("<<<<<<< SEARCH\n{}\n=======\n{}\n>>>>>>> REPLACE\n", b.search, b.replace)).collect()
}

/// Inputs for the path guard: the dangerous spellings as whole segments and
/// inside other text, separators, whitespace, drive letters and control bytes.
fn path_input() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "..", ".", ".git", ".GIT", ".Git", "node_modules", "NODE_MODULES", "src", "a..b", ".gitignore", "/", "//", "\\", "~",
            "C:", "c:", " ", "\t", "\n", "\0", "\u{7f}", "\u{85}", "\u{a0}", "é", "..\u{a0}", "%2e%2e", "./", "../",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9._ -]{1,6}",
        1 => ".{0,3}",
    ];
    prop_oneof![
        6 => prop::collection::vec(piece, 0..10).prop_map(|p| p.concat()),
        1 => prop::collection::vec("[a-z]{1,8}", 60..80).prop_map(|p| p.join("/")),
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    /// Any bytes a stream could deliver (decoded the way the LLM client does,
    /// lossily) parse without panicking, and chunking never changes the result.
    #[test]
    fn fuzz_parse_arbitrary_bytes(raw in bytes(), lengths in prop::collection::vec(0usize..24, 0..40)) {
        let doc = String::from_utf8_lossy(&raw);
        let whole = parse(&doc);
        let (chunked, pushed) = parse_in_chunks(&doc, &lengths);
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(&pushed, &whole.tags);
    }

    /// Fully arbitrary Unicode, pushed in arbitrary chunks, equals one parse.
    #[test]
    fn fuzz_push_in_any_chunking_equals_parse(doc in "\\PC{0,300}", lengths in prop::collection::vec(0usize..64, 0..20)) {
        let (chunked, pushed) = parse_in_chunks(&doc, &lengths);
        let whole = parse(&doc);
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(&pushed, &whole.tags);
    }

    /// Attribute values written with `escape_attr` come back unchanged,
    /// whatever they contain and whatever prose surrounds the tag.
    #[test]
    fn fuzz_escaped_attributes_round_trip(
        before in prose(),
        from in "\\PC{0,80}",
        to in "\\PC{0,80}",
        after in prose(),
        lengths in prop::collection::vec(0usize..16, 0..20),
    ) {
        let doc = format!("{before}<blaze-rename from=\"{}\" to='{}'></blaze-rename>{after}", escape_attr(&from), escape_attr(&to));
        let expected = vec![Tag::Rename { from, to }];
        let (chunked, pushed) = parse_in_chunks(&doc, &lengths);
        prop_assert_eq!(&chunked.tags, &expected);
        prop_assert_eq!(&pushed, &expected);
        prop_assert_eq!(chunked.text, format!("{before}{after}"));
    }

    /// Rendered SEARCH/REPLACE blocks parse back to themselves, also as the
    /// raw body of a `<blaze-search-replace>` tag.
    #[test]
    fn fuzz_search_replace_blocks_round_trip(
        raw in prop::collection::vec(
            (prop::collection::vec(block_line(), 1..4), prop::collection::vec(block_line(), 0..4)),
            1..4,
        ),
    ) {
        let blocks: Vec<Block> = raw
            .into_iter()
            .map(|(search, replace)| Block { search: search.join("\n"), replace: replace.join("\n") })
            .filter(|b| !b.search.trim().is_empty())
            .collect();
        prop_assume!(!blocks.is_empty());
        let body = render_blocks(&blocks);
        prop_assert_eq!(search_replace::parse_blocks(&body), Ok(blocks.clone()));
        let doc = format!("<blaze-search-replace path=\"a.ts\">\n{body}</blaze-search-replace>");
        match parse(&doc).tags.as_slice() {
            [Tag::SearchReplace { body: parsed, .. }] => prop_assert_eq!(search_replace::parse_blocks(parsed), Ok(blocks)),
            other => prop_assert!(false, "expected one search-replace tag, got {:?}", other),
        }
    }

    /// Arbitrary bodies and files: parsing and applying never panic, and
    /// errors point at a block that exists.
    #[test]
    fn fuzz_search_replace_is_total(body in "[a-c \t\r\n<=>SEARCHPL]{0,200}", file in "[a-c \t\r\n=]{0,200}") {
        match search_replace::parse_blocks(&body) {
            Ok(blocks) => {
                prop_assert!(!blocks.is_empty());
                match search_replace::apply(&file, &blocks) {
                    Ok(_) => {}
                    Err(ApplyError::NotFound { block }) => prop_assert!((1..=blocks.len()).contains(&block)),
                    Err(ApplyError::Ambiguous { block, count }) => {
                        prop_assert!((1..=blocks.len()).contains(&block));
                        prop_assert!(count >= 2);
                    }
                    Err(ApplyError::Malformed(m)) => prop_assert!(false, "parsed blocks are well-formed: {}", m),
                }
            }
            Err(e) => prop_assert!(matches!(e, ApplyError::Malformed(_)), "{:?}", e),
        }
    }

    /// A SEARCH text that occurs exactly once is replaced in place, with
    /// nothing else in the file touched (an empty replacement of whole lines
    /// also takes their line break).
    #[test]
    fn fuzz_unique_exact_block_is_spliced(
        prefix in "[a-d \n]{0,60}",
        search in "[a-d][a-d \n]{0,19}",
        replace in "[a-z \n]{0,20}",
        suffix in "[a-d \n]{0,60}",
    ) {
        let file = format!("{prefix}{search}{suffix}");
        prop_assume!(occurrences(&file, &search) == 1);
        let out = search_replace::apply(&file, &[Block { search: search.clone(), replace: replace.clone() }]);
        let after = if replace.is_empty() && (prefix.is_empty() || prefix.ends_with('\n')) {
            suffix.strip_prefix('\n').unwrap_or(&suffix)
        } else {
            &suffix
        };
        prop_assert_eq!(out, Ok(format!("{prefix}{replace}{after}")));
    }

    /// Whatever the guard accepts is a clean relative path: no `..`, `.git`
    /// or `node_modules` component, not absolute, no drive letter, no
    /// backslash or control character, no empty or `.` segment, within the
    /// length limit — and checking it again returns it unchanged.
    #[test]
    fn fuzz_check_path_accepts_only_safe_paths(input in path_input()) {
        if let Ok(path) = guard::check_path(&input) {
            prop_assert!(!path.is_empty() && path.len() <= MAX_PATH_BYTES, "{:?} -> {:?}", input, path);
            prop_assert!(!path.starts_with('/') && !path.starts_with('~'), "{:?} -> {:?}", input, path);
            let b = path.as_bytes();
            prop_assert!(!(b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'), "{:?} -> {:?}", input, path);
            prop_assert!(!path.contains('\\') && !path.chars().any(char::is_control), "{:?} -> {:?}", input, path);
            for segment in path.split('/') {
                prop_assert!(!segment.is_empty() && segment != "." && segment != "..", "{:?} -> {:?}", input, path);
                prop_assert!(!segment.eq_ignore_ascii_case(".git"), "{:?} -> {:?}", input, path);
                prop_assert!(!segment.eq_ignore_ascii_case("node_modules"), "{:?} -> {:?}", input, path);
            }
            prop_assert_eq!(guard::check_path(&path), Ok(path.clone()), "not idempotent for input {:?}", input);
        }
    }
}
