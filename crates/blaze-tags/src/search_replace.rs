//! SEARCH/REPLACE blocks: parsing the body of `<blaze-search-replace>` and
//! applying the blocks to a file.
//!
//! Models reproduce the SEARCH text imperfectly (re-indented, a typo), so
//! matching degrades in three steps: exact substring, whitespace-insensitive
//! line match, then bounded fuzzy line-window match. Every step insists on a
//! unique match; editing the wrong one of two similar places is worse than
//! reporting an error the model can fix on its next turn.

use std::collections::HashMap;

use thiserror::Error;

/// One SEARCH/REPLACE pair. Both sides are lines joined with `\n`, without a
/// trailing newline and without `\r`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub search: String,
    pub replace: String,
}

/// Why a body could not be parsed or applied. `block` is the 1-based position
/// of the block in the body, as the model would count them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    #[error("malformed search/replace body: {0}")]
    Malformed(String),
    #[error("SEARCH block {block} does not match the current file content")]
    NotFound { block: usize },
    #[error("SEARCH block {block} matches {count} places in the file; include more surrounding lines to make it unique")]
    Ambiguous { block: usize, count: usize },
}

/// Minimum normalized Levenshtein similarity for a fuzzy match.
pub const FUZZY_THRESHOLD: f64 = 0.9;

/// Upper bound on the Levenshtein work (sum over candidate windows of
/// `window chars * search chars`) for one block. strsim's dynamic programme
/// costs a couple of ns per cell in release builds, so this keeps the fuzzy
/// step under ~100ms; beyond it we report NotFound rather than stall a turn.
pub const FUZZY_BUDGET_CELLS: usize = 25_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Search,
    Divider,
    Replace,
}

/// Markers are recognised on trimmed lines, with at least seven marker
/// characters: models sometimes indent them or add a stray space.
fn marker(line: &str) -> Option<Marker> {
    let t = line.trim();
    let run = |c: char| t.chars().take_while(|&x| x == c).count();
    if run('<') >= 7 && t.trim_start_matches('<').trim() == "SEARCH" {
        return Some(Marker::Search);
    }
    if run('=') >= 7 && t.chars().all(|c| c == '=') {
        return Some(Marker::Divider);
    }
    if run('>') >= 7 && t.trim_start_matches('>').trim() == "REPLACE" {
        return Some(Marker::Replace);
    }
    None
}

/// Split a body into blocks. Lines outside blocks (blank lines, markdown
/// fences, a sentence of explanation) are ignored; misplaced or missing
/// markers are errors because guessing their intent could corrupt the file.
pub fn parse_blocks(body: &str) -> Result<Vec<Block>, ApplyError> {
    enum State<'a> {
        Outside,
        Search(Vec<&'a str>),
        Replace(Vec<&'a str>, Vec<&'a str>),
    }
    let mut blocks = Vec::new();
    let mut state = State::Outside;
    for (index, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let lineno = index + 1;
        state = match (state, marker(line)) {
            (State::Outside, Some(Marker::Search)) => State::Search(Vec::new()),
            (State::Outside, Some(m)) => {
                return Err(ApplyError::Malformed(format!("line {lineno}: {m:?} marker outside of a SEARCH/REPLACE block")));
            }
            (State::Outside, None) => State::Outside,
            (State::Search(search), Some(Marker::Divider)) => State::Replace(search, Vec::new()),
            (State::Search(_), Some(m)) => {
                return Err(ApplyError::Malformed(format!("line {lineno}: expected ======= before {m:?} marker")));
            }
            (State::Search(mut search), None) => {
                search.push(line);
                State::Search(search)
            }
            (State::Replace(search, replace), Some(Marker::Replace)) => {
                let block = Block { search: search.join("\n"), replace: replace.join("\n") };
                if block.search.trim().is_empty() {
                    return Err(ApplyError::Malformed(format!("block {} has an empty SEARCH section", blocks.len() + 1)));
                }
                blocks.push(block);
                State::Outside
            }
            (State::Replace(..), Some(Marker::Search)) => {
                return Err(ApplyError::Malformed(format!("line {lineno}: new SEARCH marker before >>>>>>> REPLACE")));
            }
            // A second divider inside the replacement is content (it could be
            // a markdown heading underline or a conflict marker in the file).
            (State::Replace(search, mut replace), Some(Marker::Divider) | None) => {
                replace.push(line);
                State::Replace(search, replace)
            }
        };
    }
    match state {
        State::Outside if blocks.is_empty() => Err(ApplyError::Malformed("no SEARCH/REPLACE blocks found".into())),
        State::Outside => Ok(blocks),
        State::Search(_) | State::Replace(..) => {
            Err(ApplyError::Malformed(format!("block {} is not terminated with >>>>>>> REPLACE", blocks.len() + 1)))
        }
    }
}

