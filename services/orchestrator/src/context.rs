//! The model's context under a real token budget (DESIGN §6.2).
//!
//! Budget = context window − reserved output − system prompt − the prompt −
//! history. History keeps the last turns (dropping the oldest when even they
//! do not fit); files then go in by priority (selected components, files
//! named in the prompt, recently changed ones, then the rest smallest
//! first). A file that does not fit is replaced by a placeholder, and every
//! left-out file is reported. The layout is the proven one: the codebase as
//! one user turn of `<blaze-file>` blocks, the assistant's "OK, got it",
//! then history and the prompt.

use blaze_llm::{ChatMessage, Image, Role, estimate_tokens};
use blaze_proto::orchestrator::ContextReport;

pub const EXCLUDED_PLACEHOLDER: &str = "// File contents excluded from context";
const CODEBASE_INTRO: &str = "This is my codebase. ";
const CODEBASE_ACK: &str = "OK, got it. I'm ready to help";
/// Per-message framing overhead of chat APIs.
const MESSAGE_OVERHEAD: i64 = 4;
/// What one attached image costs, roughly, with the common providers.
const IMAGE_TOKENS: i64 = 1_000;
const MAX_FILE_BYTES: i64 = 1_000 * 1024;

const CODE_EXTENSIONS: &[&str] = &[
    "ts",
    "tsx",
    "js",
    "jsx",
    "mjs",
    "cjs",
    "mts",
    "cts",
    "css",
    "html",
    "md",
    "astro",
    "vue",
    "svelte",
    "scss",
    "sass",
    "less",
    "json",
    "yml",
    "yaml",
    "xml",
    "plist",
    "entitlements",
    "kt",
    "java",
    "gradle",
    "swift",
    "py",
    "php",
];
const SKIPPED_DIRS: &[&str] = &["node_modules", ".git", "dist", "build", ".next", ".venv", "venv"];
const SKIPPED_FILES: &[&str] = &["pnpm-lock.yaml", "package-lock.json", "yarn.lock", "bun.lockb"];

/// A file of the app at the turn's source commit (`content` is None for
/// binary files).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub size: i64,
    pub content: Option<String>,
}

/// Whether the model sees this path at all.
pub fn is_context_file(path: &str, size: i64) -> bool {
    let mut parts = path.split('/');
    let name = path.rsplit('/').next().unwrap_or(path);
    if parts.any(|p| SKIPPED_DIRS.contains(&p)) || SKIPPED_FILES.contains(&name) || size > MAX_FILE_BYTES {
        return false;
    }
    if name == ".gitignore" || name.starts_with(".env") {
        return true;
    }
    name.rsplit_once('.').is_some_and(|(_, ext)| CODE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Secrets never go to a model.
fn always_excluded(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == ".env" || name.starts_with(".env.")
}

pub struct ContextInput<'a> {
    pub system: String,
    pub files: &'a [SourceFile],
    /// Earlier messages of the chat, oldest first: (role, content).
    pub history: &'a [(Role, String)],
    pub prompt: String,
    pub images: Vec<Image>,
    pub window: i64,
    pub reserved_output: i64,
    /// Turns of history kept (the user setting); one more is always kept.
    pub max_turns: usize,
    /// Paths to include first, most important first.
    pub priority: Vec<String>,
}

#[derive(Debug)]
pub struct Context {
    pub messages: Vec<ChatMessage>,
    pub report: ContextReport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub needed: i64,
    pub window: i64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "The prompt and system instructions need about {} tokens, more than the model's context window of {} tokens allows. Shorten the prompt or remove attachments.",
            self.needed, self.window
        )
    }
}

fn file_block(path: &str, content: &str) -> String {
    format!("<blaze-file path=\"{}\">\n{content}\n</blaze-file>\n\n", blaze_tags::render::escape_attr(path))
}

/// Remove `<think>` blocks (the model's private reasoning) from history.
fn clean_history(content: &str) -> String {
    blaze_tags::render::strip_think(content).trim().to_owned()
}

