//! Incremental parser for `<blaze-*>` action tags in streamed model output.
//!
//! The model's reply arrives in arbitrary chunks (token boundaries, network
//! frames), so the parser keeps a small buffer of input it cannot classify yet
//! and only commits to a decision once no future input could change it. That
//! rule is what makes `push` at any split points equivalent to one `parse`.
//!
//! Grammar, deliberately forgiving because the producer is a language model:
//! * An opening tag is `<blaze-NAME attrs…>` or `<think attrs…>`; `NAME` is
//!   `[a-z0-9-]+` (tag names are case-sensitive). Attribute values may be
//!   double-quoted (the documented form), single-quoted or bare. A `/>` ending
//!   makes an empty, already-closed tag.
//! * Anything that does not fit that grammar (e.g. `<div>`, `<<<`, JSX in the
//!   prose) is ordinary text. So is an opening tag longer than
//!   [`MAX_OPEN_TAG_BYTES`], which bounds how much we ever hold back.
//! * Tag content is raw: nothing inside a tag is interpreted until the matching
//!   `</NAME>` (whitespace allowed before `>`). Nested tags are therefore just
//!   content of the outer tag.
//! * `<think>` blocks are discarded entirely, blaze tags inside them included.
//! * Stray closing tags (`</blaze-write>` with nothing open) are dropped from
//!   the text: they are tag debris, not prose meant for the user.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest opening tag (from `<` to `>`) we are willing to buffer. Real tags
/// are a path plus a one-line description; anything longer is treated as text
/// so a stray `<blaze-x "` cannot make us hold back the rest of the stream.
pub const MAX_OPEN_TAG_BYTES: usize = 4096;

/// Whitespace tolerated between a closing tag's name and its `>`. Bounded so
/// that re-checking a pending closing tag on every chunk stays cheap.
const MAX_CLOSE_WS: usize = 32;

/// A completed action tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tag {
    /// Create or overwrite a file. `content` is normalised (fences and blank
    /// edge lines removed, exactly one trailing newline unless empty).
    Write {
        path: String,
        description: Option<String>,
        content: String,
    },
    Rename {
        from: String,
        to: String,
    },
    /// A file or a directory.
    Delete {
        path: String,
    },
    /// `body` is the raw tag content; see [`crate::search_replace::parse_blocks`].
    SearchReplace {
        path: String,
        description: Option<String>,
        body: String,
    },
    AddDependency {
        packages: Vec<String>,
    },
    ChatSummary {
        title: String,
    },
    Command {
        kind: String,
    },
}

/// A blaze tag whose opening tag has been seen but whose closing tag has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTag {
    /// Full tag name, e.g. `blaze-write`.
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    /// Raw content received so far (no normalisation applied).
    pub partial_content: String,
}

/// Everything learned from a complete stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// All completed action tags, in stream order.
    pub tags: Vec<Tag>,
    /// The tag the stream ended inside, if any (e.g. a cut-off `<blaze-write>`).
    pub unclosed: Option<OpenTag>,
    /// Markdown outside of tags, with think blocks removed.
    pub text: String,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Text,
    /// Inside `<think>`: input is discarded until `</think>`.
    Think,
    /// Inside a blaze tag: input accumulates into `partial_content`.
    Tag(OpenTag),
}

/// Streaming parser. Feed chunks with [`Parser::push`], end with [`Parser::finish`].
#[derive(Debug, Default)]
pub struct Parser {
    /// Input received but not yet classified. Only ever holds a possible
    /// opening or closing tag prefix, so it stays small.
    pending: String,
    state: State,
    text: String,
    tags: Vec<Tag>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next chunk of streamed text; returns the tags completed by this chunk, in order.
    pub fn push(&mut self, chunk: &str) -> Vec<Tag> {
        let before = self.tags.len();
        self.pending.push_str(chunk);
        self.advance(false);
        self.tags.get(before..).map(<[Tag]>::to_vec).unwrap_or_default()
    }

    /// The blaze tag currently open (streaming inside it), if any.
    ///
    /// This clones the content received so far; callers polling it on every
    /// chunk of a large file may prefer [`Parser::open_tag_ref`].
    pub fn open_tag(&self) -> Option<OpenTag> {
        self.open_tag_ref().cloned()
    }