/// Apply blocks in order, each to the result of the previous one.
///
/// Per block, the first strategy that finds anything decides:
/// 1. exact substring (several occurrences = `Ambiguous`);
/// 2. the same sequence of lines compared with surrounding whitespace
///    trimmed (must be unique; the replacement is re-indented to the file);
/// 3. fuzzy: the window of as many lines with the best
///    `strsim::normalized_levenshtein` score on the trimmed, joined lines,
///    accepted if it is >= 0.9 and strictly the best. The work is capped by
///    [`FUZZY_BUDGET_CELLS`]; beyond the cap the block is `NotFound`.
///
/// The first failing block aborts the whole application, so a file is never
/// left half-edited.
pub fn apply(original: &str, blocks: &[Block]) -> Result<String, ApplyError> {
    let mut current = original.to_owned();
    for (index, block) in blocks.iter().enumerate() {
        current = apply_block(&current, block, index + 1)?;
    }
    Ok(current)
}

fn apply_block(text: &str, block: &Block, number: usize) -> Result<String, ApplyError> {
    // Blocks are kept `\n`-only; match the file's own convention so CRLF
    // files still get exact matches and keep their line endings.
    let search = block.search.replace("\r\n", "\n");
    let replace = block.replace.replace("\r\n", "\n");
    if search.trim().is_empty() {
        return Err(ApplyError::Malformed(format!("block {number} has an empty SEARCH section")));
    }
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let (search_eol, replace_eol) =
        if eol == "\n" { (search.clone(), replace.clone()) } else { (search.replace('\n', eol), replace.replace('\n', eol)) };

    match exact_matches(text, &search_eol) {
        (1, Some(at)) => return Ok(splice_exact(text, at, search_eol.len(), &replace_eol, eol)),
        (0, _) => {}
        (count, _) => return Err(ApplyError::Ambiguous { block: number, count }),
    }

    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let trimmed: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    let search_lines: Vec<&str> = search.split('\n').collect();
    let search_trimmed: Vec<&str> = search_lines.iter().map(|l| l.trim()).collect();
    let n = search_lines.len();
    if n > lines.len() {
        return Err(ApplyError::NotFound { block: number });
    }

    match line_matches(&trimmed, &search_trimmed).as_slice() {
        [start] => return Ok(splice_lines(&lines, *start, n, &search_lines, &replace)),
        [] => {}
        many => return Err(ApplyError::Ambiguous { block: number, count: many.len() }),
    }

    match fuzzy_match(&trimmed, &search_trimmed) {
        Fuzzy::Unique(start) => Ok(splice_lines(&lines, start, n, &search_lines, &replace)),
        Fuzzy::Tied(count) => Err(ApplyError::Ambiguous { block: number, count }),
        Fuzzy::None => Err(ApplyError::NotFound { block: number }),
    }
}