pub fn build(input: ContextInput<'_>) -> Result<Context, TooLarge> {
    let system_tokens = estimate_tokens(&input.system) + MESSAGE_OVERHEAD;
    let prompt_tokens = estimate_tokens(&input.prompt) + MESSAGE_OVERHEAD + IMAGE_TOKENS * input.images.len() as i64;
    let framing = estimate_tokens(CODEBASE_INTRO) + estimate_tokens(CODEBASE_ACK) + 2 * MESSAGE_OVERHEAD;
    let available = input.window - input.reserved_output;
    let fixed = system_tokens + prompt_tokens + framing;
    if fixed > available {
        return Err(TooLarge { needed: fixed + input.reserved_output, window: input.window });
    }

    // History: the last max_turns + 1 turns, starting at a user message.
    let keep = (input.max_turns + 1) * 2;
    let mut history: Vec<(Role, String)> = input
        .history
        .iter()
        .filter(|(role, _)| matches!(role, Role::User | Role::Assistant))
        .map(|(role, content)| (*role, clean_history(content)))
        .filter(|(_, content)| !content.is_empty())
        .collect();
    let mut dropped = history.len().saturating_sub(keep);
    history.drain(..dropped);
    while history.first().is_some_and(|(r, _)| *r != Role::User) {
        history.remove(0);
        dropped += 1;
    }
    let cost = |h: &[(Role, String)]| h.iter().map(|(_, c)| estimate_tokens(c) + MESSAGE_OVERHEAD).sum::<i64>();
    while !history.is_empty() && fixed + cost(&history) > available {
        // drop the oldest exchange
        let n = history.iter().skip(1).position(|(r, _)| *r == Role::User).map(|p| p + 1).unwrap_or(history.len());
        history.drain(..n);
        dropped += n;
    }
    let history_tokens = cost(&history);

    // Files by priority, each fully or as a placeholder while budget lasts.
    let mut budget = available - fixed - history_tokens;
    let mut candidates: Vec<&SourceFile> = input.files.iter().filter(|f| is_context_file(&f.path, f.size)).collect();
    let rank = |f: &SourceFile| input.priority.iter().position(|p| p == &f.path).unwrap_or(usize::MAX);
    candidates.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.size.cmp(&b.size)).then(a.path.cmp(&b.path)));
    let mut included: Vec<(String, String)> = Vec::new();
    let mut excluded = Vec::new();
    for f in candidates {
        let full = match (&f.content, always_excluded(&f.path)) {
            (Some(c), false) => Some(file_block(&f.path, c)),
            _ => None,
        };
        if let Some(block) = full {
            let t = estimate_tokens(&block);
            if t <= budget {
                budget -= t;
                included.push((f.path.clone(), block));
                continue;
            }
        }
        let placeholder = file_block(&f.path, EXCLUDED_PLACEHOLDER);
        let t = estimate_tokens(&placeholder);
        if f.content.is_some() && !always_excluded(&f.path) {
            excluded.push(f.path.clone());
        }
        if t <= budget {
            budget -= t;
            included.push((f.path.clone(), placeholder));
        }
    }
    // A stable order keeps provider prompt caches warm between turns.
    included.sort();
    let files_included = included.iter().filter(|(_, b)| !b.contains(EXCLUDED_PLACEHOLDER)).count();
    let codebase: String = included.into_iter().map(|(_, b)| b).collect();
    let codebase_message = format!("{CODEBASE_INTRO}{codebase}");
    let codebase_tokens = estimate_tokens(&codebase_message) + MESSAGE_OVERHEAD;

    let mut messages = vec![
        ChatMessage::new(Role::System, input.system),
        ChatMessage::new(Role::User, codebase_message),
        ChatMessage::new(Role::Assistant, CODEBASE_ACK),
    ];
    messages.extend(history.into_iter().map(|(role, content)| ChatMessage::new(role, content)));
    let mut last = ChatMessage::new(Role::User, input.prompt);
    last.images = input.images;
    messages.push(last);

    let total = system_tokens + codebase_tokens + estimate_tokens(CODEBASE_ACK) + MESSAGE_OVERHEAD + history_tokens + prompt_tokens;
    let report = ContextReport {
        context_window: clamp(input.window),
        system_prompt_tokens: clamp(system_tokens),
        codebase_tokens: clamp(codebase_tokens),
        message_history_tokens: clamp(history_tokens),
        input_tokens: clamp(prompt_tokens),
        estimated_total_tokens: clamp(total),
        reserved_output_tokens: clamp(input.reserved_output),
        files_included: files_included as i32,
        files_excluded: excluded,
        history_messages_dropped: dropped as i32,
    };
    Ok(Context { messages, report })
}

fn clamp(n: i64) -> i32 {
    n.clamp(0, i32::MAX as i64) as i32
}