    /// Borrowing variant of [`Parser::open_tag`].
    pub fn open_tag_ref(&self) -> Option<&OpenTag> {
        match &self.state {
            State::Tag(open) => Some(open),
            State::Text | State::Think => None,
        }
    }

    /// Tags completed so far (including those already returned by `push`).
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// End of stream: everything completed, the unclosed tag if any (e.g. a cut-off <blaze-write>), and the markdown text outside tags (with think blocks removed).
    pub fn finish(mut self) -> Parsed {
        self.advance(true);
        // `advance(true)` resolves every ambiguity, so `pending` is normally
        // empty here; flushing it anyway keeps `finish` total if that ever
        // stops being true.
        let rest = std::mem::take(&mut self.pending);
        let unclosed = match self.state {
            State::Text => {
                self.text.push_str(&rest);
                None
            }
            State::Think => None,
            State::Tag(mut open) => {
                open.partial_content.push_str(&rest);
                Some(open)
            }
        };
        Parsed { tags: self.tags, unclosed, text: self.text }
    }

    /// Consume as much of `pending` as can be decided. With `eof` set, every
    /// undecided prefix is resolved as if no more input will come.
    fn advance(&mut self, eof: bool) {
        let buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        while let Some(rest) = buf.get(pos..) {
            if rest.is_empty() {
                break;
            }
            match self.step(rest, eof) {
                Step::Consumed(n) => pos += n.max(1).min(rest.len()),
                Step::Wait => break,
            }
        }
        self.pending = buf.get(pos..).unwrap_or_default().to_owned();
    }

    /// One decision on a non-empty `rest`. Every `Consumed(n)` has `n > 0` so
    /// the loop in `advance` always makes progress.
    fn step(&mut self, rest: &str, eof: bool) -> Step {
        match &mut self.state {
            State::Text => self.step_text(rest, eof),
            State::Think => match find_close(rest, "think", eof) {
                Close::Found { end, .. } => {
                    self.state = State::Text;
                    Step::Consumed(end)
                }
                Close::Partial { start } if start > 0 => Step::Consumed(start),
                Close::Partial { .. } => Step::Wait,
                Close::Absent => Step::Consumed(rest.len()),
            },
            State::Tag(open) => match find_close(rest, &open.name, eof) {
                Close::Found { start, end } => {
                    open.partial_content.push_str(&rest[..start]);
                    let done = std::mem::take(&mut self.state);
                    if let State::Tag(open) = done
                        && let Some(tag) = complete_tag(open)
                    {
                        self.tags.push(tag);
                    }
                    Step::Consumed(end)
                }
                Close::Partial { start } if start > 0 => {
                    open.partial_content.push_str(&rest[..start]);
                    Step::Consumed(start)
                }
                Close::Partial { .. } => Step::Wait,
                Close::Absent => {
                    open.partial_content.push_str(rest);
                    Step::Consumed(rest.len())
                }
            },
        }
    }

    fn step_text(&mut self, rest: &str, eof: bool) -> Step {
        match rest.find('<') {
            None => {
                self.text.push_str(rest);
                Step::Consumed(rest.len())
            }
            Some(i) if i > 0 => {
                self.text.push_str(&rest[..i]);
                Step::Consumed(i)
            }
            Some(_) => match scan_markup(rest, eof) {
                Markup::Wait => Step::Wait,
                Markup::Literal => {
                    self.text.push('<');
                    Step::Consumed(1)
                }
                Markup::StrayClose { len } => Step::Consumed(len),
                Markup::Open { name, attrs, len, self_closing } => {
                    if name == "think" {
                        if !self_closing {
                            self.state = State::Think;
                        }
                    } else {
                        let open = OpenTag { name, attrs, partial_content: String::new() };
                        if self_closing {
                            if let Some(tag) = complete_tag(open) {
                                self.tags.push(tag);
                            }
                        } else {
                            self.state = State::Tag(open);
                        }
                    }
                    Step::Consumed(len)
                }
                Markup::Truncated { name, attrs } => {
                    // Only produced at end of input: the stream stopped inside
                    // an opening tag. Report it like any other unclosed tag.
                    self.state =
                        if name == "think" { State::Think } else { State::Tag(OpenTag { name, attrs, partial_content: String::new() }) };
                    Step::Consumed(rest.len())
                }
            },
        }
    }
}