/// Number of occurrences (at least 2 if any two overlap) and the first one.
///
/// Counting overlapping matches one `find` at a time is quadratic on
/// repetitive files (a run of identical lines), so overlap only decides
/// whether the match is unique; the reported count is the linear-time
/// non-overlapping count.
fn exact_matches(text: &str, needle: &str) -> (usize, Option<usize>) {
    let Some(first) = text.find(needle) else {
        return (0, None);
    };
    // `first` starts a copy of `needle`, so stepping over its first char
    // lands on a char boundary.
    let step = needle.chars().next().map_or(1, char::len_utf8);
    if text.get(first + step..).and_then(|tail| tail.find(needle)).is_none() {
        return (1, Some(first));
    }
    (text.match_indices(needle).count().max(2), Some(first))
}

/// Every start index where `pattern` occurs as a run of lines in `file`
/// (overlaps included). Knuth–Morris–Pratt over lines, so a file of many
/// identical lines costs O(file + pattern) rather than O(file × pattern).
fn line_matches(file: &[&str], pattern: &[&str]) -> Vec<usize> {
    let n = pattern.len();
    if n == 0 || n > file.len() {
        return Vec::new();
    }
    // fail[i]: length of the longest proper prefix of pattern[..=i] that is
    // also a suffix of it.
    let mut fail = vec![0usize; n];
    let mut k = 0;
    for i in 1..n {
        while k > 0 && pattern[i] != pattern[k] {
            k = fail[k - 1];
        }
        if pattern[i] == pattern[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut starts = Vec::new();
    k = 0;
    for (i, line) in file.iter().enumerate() {
        while k > 0 && *line != pattern[k] {
            k = fail[k - 1];
        }
        if *line == pattern[k] {
            k += 1;
        }
        if k == n {
            starts.push(i + 1 - n);
            k = fail[k - 1];
        }
    }
    starts
}

fn splice_exact(text: &str, at: usize, len: usize, replace: &str, eol: &str) -> String {
    let (before, rest) = text.split_at(at);
    let mut after = &rest[len..];
    // An empty replacement of whole lines means "delete these lines": take
    // their line break too instead of leaving a blank line behind.
    if replace.is_empty() && (before.is_empty() || before.ends_with('\n')) {
        after = after.strip_prefix(eol).unwrap_or(after);
    }
    let mut out = String::with_capacity(text.len() - len + replace.len());
    out.push_str(before);
    out.push_str(replace);
    out.push_str(after);
    out
}

/// Replace `lines[start..start + n]` with the replacement text, re-indented
/// by the difference between the file's and the SEARCH section's indentation
/// (the model often gets the indentation of the whole block wrong).
fn splice_lines(lines: &[&str], start: usize, n: usize, search_lines: &[&str], replace: &str) -> String {
    let matched = &lines[start..start + n];
    let eol = if matched.first().is_some_and(|l| l.ends_with("\r\n")) { "\r\n" } else { "\n" };
    let keep_final_eol = matched.last().is_some_and(|l| l.ends_with('\n'));
    let file_indent = first_indent(matched.iter().copied());
    let search_indent = first_indent(search_lines.iter().copied());

    let mut out = String::new();
    for line in &lines[..start] {
        out.push_str(line);
    }
    if !replace.is_empty() {
        let replacement: Vec<&str> = replace.split('\n').collect();
        for (k, line) in replacement.iter().enumerate() {
            match line.strip_prefix(search_indent) {
                Some(rest) if !line.trim().is_empty() && search_indent != file_indent => {
                    out.push_str(file_indent);
                    out.push_str(rest);
                }
                _ => out.push_str(line),
            }
            if k + 1 < replacement.len() || keep_final_eol {
                out.push_str(eol);
            }
        }
    }
    for line in &lines[start + n..] {
        out.push_str(line);
    }
    out
}

/// Leading whitespace of the first non-blank line.
fn first_indent<'a>(mut lines: impl Iterator<Item = &'a str>) -> &'a str {
    lines.find(|l| !l.trim().is_empty()).map(|l| &l[..l.len() - l.trim_start().len()]).unwrap_or("")
}

enum Fuzzy {
    Unique(usize),
    Tied(usize),
    None,
}