/// Paths of the codebase named in a prompt (`src/App.tsx`, `App.tsx`).
pub fn named_paths(prompt: &str, files: &[SourceFile]) -> Vec<String> {
    files
        .iter()
        .filter(|f| {
            let name = f.path.rsplit('/').next().unwrap_or(&f.path);
            prompt.contains(f.path.as_str()) || (name.contains('.') && prompt.contains(name))
        })
        .map(|f| f.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, chars: usize) -> SourceFile {
        SourceFile { path: path.into(), size: chars as i64, content: Some("x".repeat(chars)) }
    }

    fn input<'a>(files: &'a [SourceFile], history: &'a [(Role, String)], window: i64) -> ContextInput<'a> {
        ContextInput {
            system: "system".into(),
            files,
            history,
            prompt: "make it blue".into(),
            images: vec![],
            window,
            reserved_output: 1_000,
            max_turns: 3,
            priority: vec![],
        }
    }

    #[test]
    fn everything_fits_in_a_big_window() {
        let files =
            vec![file("src/App.tsx", 400), file("package-lock.json", 10), file("logo.png", 10), file("node_modules/x/index.js", 10)];
        let ctx = build(input(&files, &[], 100_000)).unwrap();
        assert_eq!(ctx.report.files_included, 1);
        assert!(ctx.report.files_excluded.is_empty());
        assert!(ctx.messages[1].content.starts_with("This is my codebase. <blaze-file path=\"src/App.tsx\">"));
        assert_eq!(ctx.messages[2].content, "OK, got it. I'm ready to help");
        assert_eq!(ctx.messages.last().unwrap().content, "make it blue");
    }

    #[test]
    fn never_exceeds_the_window_and_reports_what_was_left_out() {
        let files: Vec<SourceFile> = (0..50).map(|i| file(&format!("src/f{i:02}.ts"), 2_000)).collect();
        let history: Vec<(Role, String)> =
            (0..20).map(|i| (if i % 2 == 0 { Role::User } else { Role::Assistant }, "h".repeat(400))).collect();
        let window = 8_000;
        let mut inp = input(&files, &history, window);
        inp.priority = vec!["src/f49.ts".into()];
        let ctx = build(inp).unwrap();
        let sent: i64 = ctx.messages.iter().map(|m| estimate_tokens(&m.content) + MESSAGE_OVERHEAD).sum();
        assert!(sent + 1_000 <= window, "sent {sent}");
        assert!(ctx.report.estimated_total_tokens as i64 + 1_000 <= window);
        assert!(!ctx.report.files_excluded.is_empty());
        assert!(!ctx.report.files_excluded.contains(&"src/f49.ts".to_owned()), "priority file kept");
        assert!(ctx.messages[1].content.contains(EXCLUDED_PLACEHOLDER));
        assert_eq!(ctx.report.history_messages_dropped, 12, "keeps (3 + 1) turns");
        assert_eq!(ctx.messages[3].role, Role::User, "history starts at a user message");
    }

    #[test]
    fn history_is_trimmed_when_it_alone_overflows_and_think_is_stripped() {
        let history = vec![
            (Role::User, "a".repeat(20_000)),
            (Role::Assistant, "<think>secret plan</think>done".into()),
            (Role::User, "second".into()),
            (Role::Assistant, "ok".into()),
        ];
        let ctx = build(input(&[], &history, 4_000)).unwrap();
        assert_eq!(ctx.report.history_messages_dropped, 2);
        assert!(ctx.messages.iter().all(|m| !m.content.contains("secret plan")));
        assert_eq!(ctx.messages[3].content, "second");
    }

    #[test]
    fn env_files_are_never_sent_and_oversized_prompts_are_refused() {
        let mut env = file(".env", 20);
        env.content = Some("API_KEY=sk-live-123".into());
        let files = [env];
        let ctx = build(input(&files, &[], 10_000)).unwrap();
        assert!(!ctx.messages[1].content.contains("sk-live-123"));
        assert!(ctx.messages[1].content.contains(".env"));
        let mut big = input(&[], &[], 2_000);
        big.prompt = "p".repeat(10_000);
        assert!(build(big).is_err());
    }

    #[test]
    fn prompt_mentions_raise_priority() {
        let files = [file("src/pages/Index.tsx", 10), file("src/App.tsx", 10)];
        assert_eq!(named_paths("fix Index.tsx please", &files), vec!["src/pages/Index.tsx"]);
    }
}