/// Parse a complete reply in one go. Identical to one `push` plus `finish`.
pub fn parse(text: &str) -> Parsed {
    let mut parser = Parser::new();
    parser.push(text);
    parser.finish()
}

enum Step {
    Consumed(usize),
    Wait,
}

/// What a `<` in text position turned out to be.
#[derive(Debug)]
enum Markup {
    /// Not enough input yet to tell.
    Wait,
    /// Just a `<` character.
    Literal,
    /// A closing tag with nothing open; dropped.
    StrayClose {
        len: usize,
    },
    Open {
        name: String,
        attrs: BTreeMap<String, String>,
        len: usize,
        self_closing: bool,
    },
    /// End of input inside an opening tag (only when `eof`).
    Truncated {
        name: String,
        attrs: BTreeMap<String, String>,
    },
}

/// Result of looking for a known tag name right after `<` or `</`.
enum NameMatch {
    /// Name spans up to (excluding) this byte offset.
    Found(usize),
    /// Input ended while the name could still become valid.
    Incomplete,
    No,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// Match `think` or `blaze-[a-z0-9-]+` starting at `start`. The byte after
/// the name is not checked here; callers decide which terminators they accept.
fn match_name(b: &[u8], start: usize) -> NameMatch {
    let tail = b.get(start..).unwrap_or_default();
    for keyword in [&b"think"[..], &b"blaze-"[..]] {
        let n = tail.len().min(keyword.len());
        if tail[..n] != keyword[..n] {
            continue;
        }
        if n < keyword.len() {
            return NameMatch::Incomplete;
        }
        // Keyword matched completely; extend over the remaining name bytes.
        let mut end = start + keyword.len();
        while end < b.len() && is_name_byte(b[end]) {
            end += 1;
        }
        if keyword == b"think" {
            return if end == start + keyword.len() { NameMatch::Found(end) } else { NameMatch::No };
        }
        if end == b.len() {
            // `<blaze-wri` may still grow into a longer name.
            return NameMatch::Incomplete;
        }
        return if end > start + keyword.len() { NameMatch::Found(end) } else { NameMatch::No };
    }
    NameMatch::No
}

/// Classify the markup starting at `s[0] == '<'` in text position.
fn scan_markup(s: &str, eof: bool) -> Markup {
    // Only the first MAX_OPEN_TAG_BYTES bytes are ever looked at: a tag that
    // does not end within them is text, whether or not the rest has arrived.
    let full = s.as_bytes();
    let b = &full[..full.len().min(MAX_OPEN_TAG_BYTES)];
    let over_limit = full.len() > MAX_OPEN_TAG_BYTES;
    // What to do when the window ends before the markup does.
    let ran_out = |truncated: Markup| {
        if over_limit {
            Markup::Literal
        } else if eof {
            truncated
        } else {
            Markup::Wait
        }
    };
    if b.len() < 2 {
        return ran_out(Markup::Literal);
    }
    if b[1] == b'/' {
        return scan_stray_close(b, &ran_out);
    }
    let name_end = match match_name(b, 1) {
        NameMatch::Found(end) => end,
        NameMatch::No => return Markup::Literal,
        NameMatch::Incomplete => {
            // At end of input `<blaze-wri` is a cut-off tag worth reporting;
            // `<bla` is too little to claim it was meant as one.
            let so_far = s.get(1..b.len()).unwrap_or_default();
            let truncated = if so_far == "think" || (so_far.starts_with("blaze-") && so_far.len() > "blaze-".len()) {
                Markup::Truncated { name: so_far.to_owned(), attrs: BTreeMap::new() }
            } else {
                Markup::Literal
            };
            return ran_out(truncated);
        }
    };
    let name = &s[1..name_end];
    match b.get(name_end) {
        Some(c) if c.is_ascii_whitespace() || *c == b'>' || *c == b'/' => {}
        Some(_) => return Markup::Literal,
        None => return ran_out(Markup::Truncated { name: name.to_owned(), attrs: BTreeMap::new() }),
    }
    let mut attrs = BTreeMap::new();
    let mut j = name_end;
    loop {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let Some(&c) = b.get(j) else {
            return ran_out(Markup::Truncated { name: name.to_owned(), attrs });
        };
        match c {
            b'>' => return Markup::Open { name: name.to_owned(), attrs, len: j + 1, self_closing: false },
            b'/' => match b.get(j + 1) {
                Some(b'>') => return Markup::Open { name: name.to_owned(), attrs, len: j + 2, self_closing: true },
                Some(_) => return Markup::Literal,
                None => return ran_out(Markup::Truncated { name: name.to_owned(), attrs }),
            },
            c if is_attr_name_byte(c) => match scan_attr(s, b, j) {
                AttrScan::Done { key, value, next } => {
                    // First occurrence wins: a repeated attribute is more
                    // likely a model glitch than an intentional override.
                    attrs.entry(key).or_insert(value);
                    j = next;
                }
                AttrScan::RanOut => return ran_out(Markup::Truncated { name: name.to_owned(), attrs }),
                AttrScan::Invalid => return Markup::Literal,
            },
            _ => return Markup::Literal,
        }
    }
}

/// `</think>` or `</blaze-x>` in text position, i.e. with no tag open.
fn scan_stray_close(b: &[u8], ran_out: &dyn Fn(Markup) -> Markup) -> Markup {
    let name_end = match match_name(b, 2) {
        NameMatch::Found(end) => end,
        NameMatch::No => return Markup::Literal,
        NameMatch::Incomplete => return ran_out(Markup::Literal),
    };
    let mut j = name_end;
    while j < b.len() && b[j].is_ascii_whitespace() && j - name_end < MAX_CLOSE_WS {
        j += 1;
    }
    match b.get(j) {
        Some(b'>') => Markup::StrayClose { len: j + 1 },
        Some(_) => Markup::Literal,
        None => ran_out(Markup::Literal),
    }
}

enum AttrScan {
    Done { key: String, value: String, next: usize },
    RanOut,
    Invalid,
}

fn is_attr_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.')
}

