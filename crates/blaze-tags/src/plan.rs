//! From the tags of one turn to a validated change plan (the input for one
//! git commit).
//!
//! Actions are applied to an in-memory view of the project in a fixed order —
//! deletes, renames, search-replaces, writes, then dependencies — regardless
//! of the order the model emitted them. A fixed order makes the outcome easy
//! to explain to the model ("search-replace sees the file after renames") and
//! means a late delete can never undo an earlier write.
//!
//! An invalid action is skipped and recorded as a [`Violation`]; the rest of
//! the turn still applies, because throwing away ten good edits over one bad
//! path is worse for the user than a partial, clearly-reported result.
//!
//! To turn a plan into a commit, apply `deletes`, then `renames`, then set
//! every entry of `writes` (which already holds final contents).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::guard::{self, Guardrails};
use crate::parser::Tag;
use crate::render::{escape_attr, escape_text};
use crate::search_replace;

/// Longest chat title kept, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Summary shown when the model gave no description for a write.
pub const NO_SUMMARY: &str = "(no change summary found)";

/// An action that was refused. `kind` is one of `path`, `size`, `package`,
/// `command`, `search_replace`, `missing_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub kind: String,
    pub message: String,
}

/// One line of the change proposal shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChangeSummary {
    /// Basename of `path`.
    pub name: String,
    pub path: String,
    pub summary: String,
    /// `write`, `rename` or `delete` (search-replace counts as `write`).
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Files or directories to remove, in application order.
    pub deletes: Vec<String>,
    /// `(from, to)` pairs of files or directories, in application order.
    pub renames: Vec<(String, String)>,
    /// Final content of every written or search-replaced file (after renames), path → text.
    pub writes: BTreeMap<String, String>,
    pub packages: Vec<String>,
    pub commands: Vec<String>,
    pub title: Option<String>,
    pub violations: Vec<Violation>,
    /// Applied file actions in the order the model emitted them.
    pub file_changes: Vec<FileChangeSummary>,
}

