//! Small text helpers for rendering model output and feeding errors back to
//! the model in the tag dialect.

/// Remove <think>…</think> blocks (and an unclosed trailing <think>…).
///
/// Unlike [`crate::parser`], this leaves every other tag in place; it is for
/// showing or storing a reply without the model's private reasoning.
pub fn strip_think(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = find_think_open(rest) {
        out.push_str(&rest[..open]);
        let after_open = &rest[open..];
        // The opening tag may carry attributes; it ends at the next '>'.
        let Some(gt) = after_open.find('>') else {
            return out;
        };
        let body = &after_open[gt + 1..];
        match find_think_close(body) {
            Some(end) => rest = &body[end..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Offset of `<think` followed by `>` or whitespace (so `<thinking>` stays).
fn find_think_open(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = s.get(from..).and_then(|tail| tail.find("<think")) {
        let at = from + off;
        let next = s.as_bytes().get(at + "<think".len());
        if next.is_none_or(|b| *b == b'>' || b.is_ascii_whitespace()) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Offset just past `</think>` (whitespace allowed before `>`).
fn find_think_close(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = s.get(from..).and_then(|tail| tail.find("</think")) {
        let at = from + off;
        let after = &s[at + "</think".len()..];
        let ws = after.len() - after.trim_start().len();
        if after[ws..].starts_with('>') {
            return Some(at + "</think".len() + ws + 1);
        }
        from = at + 1;
    }
    None
}

/// Escape for a double- or single-quoted XML attribute value.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escape text placed between tags, so content such as a path containing
/// `</blaze-output>` cannot end the element early.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::unescape_xml;

    #[test]
    fn strips_think_blocks() {
        assert_eq!(strip_think("a<think>x</think>b<think id=\"2\">y</think >c"), "abc");
        assert_eq!(strip_think("a<think>never closed <blaze-write path=\"x\">"), "a");
        assert_eq!(strip_think("a<think"), "a");
        assert_eq!(strip_think("<thinking>kept</thinking>"), "<thinking>kept</thinking>");
        assert_eq!(strip_think("a</think>b"), "a</think>b");
        assert_eq!(strip_think("<think>a</thinker>b</think>c"), "c");
        assert_eq!(strip_think("<blaze-write path=\"a\">x</blaze-write>"), "<blaze-write path=\"a\">x</blaze-write>");
    }

    #[test]
    fn escape_attr_round_trips_through_the_parser_unescape() {
        let raw = "a&b<c>d\"e'f &amp;";
        assert_eq!(escape_attr(raw), "a&amp;b&lt;c&gt;d&quot;e&#39;f &amp;amp;");
        assert_eq!(unescape_xml(&escape_attr(raw)), raw);
        assert_eq!(escape_text("</x> & y"), "&lt;/x&gt; &amp; y");
    }
}