/// Best window of `search.len()` lines by normalized Levenshtein similarity of
/// the trimmed, `\n`-joined lines.
fn fuzzy_match(file: &[&str], search: &[&str]) -> Fuzzy {
    let n = search.len();
    if n == 0 || n > file.len() {
        return Fuzzy::None;
    }
    let needle = search.join("\n");
    let needle_chars = needle.chars().count();

    // Similarity >= 0.9 needs distance <= L / 10 (L = the longer length).
    // The bag distance (how many characters one side has that the other
    // lacks) never exceeds the edit distance and can be maintained while
    // sliding, so it rules out most windows before any quadratic work. The
    // work left for the survivors is checked against the budget up front,
    // so the outcome never depends on timing.
    let mut bag = BagDiff::default();
    bag.remove_str(&needle.replace('\n', ""));
    let mut window_chars = 0usize;
    let mut candidates = Vec::new();
    let mut cost: usize = 0;
    for (i, line) in file.iter().enumerate() {
        // Lines enter the window joined by '\n'; the separators are counted
        // through the `n - 1` below rather than as bag characters, since both
        // sides always have the same number of them.
        bag.add_str(line);
        window_chars += line.chars().count();
        if i >= n {
            let leaving = file[i - n];
            bag.remove_str(leaving);
            window_chars -= leaving.chars().count();
        }
        if i + 1 < n {
            continue;
        }
        let joined_chars = window_chars + (n - 1);
        let longer = joined_chars.max(needle_chars);
        // Integer form of `bag <= longer / 10`, with slack for the float
        // rounding in strsim's score: a superset of the windows that can pass.
        if bag.distance().saturating_mul(10) <= longer + 10 {
            candidates.push(i + 1 - n);
            cost = cost.saturating_add(joined_chars.saturating_mul(needle_chars));
            if cost > FUZZY_BUDGET_CELLS {
                return Fuzzy::None;
            }
        }
    }

    let mut best = f64::MIN;
    let mut best_start = 0;
    let mut ties = 0;
    for start in candidates {
        let window = file[start..start + n].join("\n");
        let score = strsim::normalized_levenshtein(&window, &needle);
        if score > best + 1e-12 {
            best = score;
            best_start = start;
            ties = 1;
        } else if (score - best).abs() <= 1e-12 {
            ties += 1;
        }
    }
    if best < FUZZY_THRESHOLD {
        Fuzzy::None
    } else if ties > 1 {
        Fuzzy::Tied(ties)
    } else {
        Fuzzy::Unique(best_start)
    }
}

/// Per-character count difference (window minus needle), with the totals of
/// the positive and negative parts kept up to date so the bag distance
/// `max(surplus, deficit)` is O(1) to read.
#[derive(Default)]
struct BagDiff {
    counts: HashMap<char, i64>,
    surplus: usize,
    deficit: usize,
}

impl BagDiff {
    fn add(&mut self, c: char) {
        let count = self.counts.entry(c).or_insert(0);
        if *count >= 0 {
            self.surplus += 1;
        } else {
            self.deficit -= 1;
        }
        *count += 1;
    }