impl Plan {
    /// True when the turn changes neither files nor dependencies.
    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.renames.is_empty() && self.writes.is_empty() && self.packages.is_empty()
    }

    /// Every path the plan touches (both sides of renames), sorted and deduplicated.
    pub fn changed_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .deletes
            .iter()
            .cloned()
            .chain(self.renames.iter().flat_map(|(from, to)| [from.clone(), to.clone()]))
            .chain(self.writes.keys().cloned())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// One `<blaze-output type="error" message="...">detail</blaze-output>`
    /// per violation, joined by `\n`; empty when there are none. The detail
    /// tells the model how to fix that kind of problem on its next turn.
    pub fn error_output(&self) -> String {
        self.violations
            .iter()
            .map(|v| {
                format!(
                    "<blaze-output type=\"error\" message=\"{}\">{}</blaze-output>",
                    escape_attr(&v.message),
                    escape_text(hint(&v.kind))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn hint(kind: &str) -> &'static str {
    match kind {
        "path" => "Use a relative path inside the project, with forward slashes, outside .git and node_modules.",
        "size" => "The change was too large and was not applied. Split it into smaller files or turns.",
        "package" => "Only registry packages given as name or name@version are allowed.",
        "command" => "This command is not available. Use one of the allowed command types.",
        "search_replace" => {
            "The SEARCH section must match the current file exactly and uniquely. Re-read the file, copy the lines verbatim, or rewrite the whole file with <blaze-write>."
        }
        "missing_file" => "The file does not exist at that path at this point of the turn.",
        _ => "The action was not applied.",
    }
}

/// Build the plan for one turn from its parsed tags and the current project
/// files (path → UTF-8 content).
///
/// * Application order is deletes → renames → search-replaces → writes →
///   dependencies/commands/title, whatever order the tags came in. So a
///   search-replace sees the file after deletes and renames but not after
///   writes of the same turn, and a delete followed by a write of the same
///   path ends with the written file.
/// * Every path goes through [`guard::check_path`]; a refused path skips
///   that action only (`path`). Deleting or renaming something that does not
///   exist, or search-replacing a file that does not exist at that point, is
///   `missing_file`. A failed search-replace is `search_replace` and leaves
///   the file unchanged. Renaming onto an existing file overwrites it; files
///   and directories can both be deleted or renamed.
/// * A file over `max_file_bytes`, or a write that would push the turn's
///   total over `max_turn_bytes`, is skipped as `size`. The total counts the
///   final size of each written or search-replaced file once.
/// * Packages go through [`guard::check_package`] (`package`); commands must
///   be in `allowed_commands` (`command`). Both are deduplicated.
/// * The title is the first non-empty chat summary, whitespace-collapsed and
///   capped at [`MAX_TITLE_CHARS`] characters.
pub fn build(tags: &[Tag], files: &HashMap<String, String>, guard: &Guardrails) -> Plan {
    let mut b = Builder {
        fs: files.iter().map(|(path, content)| (path.clone(), Cow::Borrowed(content.as_str()))).collect(),
        guard,
        plan: Plan::default(),
        changes: Vec::new(),
        turn_bytes: 0,
    };
    for (i, tag) in tags.iter().enumerate() {
        if let Tag::Delete { path } = tag {
            b.delete(i, path);
        }
    }
    for (i, tag) in tags.iter().enumerate() {
        if let Tag::Rename { from, to } = tag {
            b.rename(i, from, to);
        }
    }
    for (i, tag) in tags.iter().enumerate() {
        if let Tag::SearchReplace { path, description, body } = tag {
            b.search_replace(i, path, description.as_deref(), body);
        }
    }
    for (i, tag) in tags.iter().enumerate() {
        if let Tag::Write { path, description, content } = tag {
            b.write(i, path, description.as_deref(), content);
        }
    }
    for tag in tags {
        match tag {
            Tag::AddDependency { packages } => packages.iter().for_each(|spec| b.package(spec)),
            Tag::Command { kind } => b.command(kind),
            Tag::ChatSummary { title } if b.plan.title.is_none() => b.plan.title = clean_title(title),
            _ => {}
        }
    }
    let Builder { mut plan, mut changes, .. } = b;
    // Stable sort: several changes from one tag (none today) keep their order.
    changes.sort_by_key(|(index, _)| *index);
    plan.file_changes = changes.into_iter().map(|(_, change)| change).collect();
    plan
}

/// Collapse whitespace (titles are one line) and cap the length. An empty
/// summary yields `None` so a later, non-empty one can still set the title.
fn clean_title(raw: &str) -> Option<String> {
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let title: String = collapsed.chars().take(MAX_TITLE_CHARS).collect();
    let title = title.trim_end();
    (!title.is_empty()).then(|| title.to_owned())
}

fn basename(path: &str) -> String {
    path.rsplit_once('/').map_or(path, |(_, name)| name).to_owned()
}

fn summary_or_default(description: Option<&str>) -> String {
    match description.map(str::trim) {
        Some(d) if !d.is_empty() => d.to_owned(),
        _ => NO_SUMMARY.to_owned(),
    }
}

struct Builder<'a> {
    /// The project as it looks after the actions applied so far.
    fs: BTreeMap<String, Cow<'a, str>>,
    guard: &'a Guardrails,
    plan: Plan,
    /// File changes tagged with the index of the tag that caused them.
    changes: Vec<(usize, FileChangeSummary)>,
    /// Sum of the sizes of `plan.writes` values.
    turn_bytes: usize,
}

impl Builder<'_> {
    fn violation(&mut self, kind: &str, message: String) {
        self.plan.violations.push(Violation { kind: kind.to_owned(), message });
    }

    fn checked_path(&mut self, raw: &str, action: &str) -> Option<String> {
        match guard::check_path(raw) {
            Ok(path) => Some(path),
            Err(reason) => {
                self.violation("path", format!("Cannot {action} {raw:?}: {reason}"));
                None
            }
        }
    }

    /// Existing files strictly under directory `dir`.
    fn files_under(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.fs.range(prefix.clone()..).take_while(|(path, _)| path.starts_with(&prefix)).map(|(path, _)| path.clone()).collect()
    }

    fn is_dir(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.fs.range(prefix.clone()..).next().is_some_and(|(p, _)| p.starts_with(&prefix))
    }

    /// An ancestor of `path` that is a file, which would make `path` unwritable.
    fn file_ancestor(&self, path: &str) -> Option<String> {
        path.match_indices('/').map(|(i, _)| &path[..i]).find(|ancestor| self.fs.contains_key(*ancestor)).map(str::to_owned)
    }

    /// Reason why a file cannot be created at `path`, if any.
    fn file_conflict(&self, path: &str) -> Option<String> {
        if self.is_dir(path) {
            return Some(format!("{path} is an existing directory"));
        }
        self.file_ancestor(path).map(|file| format!("{file} is a file, not a directory"))
    }

    fn delete(&mut self, index: usize, raw: &str) {
        let Some(path) = self.checked_path(raw, "delete") else { return };
        if self.plan.deletes.contains(&path) {
            // The model repeated itself; the first delete already did the job.
            return;
        }
        if self.fs.remove(&path).is_none() {
            let under = self.files_under(&path);
            if under.is_empty() {
                self.violation("missing_file", format!("Cannot delete {path}: no such file or directory"));
                return;
            }
            for file in under {
                self.fs.remove(&file);
            }
        }
        self.changes.push((
            index,
            FileChangeSummary { name: basename(&path), path: path.clone(), summary: "Delete file".into(), kind: "delete".into() },
        ));
        self.plan.deletes.push(path);
    }

    fn rename(&mut self, index: usize, raw_from: &str, raw_to: &str) {
        let (Some(from), Some(to)) = (self.checked_path(raw_from, "rename"), self.checked_path(raw_to, "rename to")) else { return };
        if from == to {
            return;
        }
        if to.starts_with(&format!("{from}/")) {
            self.violation("path", format!("Cannot rename {from} to {to}: a directory cannot move into itself"));
            return;
        }
        if let Some(content) = self.fs.get(&from).cloned() {
            if let Some(reason) = self.file_conflict(&to) {
                self.violation("path", format!("Cannot rename {from} to {to}: {reason}"));
                return;
            }
            self.fs.remove(&from);
            self.fs.insert(to.clone(), content);
        } else {
            let under = self.files_under(&from);
            if under.is_empty() {
                self.violation("missing_file", format!("Cannot rename {from}: no such file or directory"));
                return;
            }
            if let Some(reason) = self
                .fs
                .contains_key(&to)
                .then(|| format!("{to} is an existing file"))
                .or_else(|| self.file_ancestor(&to).map(|file| format!("{file} is a file, not a directory")))
            {
                self.violation("path", format!("Cannot rename {from} to {to}: {reason}"));
                return;
            }
            for old in under {
                if let Some(content) = self.fs.remove(&old) {
                    let new = format!("{to}{}", &old[from.len()..]);
                    self.fs.insert(new, content);
                }
            }
        }
        self.changes.push((
            index,
            FileChangeSummary {
                name: basename(&to),
                path: to.clone(),
                summary: format!("Rename from {from} to {to}"),
                kind: "rename".into(),
            },
        ));
        self.plan.renames.push((from, to));
    }

    fn search_replace(&mut self, index: usize, raw: &str, description: Option<&str>, body: &str) {
        let Some(path) = self.checked_path(raw, "edit") else { return };
        let Some(current) = self.fs.get(&path) else {
            self.violation("missing_file", format!("Cannot apply search-replace to {path}: the file does not exist"));
            return;
        };
        let updated = match search_replace::parse_blocks(body).and_then(|blocks| search_replace::apply(current, &blocks)) {
            Ok(updated) => updated,
            Err(err) => {
                self.violation("search_replace", format!("Search-replace on {path} failed: {err}"));
                return;
            }
        };
        if self.record_write(&path, updated) {
            self.changes.push((
                index,
                FileChangeSummary { name: basename(&path), path, summary: summary_or_default(description), kind: "write".into() },
            ));
        }
    }

    fn write(&mut self, index: usize, raw: &str, description: Option<&str>, content: &str) {
        let Some(path) = self.checked_path(raw, "write") else { return };
        if let Some(reason) = self.file_conflict(&path) {
            self.violation("path", format!("Cannot write {path}: {reason}"));
            return;
        }
        if self.record_write(&path, content.to_owned()) {
            self.changes.push((
                index,
                FileChangeSummary { name: basename(&path), path, summary: summary_or_default(description), kind: "write".into() },
            ));
        }
    }

    /// Enforce the size limits and record the new content. Returns whether
    /// the write was accepted.
    fn record_write(&mut self, path: &str, content: String) -> bool {
        let size = content.len();
        if size > self.guard.max_file_bytes {
            let limit = self.guard.max_file_bytes;
            self.violation("size", format!("{path} would be {size} bytes, over the {limit}-byte limit per file"));
            return false;
        }
        let previous = self.plan.writes.get(path).map_or(0, String::len);
        let total = self.turn_bytes - previous + size;
        if total > self.guard.max_turn_bytes {
            let limit = self.guard.max_turn_bytes;
            self.violation("size", format!("Writing {path} would bring this turn to {total} bytes, over the {limit}-byte limit per turn"));
            return false;
        }
        self.turn_bytes = total;
        self.fs.insert(path.to_owned(), Cow::Owned(content.clone()));
        self.plan.writes.insert(path.to_owned(), content);
        true
    }

    fn package(&mut self, spec: &str) {
        match guard::check_package(spec, self.guard) {
            Ok(spec) if !self.plan.packages.contains(&spec) => self.plan.packages.push(spec),
            Ok(_) => {}
            Err(reason) => self.violation("package", format!("Cannot add dependency {spec:?}: {reason}")),
        }
    }

    fn command(&mut self, kind: &str) {
        let kind = kind.trim();
        if self.guard.allowed_commands.iter().any(|allowed| allowed == kind) {
            if !self.plan.commands.iter().any(|c| c == kind) {
                self.plan.commands.push(kind.to_owned());
            }
        } else if kind.is_empty() {
            self.violation("command", "Command without a type attribute".into());
        } else {
            self.violation("command", format!("Command {kind:?} is not allowed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn files(entries: &[(&str, &str)]) -> HashMap<String, String> {
        entries.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())).collect()
    }

    fn kinds(plan: &Plan) -> Vec<&str> {
        plan.violations.iter().map(|v| v.kind.as_str()).collect()
    }

    const SR_BODY: &str = "<<<<<<< SEARCH\nold line\n=======\nnew line\n>>>>>>> REPLACE\n";

    #[test]
    fn rename_then_search_replace_reads_old_content() {
        // Emitted in the "wrong" order on purpose: order of application is fixed.
        let tags = vec![
            Tag::SearchReplace { path: "src/b.ts".into(), description: Some("Tweak".into()), body: SR_BODY.into() },
            Tag::Rename { from: "src/a.ts".into(), to: "src/b.ts".into() },
        ];
        let plan = build(&tags, &files(&[("src/a.ts", "first\nold line\n")]), &Guardrails::default());
        assert_eq!(plan.violations, vec![]);
        assert_eq!(plan.renames, vec![("src/a.ts".into(), "src/b.ts".into())]);
        assert_eq!(plan.writes.get("src/b.ts").map(String::as_str), Some("first\nnew line\n"));
        assert_eq!(plan.changed_paths(), vec!["src/a.ts".to_owned(), "src/b.ts".to_owned()]);
        // Proposal lists changes in emission order.
        assert_eq!(
            plan.file_changes,
            vec![
                FileChangeSummary { name: "b.ts".into(), path: "src/b.ts".into(), summary: "Tweak".into(), kind: "write".into() },
                FileChangeSummary {
                    name: "b.ts".into(),
                    path: "src/b.ts".into(),
                    summary: "Rename from src/a.ts to src/b.ts".into(),
                    kind: "rename".into()
                },
            ]
        );
    }

    #[test]
    fn delete_then_write_same_path() {
        let tags =
            vec![Tag::Write { path: "a.ts".into(), description: None, content: "new\n".into() }, Tag::Delete { path: "a.ts".into() }];
        let plan = build(&tags, &files(&[("a.ts", "old\n")]), &Guardrails::default());
        assert_eq!(plan.violations, vec![]);
        assert_eq!(plan.deletes, vec!["a.ts".to_owned()]);
        assert_eq!(plan.writes.get("a.ts").map(String::as_str), Some("new\n"));
        assert_eq!(plan.file_changes[0].summary, NO_SUMMARY);
        assert_eq!(
            plan.file_changes[1],
            FileChangeSummary { name: "a.ts".into(), path: "a.ts".into(), summary: "Delete file".into(), kind: "delete".into() }
        );
    }

    #[test]
    fn search_replace_does_not_see_writes_of_the_same_turn() {
        let tags = vec![
            Tag::Write { path: "new.ts".into(), description: None, content: "old line\n".into() },
            Tag::SearchReplace { path: "new.ts".into(), description: None, body: SR_BODY.into() },
        ];
        let plan = build(&tags, &HashMap::new(), &Guardrails::default());
        assert_eq!(kinds(&plan), vec!["missing_file"]);
        assert_eq!(plan.writes.get("new.ts").map(String::as_str), Some("old line\n"));
    }

    #[test]
    fn violations_do_not_stop_other_actions() {
        let tags = vec![
            Tag::Write { path: "../escape.ts".into(), description: None, content: "x\n".into() },
            Tag::Write { path: "ok.ts".into(), description: Some("fine".into()), content: "y\n".into() },
            Tag::Delete { path: "missing.ts".into() },
            Tag::Rename { from: "nope.ts".into(), to: "other.ts".into() },
            Tag::SearchReplace { path: "keep.ts".into(), description: None, body: SR_BODY.replace("old line", "absent").to_string() },
            Tag::SearchReplace { path: "keep.ts".into(), description: None, body: "garbage".into() },
            Tag::AddDependency { packages: vec!["zod".into(), "http://evil/x.tgz".into(), "zod".into()] },
            Tag::Command { kind: "rm".into() },
            Tag::Command { kind: "rebuild".into() },
            Tag::Command { kind: String::new() },
        ];
        let plan = build(&tags, &files(&[("keep.ts", "content\n")]), &Guardrails::default());
        assert_eq!(
            kinds(&plan),
            vec!["missing_file", "missing_file", "search_replace", "search_replace", "path", "package", "command", "command"]
        );
        assert_eq!(plan.writes.keys().collect::<Vec<_>>(), vec!["ok.ts"]);
        assert!(!plan.writes.contains_key("keep.ts"), "failed search-replace leaves the file unchanged");
        assert_eq!(plan.packages, vec!["zod".to_owned()]);
        assert_eq!(plan.commands, vec!["rebuild".to_owned()]);
        assert!(!plan.is_empty());
        assert_eq!(plan.file_changes.len(), 1);
    }

    #[test]
    fn paths_are_normalised_before_use() {
        let tags = vec![
            Tag::Write { path: "./src//x.ts".into(), description: None, content: "a\n".into() },
            Tag::Delete { path: "src/old/".into() },
        ];
        let plan = build(&tags, &files(&[("src/old/a.ts", ""), ("src/old/b/c.ts", ""), ("src/older.ts", "")]), &Guardrails::default());
        assert_eq!(plan.violations, vec![]);
        assert_eq!(plan.writes.keys().collect::<Vec<_>>(), vec!["src/x.ts"]);
        assert_eq!(plan.deletes, vec!["src/old".to_owned()]);
    }

    #[test]
    fn renames_of_directories_and_onto_existing_files() {
        let tags = vec![
            Tag::Rename { from: "a.ts".into(), to: "b.ts".into() },
            Tag::Rename { from: "lib".into(), to: "src/lib".into() },
            Tag::SearchReplace { path: "src/lib/x.ts".into(), description: None, body: SR_BODY.into() },
        ];
        let plan = build(&tags, &files(&[("a.ts", "A"), ("b.ts", "B"), ("lib/x.ts", "old line\n")]), &Guardrails::default());
        assert_eq!(plan.violations, vec![]);
        assert_eq!(plan.renames.len(), 2);
        assert_eq!(plan.writes.get("src/lib/x.ts").map(String::as_str), Some("new line\n"));

        let bad = vec![
            Tag::Rename { from: "lib".into(), to: "lib/inner".into() },
            Tag::Rename { from: "a.ts".into(), to: "lib".into() },
            Tag::Write { path: "a.ts/b.ts".into(), description: None, content: String::new() },
            Tag::Write { path: "lib".into(), description: None, content: String::new() },
        ];
        let plan = build(&bad, &files(&[("a.ts", "A"), ("lib/x.ts", "")]), &Guardrails::default());
        assert_eq!(kinds(&plan), vec!["path", "path", "path", "path"]);
        assert!(plan.is_empty());
    }

    #[test]
    fn size_limits() {
        let guard = Guardrails { max_file_bytes: 10, max_turn_bytes: 15, ..Guardrails::default() };
        let tags = vec![
            Tag::Write { path: "big.ts".into(), description: None, content: "x".repeat(11) },
            Tag::Write { path: "a.ts".into(), description: None, content: "x".repeat(8) },
            Tag::Write { path: "b.ts".into(), description: None, content: "x".repeat(8) },
            // Rewriting a file replaces its share of the budget.
            Tag::Write { path: "a.ts".into(), description: None, content: "x".repeat(2) },
            Tag::Write { path: "c.ts".into(), description: None, content: "x".repeat(5) },
        ];
        let plan = build(&tags, &HashMap::new(), &guard);
        assert_eq!(kinds(&plan), vec!["size", "size"]);
        assert_eq!(plan.writes.keys().collect::<Vec<_>>(), vec!["a.ts", "c.ts"]);
        assert_eq!(plan.writes.get("a.ts").map(String::len), Some(2));
    }

    #[test]
    fn title_is_first_non_empty_summary_trimmed_and_capped() {
        let long = "word ".repeat(100);
        let tags = vec![
            Tag::ChatSummary { title: "  ".into() },
            Tag::ChatSummary { title: long.clone() },
            Tag::ChatSummary { title: "second".into() },
        ];
        let plan = build(&tags, &HashMap::new(), &Guardrails::default());
        let title = plan.title.expect("title");
        assert!(title.chars().count() <= MAX_TITLE_CHARS);
        assert!(long.starts_with(&title));
        let plan = build(&[Tag::ChatSummary { title: " Fix\n  the   bug ".into() }], &HashMap::new(), &Guardrails::default());
        assert_eq!(plan.title.as_deref(), Some("Fix the bug"));
        assert!(plan.is_empty());
    }

    #[test]
    fn error_output_format() {
        let plan = Plan {
            violations: vec![
                Violation { kind: "path".into(), message: "Cannot write \"../x\": escapes <root> & more".into() },
                Violation { kind: "command".into(), message: "Command \"rm\" is not allowed".into() },
            ],
            ..Plan::default()
        };
        let out = plan.error_output();
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            format!(
                "<blaze-output type=\"error\" message=\"Cannot write &quot;../x&quot;: escapes &lt;root&gt; &amp; more\">{}</blaze-output>",
                hint("path")
            )
        );
        assert!(lines[1].starts_with("<blaze-output type=\"error\" message=\"Command &quot;rm&quot; is not allowed\">"));
        assert_eq!(Plan::default().error_output(), "");
        // The output is itself valid dialect: a display-only tag, no actions.
        let parsed = parse(&out);
        assert!(parsed.tags.is_empty() && parsed.unclosed.is_none() && parsed.text == "\n");
    }

    #[test]
    fn plan_serde_round_trip() {
        let tags = parse(concat!(
            "<blaze-write path=\"src/a.ts\" description=\"A\">a</blaze-write>",
            "<blaze-rename from=\"b.ts\" to=\"c.ts\"></blaze-rename>",
            "<blaze-delete path=\"d.ts\"></blaze-delete>",
            "<blaze-add-dependency packages=\"zod@^3.22.0 Bad\"></blaze-add-dependency>",
            "<blaze-command type=\"install\"></blaze-command>",
            "<blaze-chat-summary>Title</blaze-chat-summary>",
        ))
        .tags;
        let plan = build(&tags, &files(&[("b.ts", "B"), ("d.ts", "D")]), &Guardrails::default());
        assert_eq!(kinds(&plan), vec!["package"]);
        let json = serde_json::to_string(&plan).expect("serialise");
        let back: Plan = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, plan);
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["renames"], serde_json::json!([["b.ts", "c.ts"]]));
    }
}