/// Bytes allowed in an unquoted attribute value. Non-ASCII is allowed, and all
/// delimiters are ASCII, so slicing at a delimiter is always a char boundary.
fn is_bare_value_byte(b: u8) -> bool {
    !b.is_ascii_whitespace() && !matches!(b, b'"' | b'\'' | b'=' | b'<' | b'>' | b'`')
}

/// Scan one `name[=value]` attribute starting at `b[start]`. `b` is a prefix
/// window of `s`'s bytes; running off its end means "need more input".
fn scan_attr(s: &str, b: &[u8], start: usize) -> AttrScan {
    let mut j = start;
    while j < b.len() && is_attr_name_byte(b[j]) {
        j += 1;
    }
    if j == b.len() {
        return AttrScan::RanOut;
    }
    let key = s[start..j].to_owned();
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    match b.get(j) {
        None => return AttrScan::RanOut,
        // A bare attribute (`<blaze-x flag>`): value-less, recorded as empty.
        Some(&c) if c != b'=' => return AttrScan::Done { key, value: String::new(), next: j },
        Some(_) => j += 1,
    }
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    let Some(&c) = b.get(j) else {
        return AttrScan::RanOut;
    };
    match c {
        b'"' | b'\'' => {
            let open = j + 1;
            match b.get(open..).and_then(|tail| tail.iter().position(|&x| x == c)) {
                Some(len) => {
                    let close = open + len;
                    AttrScan::Done { key, value: unescape_xml(&s[open..close]), next: close + 1 }
                }
                None => AttrScan::RanOut,
            }
        }
        c if is_bare_value_byte(c) => {
            let open = j;
            while j < b.len() && is_bare_value_byte(b[j]) {
                j += 1;
            }
            if j == b.len() {
                return AttrScan::RanOut;
            }
            AttrScan::Done { key, value: unescape_xml(&s[open..j]), next: j }
        }
        _ => AttrScan::Invalid,
    }
}