    fn remove(&mut self, c: char) {
        let count = self.counts.entry(c).or_insert(0);
        if *count > 0 {
            self.surplus -= 1;
        } else {
            self.deficit += 1;
        }
        *count -= 1;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add(c));
    }

    fn remove_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.remove(c));
    }

    fn distance(&self) -> usize {
        self.surplus.max(self.deficit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(search: &str, replace: &str) -> Block {
        Block { search: search.into(), replace: replace.into() }
    }

    #[test]
    fn parses_blocks_ignoring_surrounding_noise() {
        let body =
            "\n```\n<<<<<<< SEARCH\na\n  b\n=======\nc\n>>>>>>> REPLACE\n\n<<<<<<< SEARCH\r\nd\r\n=======\r\n>>>>>>> REPLACE\r\n```\n";
        assert_eq!(parse_blocks(body), Ok(vec![block("a\n  b", "c"), block("d", "")]));
    }

    #[test]
    fn malformed_markers() {
        let cases = [
            "",
            "just prose",
            "<<<<<<< SEARCH\na\n=======\nb\n",
            "<<<<<<< SEARCH\na\n>>>>>>> REPLACE\n",
            "=======\n",
            ">>>>>>> REPLACE\n",
            "<<<<<<< SEARCH\na\n<<<<<<< SEARCH\n",
            "<<<<<<< SEARCH\na\n=======\n<<<<<<< SEARCH\n",
            "<<<<<<< SEARCH\n\n=======\nb\n>>>>>>> REPLACE\n",
            "<<<<<<< SEARH\na\n=======\nb\n>>>>>>> REPLACE\n",
        ];
        for body in cases {
            assert!(matches!(parse_blocks(body), Err(ApplyError::Malformed(_))), "{body:?}");
        }
    }

    #[test]
    fn divider_inside_replacement_is_content() {
        let body = "<<<<<<< SEARCH\nTitle\n=======\nTitle\n=======\n>>>>>>> REPLACE";
        assert_eq!(parse_blocks(body), Ok(vec![block("Title", "Title\n=======")]));
    }

    #[test]
    fn exact_match() {
        let file = "one\ntwo\nthree\n";
        assert_eq!(apply(file, &[block("two", "2")]), Ok("one\n2\nthree\n".into()));
    }

    #[test]
    fn exact_match_can_be_inside_a_line() {
        assert_eq!(apply("let x = 1;\n", &[block("x = 1", "x = 2")]), Ok("let x = 2;\n".into()));
    }

    #[test]
    fn ambiguous_exact_match() {
        let file = "a();\nb();\na();\n";
        assert_eq!(apply(file, &[block("a();", "c();")]), Err(ApplyError::Ambiguous { block: 1, count: 2 }));
        // Overlapping occurrences count too.
        assert_eq!(apply("aaa", &[block("aa", "b")]), Err(ApplyError::Ambiguous { block: 1, count: 2 }));
    }

    #[test]
    fn whitespace_insensitive_match_reindents_replacement() {
        let file = "fn main() {\n    if x {\n        go();\n    }\n}\n";
        let blocks = [block("if x {\n    go();\n}", "if y {\n    stop();\n}")];
        assert_eq!(apply(file, &blocks), Ok("fn main() {\n    if y {\n        stop();\n    }\n}\n".into()));
    }

    #[test]
    fn whitespace_insensitive_ambiguous() {
        let file = "  a\n  b\nx\n\ta\n\tb\n";
        assert_eq!(apply(file, &[block("a\nb", "c")]), Err(ApplyError::Ambiguous { block: 1, count: 2 }));
    }

    #[test]
    fn fuzzy_match_with_a_typo() {
        let file = "import React from 'react';\n\nexport function Button() {\n  const [count, setCount] = useState(0);\n  return (\n    <button onClick={() => setCount(count + 1)}>\n      Clicked {count} times\n    </button>\n  );\n}\n";
        // "setCuont" and no other difference.
        let search = "  const [count, setCount] = useState(0);\n  return (\n    <button onClick={() => setCuont(count + 1)}>\n      Clicked {count} times\n    </button>";
        let replace = "  const [count, setCount] = useState(0);\n  return (\n    <button onClick={() => setCount(count + 2)}>\n      Clicked {count} times\n    </button>";
        let out = apply(file, &[block(search, replace)]);
        assert_eq!(out, Ok(file.replace("count + 1", "count + 2")));
    }

    #[test]
    fn not_found() {
        let file = "alpha\nbeta\ngamma\n";
        assert_eq!(apply(file, &[block("delta\nepsilon", "x")]), Err(ApplyError::NotFound { block: 1 }));
        assert_eq!(apply("", &[block("x", "y")]), Err(ApplyError::NotFound { block: 1 }));
    }

    #[test]
    fn multiple_blocks_apply_in_order() {
        let file = "a\nb\nc\n";
        // The second block only matches after the first has been applied.
        let blocks = [block("a", "x"), block("x\nb", "y"), block("c", "z")];
        assert_eq!(apply(file, &blocks), Ok("y\nz\n".into()));
        // A failure reports which block failed.
        let blocks = [block("a", "x"), block("nope", "y")];
        assert_eq!(apply(file, &blocks), Err(ApplyError::NotFound { block: 2 }));
    }

    #[test]
    fn empty_replacement_deletes_lines() {
        assert_eq!(apply("a\nb\nc\n", &[block("b", "")]), Ok("a\nc\n".into()));
        assert_eq!(apply("a\n  b\nc\n", &[block("b ", "")]), Ok("a\nc\n".into()));
    }

    #[test]
    fn crlf_files_keep_line_endings() {
        let file = "a\r\nb\r\nc\r\n";
        assert_eq!(apply(file, &[block("a\nb", "x\ny")]), Ok("x\r\ny\r\nc\r\n".into()));
        assert_eq!(apply(file, &[block(" b ", "q")]), Ok("a\r\nq\r\nc\r\n".into()));
    }

    #[test]
    fn last_line_without_newline() {
        assert_eq!(apply("a\n  b", &[block("b", "c\nd")]), Ok("a\n  c\nd".into()));
        // Trailing space defeats the exact match, so the line match re-indents.
        assert_eq!(apply("a\n    b", &[block("  b ", "  c\n  d")]), Ok("a\n    c\n    d".into()));
    }

    #[test]
    fn fuzzy_search_is_bounded() {
        // 20k nearly identical lines against a 200-line search: the length
        // filter keeps almost every window, so the budget must kick in.
        let file: String = (0..20_000).map(|i| format!("line number {:05} with some padding text\n", i)).collect();
        let search: String = (0..200).map(|i| format!("lime number {:05} with some padding text", i * 7)).collect::<Vec<_>>().join("\n");
        let started = std::time::Instant::now();
        assert_eq!(apply(&file, &[block(&search, "x")]), Err(ApplyError::NotFound { block: 1 }));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn fuzzy_search_with_many_similar_windows_is_bounded() {
        let file = "const value = compute(1, 2, 3);\n".repeat(50_000);
        let search = "const valeu = compute(1, 2, 3);\n".repeat(5);
        let started = std::time::Instant::now();
        // Every window scores the same, so this is either a tie or, once the
        // budget runs out, not found; either way it must be quick.
        let result = apply(&file, &[block(search.trim_end(), "x")]);
        assert!(matches!(result, Err(ApplyError::NotFound { .. } | ApplyError::Ambiguous { .. })), "{result:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn fuzzy_tie_is_ambiguous() {
        let file = "first line here\nsecond line here\nmiddle\nfirst line here\nsecond line here\n";
        assert_eq!(apply(file, &[block("first line hare\nsecond line here", "x")]), Err(ApplyError::Ambiguous { block: 1, count: 2 }));
    }

    #[test]
    fn repetitive_files_stay_linear() {
        let file = "a\n".repeat(200_000);
        let started = std::time::Instant::now();
        assert_eq!(apply(&file, &[block(&"a\n".repeat(500), "b")]), Err(ApplyError::Ambiguous { block: 1, count: 400 }));
        let search = format!("{}b", " a\n".repeat(999));
        assert_eq!(apply(&file, &[block(&search, "c")]), Err(ApplyError::NotFound { block: 1 }));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn line_matches_finds_overlapping_runs() {
        assert_eq!(line_matches(&["a", "a", "a", "b", "a", "a"], &["a", "a"]), vec![0, 1, 4]);
        assert_eq!(line_matches(&["a", "b", "a", "b", "a"], &["a", "b", "a"]), vec![0, 2]);
        assert_eq!(line_matches(&["x"], &["x", "y"]), Vec::<usize>::new());
    }

    #[test]
    fn empty_search_is_rejected() {
        assert!(matches!(apply("abc", &[block("  ", "x")]), Err(ApplyError::Malformed(_))));
        assert_eq!(apply("abc", &[]), Ok("abc".into()));
    }
}