/// Decode the handful of XML entities the model is told to use in attribute
/// values. Single left-to-right pass, so `&amp;lt;` becomes `&lt;` (not `<`);
/// unknown entities are kept verbatim rather than guessed at.
pub fn unescape_xml(value: &str) -> String {
    const ENTITIES: [(&str, char); 6] = [("&quot;", '"'), ("&#39;", '\''), ("&apos;", '\''), ("&lt;", '<'), ("&gt;", '>'), ("&amp;", '&')];
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match ENTITIES.iter().find(|(entity, _)| tail.starts_with(entity)) {
            Some((entity, ch)) => {
                out.push(*ch);
                rest = &tail[entity.len()..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

enum Close {
    Found {
        start: usize,
        end: usize,
    },
    /// A possible closing tag starts at `start` but the input ends before it
    /// can be confirmed or ruled out.
    Partial {
        start: usize,
    },
    Absent,
}

/// Find `</name>` (optionally `</name   >`) in `hay`.
fn find_close(hay: &str, name: &str, eof: bool) -> Close {
    let b = hay.as_bytes();
    let n = name.as_bytes();
    let mut from = 0;
    while let Some(off) = b.get(from..).and_then(|tail| tail.iter().position(|&x| x == b'<')) {
        let at = from + off;
        match match_close(&b[at..], n) {
            CloseMatch::Yes(len) => return Close::Found { start: at, end: at + len },
            // Running out of input means there is no later `<` either.
            CloseMatch::Incomplete if eof => return Close::Absent,
            CloseMatch::Incomplete => return Close::Partial { start: at },
            CloseMatch::No => from = at + 1,
        }
    }
    Close::Absent
}

enum CloseMatch {
    Yes(usize),
    Incomplete,
    No,
}

fn match_close(s: &[u8], name: &[u8]) -> CloseMatch {
    let expected = [&b"</"[..], name];
    let mut j = 0;
    for part in expected {
        for &want in part {
            match s.get(j) {
                None => return CloseMatch::Incomplete,
                Some(&got) if got != want => return CloseMatch::No,
                Some(_) => j += 1,
            }
        }
    }
    let name_end = j;
    loop {
        match s.get(j) {
            None => return CloseMatch::Incomplete,
            Some(b'>') => return CloseMatch::Yes(j + 1),
            Some(c) if c.is_ascii_whitespace() && j - name_end < MAX_CLOSE_WS => j += 1,
            Some(_) => return CloseMatch::No,
        }
    }
}

/// Turn a closed blaze tag into an action. Display-only and unknown tags
/// yield `None`. Missing required attributes become empty strings on purpose:
/// the plan then reports a path/command violation the model can react to,
/// instead of the action silently vanishing.
fn complete_tag(open: OpenTag) -> Option<Tag> {
    let OpenTag { name, mut attrs, partial_content: content } = open;
    let mut take = |key: &str| attrs.remove(key);
    let tag = match name.as_str() {
        "blaze-write" => Tag::Write {
            path: take("path").unwrap_or_default(),
            description: take("description"),
            content: normalize_file_content(&content),
        },
        "blaze-rename" => Tag::Rename { from: take("from").unwrap_or_default(), to: take("to").unwrap_or_default() },
        "blaze-delete" => Tag::Delete { path: take("path").unwrap_or_default() },
        "blaze-search-replace" => {
            Tag::SearchReplace { path: take("path").unwrap_or_default(), description: take("description"), body: content }
        }
        "blaze-add-dependency" => {
            // The documented form is the attribute; listing packages as the
            // content is a common model variation and just as unambiguous.
            let list = take("packages").unwrap_or(content);
            Tag::AddDependency { packages: list.split_whitespace().map(str::to_owned).collect() }
        }
        "blaze-chat-summary" => Tag::ChatSummary { title: content.trim().to_owned() },
        "blaze-command" => Tag::Command { kind: take("type").unwrap_or_default().trim().to_owned() },
        _ => return None,
    };
    Some(tag)
}

/// Normalise `<blaze-write>` content into file text.
///
/// Models often wrap the file in a markdown fence and pad it with blank
/// lines. We drop blank edge lines, then an opening fence line and (only if
/// an opening fence was dropped) a closing one. Pairing the two keeps a
/// markdown file that legitimately ends with a code block intact. The result
/// ends with exactly one newline, or is empty.
pub fn normalize_file_content(raw: &str) -> String {
    let mut lines: Vec<&str> = raw.split('\n').collect();
    trim_blank_edges(&mut lines);
    if lines.first().is_some_and(|l| is_opening_fence(l)) {
        lines.remove(0);
        if lines.last().is_some_and(|l| l.trim() == "```") {
            lines.pop();
        }
        trim_blank_edges(&mut lines);
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn trim_blank_edges(lines: &mut Vec<&str>) {
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let leading = lines.iter().take_while(|l| l.trim().is_empty()).count();
    lines.drain(..leading);
}

/// "```" optionally followed by an info string such as `tsx`.
fn is_opening_fence(line: &str) -> bool {
    line.trim().strip_prefix("```").is_some_and(|info| !info.contains('`'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &str, content: &str) -> Tag {
        Tag::Write { path: path.into(), description: None, content: content.into() }
    }

    #[test]
    fn every_tag_kind() {
        let doc = concat!(
            "Intro.\n",
            "<blaze-write path=\"src/a.tsx\" description=\"Add A\">export const a = 1;</blaze-write>\n",
            "<blaze-rename from=\"old.ts\" to=\"new.ts\"></blaze-rename>\n",
            "<blaze-delete path=\"gone.ts\"></blaze-delete>\n",
            "<blaze-search-replace path=\"src/b.ts\" description=\"fix\">\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n</blaze-search-replace>\n",
            "<blaze-add-dependency packages=\"react-icons zod@3.23.8\"></blaze-add-dependency>\n",
            "<blaze-chat-summary>  Add the A component </blaze-chat-summary>\n",
            "<blaze-command type=\"rebuild\"></blaze-command>\n",
            "Outro.",
        );
        let parsed = parse(doc);
        assert_eq!(
            parsed.tags,
            vec![
                Tag::Write { path: "src/a.tsx".into(), description: Some("Add A".into()), content: "export const a = 1;\n".into() },
                Tag::Rename { from: "old.ts".into(), to: "new.ts".into() },
                Tag::Delete { path: "gone.ts".into() },
                Tag::SearchReplace {
                    path: "src/b.ts".into(),
                    description: Some("fix".into()),
                    body: "\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n".into(),
                },
                Tag::AddDependency { packages: vec!["react-icons".into(), "zod@3.23.8".into()] },
                Tag::ChatSummary { title: "Add the A component".into() },
                Tag::Command { kind: "rebuild".into() },
            ]
        );
        assert_eq!(parsed.unclosed, None);
        assert_eq!(parsed.text, "Intro.\n\n\n\n\n\n\n\nOutro.");
    }

    #[test]
    fn attributes_escapes_order_and_spacing() {
        let doc = "<blaze-write   description = \"say &quot;hi&quot; &amp; &lt;b&gt; it&#39;s &apos;x&apos; &amp;lt;\"\n\tpath=\"a &amp; b.ts\"  >x</blaze-write >";
        let parsed = parse(doc);
        assert_eq!(
            parsed.tags,
            vec![Tag::Write { path: "a & b.ts".into(), description: Some("say \"hi\" & <b> it's 'x' &lt;".into()), content: "x\n".into() }]
        );
        assert_eq!(parsed.text, "");
    }

    #[test]
    fn raw_angle_bracket_inside_quoted_attribute() {
        let parsed = parse("<blaze-write path=\"a.ts\" description=\"a -> b\">x</blaze-write>");
        assert_eq!(parsed.tags, vec![Tag::Write { path: "a.ts".into(), description: Some("a -> b".into()), content: "x\n".into() }]);
    }

    #[test]
    fn lenient_attribute_forms() {
        let parsed = parse("<blaze-rename from='a.ts' to=b.ts></blaze-rename><blaze-delete path=\"c\" />");
        assert_eq!(parsed.tags, vec![Tag::Rename { from: "a.ts".into(), to: "b.ts".into() }, Tag::Delete { path: "c".into() }]);
    }

    #[test]
    fn unquoted_path_is_accepted() {
        let parsed = parse("<blaze-write path=unquoted>body</blaze-write>");
        assert_eq!(parsed.tags, vec![write("unquoted", "body\n")]);
        assert_eq!(parsed.text, "");
    }

    #[test]
    fn fences_and_blank_edges_are_dropped() {
        let doc = "<blaze-write path=\"a.tsx\">\n\n```tsx\nconst a = 1;\n\nconst b = 2;\n```\n\n</blaze-write>";
        assert_eq!(parse(doc).tags, vec![write("a.tsx", "const a = 1;\n\nconst b = 2;\n")]);
        let bare = "<blaze-write path=\"a.ts\">\n```\nx\n```</blaze-write>";
        assert_eq!(parse(bare).tags, vec![write("a.ts", "x\n")]);
    }

    #[test]
    fn content_normalisation_edge_cases() {
        assert_eq!(normalize_file_content(""), "");
        assert_eq!(normalize_file_content("\n \n\t\n"), "");
        assert_eq!(normalize_file_content("```ts\n```"), "");
        assert_eq!(normalize_file_content("x\n\n\n"), "x\n");
        assert_eq!(normalize_file_content("  indented\n"), "  indented\n");
        // A markdown file ending in a code block keeps its closing fence.
        assert_eq!(normalize_file_content("# T\n```sh\nls\n```\n"), "# T\n```sh\nls\n```\n");
        // Only an opening fence (model forgot to close it).
        assert_eq!(normalize_file_content("```js\nx\n"), "x\n");
        // CRLF content keeps its line endings.
        assert_eq!(normalize_file_content("\r\n```ts\r\na\r\nb\r\n```\r\n"), "a\r\nb\r\n");
    }

    #[test]
    fn think_blocks_are_ignored() {
        let doc = "A<think>plan: <blaze-write path=\"x\">no</blaze-write></think>B<blaze-delete path=\"y\"></blaze-delete>C";
        let parsed = parse(doc);
        assert_eq!(parsed.tags, vec![Tag::Delete { path: "y".into() }]);
        assert_eq!(parsed.text, "ABC");
        let unclosed = parse("before<think>still thinking <blaze-delete path=\"z\"></blaze-delete>");
        assert_eq!(unclosed.tags, vec![]);
        assert_eq!(unclosed.unclosed, None);
        assert_eq!(unclosed.text, "before");
    }

    #[test]
    fn display_only_and_unknown_tags_are_not_actions() {
        let doc = concat!(
            "<blaze-output type=\"error\" message=\"m\">details</blaze-output>",
            "<blaze-status title=\"t\">s</blaze-status>",
            "<blaze-problem-report summary=\"1\"><problem file=\"a\"/></blaze-problem-report>",
            "<blaze-foo bar=\"1\">baz</blaze-foo>",
            "<blaze-write path=\"ok\">ok</blaze-write>",
        );
        let parsed = parse(doc);
        assert_eq!(parsed.tags, vec![write("ok", "ok\n")]);
        assert_eq!(parsed.text, "");
    }

    #[test]
    fn unclosed_write_reports_partial_content() {
        let mut parser = Parser::new();
        assert!(parser.push("Here:\n<blaze-write path=\"src/App.tsx\" description=\"d\">\nimport").is_empty());
        let open = parser.open_tag().expect("inside the write");
        assert_eq!(open.name, "blaze-write");
        assert_eq!(open.attrs.get("path").map(String::as_str), Some("src/App.tsx"));
        assert_eq!(open.partial_content, "\nimport");
        // A possible closing tag is held back, not shown as content yet.
        parser.push(" React</blaze-wr");
        assert_eq!(parser.open_tag().map(|o| o.partial_content), Some("\nimport React".into()));
        let parsed = parser.finish();
        assert_eq!(parsed.tags, vec![]);
        assert_eq!(parsed.text, "Here:\n");
        let unclosed = parsed.unclosed.expect("cut off");
        assert_eq!(unclosed.partial_content, "\nimport React</blaze-wr");
    }

    #[test]
    fn push_returns_tags_as_they_complete() {
        let mut parser = Parser::new();
        assert!(parser.push("<blaze-delete path=\"a\"></blaze-del").is_empty());
        assert_eq!(
            parser.push("ete>x<blaze-delete path=\"b\"/>"),
            vec![Tag::Delete { path: "a".into() }, Tag::Delete { path: "b".into() }]
        );
        assert_eq!(parser.open_tag(), None);
        assert_eq!(parser.tags().len(), 2);
        let parsed = parser.finish();
        assert_eq!(parsed.tags.len(), 2);
        assert_eq!(parsed.text, "x");
    }

    #[test]
    fn garbage_does_not_panic_and_degrades_to_text() {
        let cases: &[(&str, &str)] = &[
            ("a <<< b", "a <<< b"),
            ("</blaze-write> after", " after"),
            ("x </think > y", "x  y"),
            ("a < b > c", "a < b > c"),
            ("<div class=\"x\">html</div>", "<div class=\"x\">html</div>"),
            ("<Blaze-write path=\"a\">x</Blaze-write>", "<Blaze-write path=\"a\">x</Blaze-write>"),
            ("<blaze->x", "<blaze->x"),
            ("<blaze-write path=\"a\" =\"b\">x", "<blaze-write path=\"a\" =\"b\">x"),
            ("<blaze-writeX>y", "<blaze-writeX>y"),
            ("<thinking>t</thinking>", "<thinking>t</thinking>"),
            ("<", "<"),
            ("<bla", "<bla"),
            ("</blaze-wr", "</blaze-wr"),
            ("<blaze-", "<blaze-"),
        ];
        for (input, text) in cases {
            let parsed = parse(input);
            assert_eq!(parsed.tags, vec![], "{input}");
            assert_eq!(parsed.unclosed, None, "{input}");
            assert_eq!(&parsed.text, text, "{input}");
        }
    }

    #[test]
    fn opening_tag_cut_off_at_end_of_input() {
        let parsed = parse("text <blaze-write");
        assert_eq!(parsed.text, "text ");
        let open = parsed.unclosed.expect("reported");
        assert_eq!(open.name, "blaze-write");
        assert!(open.attrs.is_empty());

        let parsed = parse("<blaze-write path=\"a.ts\" description=\"half");
        let open = parsed.unclosed.expect("reported");
        assert_eq!(open.attrs.get("path").map(String::as_str), Some("a.ts"));
        assert_eq!(open.attrs.get("description"), None);
        assert_eq!(parsed.text, "");
    }

    #[test]
    fn nested_and_overlapping_tags() {
        // Tag content is raw, so an inner opening tag is just content of the
        // outer one and the first matching close ends the outer tag.
        let parsed = parse("<blaze-write path=\"a\">one<blaze-write path=\"b\">two</blaze-write>three</blaze-write>");
        assert_eq!(parsed.tags, vec![write("a", "one<blaze-write path=\"b\">two\n")]);
        assert_eq!(parsed.text, "three");

        let parsed = parse("<blaze-write path=\"a\">x<blaze-delete path=\"b\"></blaze-write></blaze-delete>");
        assert_eq!(parsed.tags, vec![write("a", "x<blaze-delete path=\"b\">\n")]);
        assert_eq!(parsed.text, "");
    }

    #[test]
    fn overlong_opening_tag_is_text() {
        let doc = format!("<blaze-write path=\"{}\">x</blaze-write>", "a".repeat(MAX_OPEN_TAG_BYTES));
        let parsed = parse(&doc);
        assert_eq!(parsed.tags, vec![]);
        assert_eq!(parsed.unclosed, None);
        assert_eq!(parsed.text, doc.replace("</blaze-write>", ""));
    }

    #[test]
    fn missing_attributes_become_empty() {
        let parsed = parse("<blaze-write>x</blaze-write><blaze-command></blaze-command><blaze-add-dependency>a b</blaze-add-dependency>");
        assert_eq!(
            parsed.tags,
            vec![write("", "x\n"), Tag::Command { kind: String::new() }, Tag::AddDependency { packages: vec!["a".into(), "b".into()] },]
        );
    }

    #[test]
    fn duplicate_attribute_first_wins() {
        let parsed = parse("<blaze-delete path=\"a\" path=\"b\"></blaze-delete>");
        assert_eq!(parsed.tags, vec![Tag::Delete { path: "a".into() }]);
    }

    #[test]
    fn unicode_content_and_attributes() {
        let parsed = parse("héllo <blaze-write path=\"ü/ß.ts\" description=\"日本\">const s = \"✓ <ok>\";</blaze-write> 🎉");
        assert_eq!(
            parsed.tags,
            vec![Tag::Write { path: "ü/ß.ts".into(), description: Some("日本".into()), content: "const s = \"✓ <ok>\";\n".into() }]
        );
        assert_eq!(parsed.text, "héllo  🎉");
    }

    #[test]
    fn tags_round_trip_through_serde() {
        let tags = parse(concat!(
            "<blaze-write path=\"a\" description=\"d\">x</blaze-write><blaze-rename from=\"a\" to=\"b\"/>",
            "<blaze-search-replace path=\"s\">body</blaze-search-replace><blaze-add-dependency packages=\"p q\"/>",
        ))
        .tags;
        let json = serde_json::to_string(&tags).expect("serialise");
        let back: Vec<Tag> = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, tags);
        assert_eq!(back.len(), 4);
    }

    #[test]
    fn unescape_is_single_pass() {
        assert_eq!(unescape_xml("&amp;quot; &unknown; & &lt"), "&quot; &unknown; & &lt");
    }
}
