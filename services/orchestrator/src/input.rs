//! The stream request, validated (contract §4.2) and turned into what a turn
//! works with: the trimmed prompt, decoded attachments and component
//! selections; and the user message text the chat stores for it.

use base64::Engine;
use blaze_kit::{ApiError, ApiResult, config::ChatConfig};
use blaze_proto::orchestrator as pb;

const PROMPT_REQUIRED: &str = "Invalid payload: \"prompt\" is required";
const BAD_ATTACHMENTS: &str = "Invalid payload: \"attachments\" must be an array of valid attachment objects";
const BAD_COMPONENTS: &str = "Invalid payload: \"selectedComponents\" must be an array of valid component selections";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    /// The file becomes part of the app (`BLAZE_ATTACHMENT_<i>` in a write).
    UploadToCodebase,
    /// The file informs the model only.
    ChatContext,
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
    pub kind: AttachmentKind,
}

impl Attachment {
    pub fn is_image(&self) -> bool {
        self.mime.starts_with("image/")
    }

    /// Text the model can read inline.
    pub fn text(&self) -> Option<&str> {
        const TEXT_EXT: [&str; 9] = [".md", ".txt", ".json", ".csv", ".js", ".ts", ".html", ".css", ".tsx"];
        let lower = self.name.to_ascii_lowercase();
        let texty = self.mime.starts_with("text/") || self.mime == "application/json" || TEXT_EXT.iter().any(|e| lower.ends_with(e));
        if texty { std::str::from_utf8(&self.bytes).ok() } else { None }
    }
}

#[derive(Debug, Clone)]
pub struct TurnInput {
    pub prompt: String,
    pub redo: bool,
    pub attachments: Vec<Attachment>,
    pub components: Vec<pb::ComponentSelection>,
}

impl TurnInput {
    /// Id a model uses in a `blaze-write` body to place upload `i`.
    pub fn upload_id(i: usize) -> String {
        format!("BLAZE_ATTACHMENT_{i}")
    }

    /// Attachments to upload into the codebase, with their ids.
    pub fn uploads(&self) -> impl Iterator<Item = (String, &Attachment)> {
        self.attachments.iter().filter(|a| a.kind == AttachmentKind::UploadToCodebase).enumerate().map(|(i, a)| (Self::upload_id(i), a))
    }
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn blank_opt(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(blank)
}

/// Base64 with or without a `data:<mime>;base64,` prefix.
pub fn decode_base64(data: &str) -> Option<Vec<u8>> {
    let raw = match data.find(";base64,") {
        Some(i) => &data[i + ";base64,".len()..],
        None => data,
    };
    let compact: String = raw.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::general_purpose::STANDARD;
    engine.decode(&compact).ok().or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.trim_end_matches('=')).ok())
}

pub fn validate(req: &pb::StreamChatRequest, cfg: &ChatConfig) -> ApiResult<TurnInput> {
    let prompt = req.prompt.trim();
    if prompt.is_empty() {
        return Err(ApiError::invalid(PROMPT_REQUIRED));
    }
    if prompt.chars().count() > cfg.max_prompt_chars {
        return Err(ApiError::too_large(format!("The prompt is longer than {} characters", cfg.max_prompt_chars)));
    }

    if req.selected_components.len() > cfg.max_selected_components {
        return Err(ApiError::invalid(format!("{BAD_COMPONENTS} (at most {})", cfg.max_selected_components)));
    }
    for c in &req.selected_components {
        if blank(&c.id)
            || blank(&c.name)
            || blank(&c.relative_path)
            || blank_opt(&c.runtime_id)
            || blank_opt(&c.tag_name)
            || blank_opt(&c.text_preview)
            || blank_opt(&c.dom_path)
        {
            return Err(ApiError::invalid(BAD_COMPONENTS));
        }
    }

    if req.attachments.len() > cfg.max_attachments {
        return Err(ApiError::invalid(format!("{BAD_ATTACHMENTS} (at most {})", cfg.max_attachments)));
    }
    let mut attachments = Vec::with_capacity(req.attachments.len());
    for a in &req.attachments {
        let kind = match a.attachment_type.as_str() {
            "upload-to-codebase" => AttachmentKind::UploadToCodebase,
            "chat-context" => AttachmentKind::ChatContext,
            _ => return Err(ApiError::invalid(BAD_ATTACHMENTS)),
        };
        if blank(&a.name) || blank(&a.r#type) {
            return Err(ApiError::invalid(BAD_ATTACHMENTS));
        }
        // Cheap bound before decoding: base64 is 4/3 of the bytes.
        if a.data.len() / 4 * 3 > cfg.max_attachment_bytes + 3 {
            return Err(ApiError::too_large(format!("Attachment {:?} is larger than {} bytes", a.name.trim(), cfg.max_attachment_bytes)));
        }
        let bytes = decode_base64(&a.data).ok_or_else(|| ApiError::invalid(BAD_ATTACHMENTS))?;
        if bytes.len() > cfg.max_attachment_bytes {
            return Err(ApiError::too_large(format!("Attachment {:?} is larger than {} bytes", a.name.trim(), cfg.max_attachment_bytes)));
        }
        attachments.push(Attachment { name: a.name.trim().to_owned(), mime: a.r#type.trim().to_owned(), bytes, kind });
    }

    Ok(TurnInput { prompt: prompt.to_owned(), redo: req.redo.unwrap_or(false), attachments, components: req.selected_components.clone() })
}

/// `Selected components:` block for the prompt: each component with a
/// snippet (one line before, three after) and the target line marked.
pub fn components_block(components: &[pb::ComponentSelection], file: impl Fn(&str) -> Option<String>) -> String {
    if components.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n\nSelected components:\n");
    for c in components {
        let path = c.relative_path.trim();
        if let Some(dom) = path.strip_prefix("__dom__/") {
            out.push_str(&format!("\nComponent: {} (DOM element: {dom})\n", c.name.trim()));
            if let Some(text) = c.text_preview.as_deref() {
                out.push_str(&format!("Text: {text}\n"));
            }
            continue;
        }
        out.push_str(&format!("\nComponent: {} (file: {path})\n", c.name.trim()));
        let Some(content) = file(path) else { continue };
        let lines: Vec<&str> = content.lines().collect();
        let target = (c.line_number.max(1) as usize).min(lines.len().max(1)) - 1;
        let from = target.saturating_sub(1);
        let to = (target + 4).min(lines.len());
        if from >= to {
            continue;
        }
        out.push_str("Snippet:\n```\n");
        for (i, line) in lines[from..to].iter().enumerate() {
            out.push_str(line);
            if from + i == target {
                out.push_str(" // <-- EDIT HERE");
            }
            out.push('\n');
        }
        out.push_str("```\n");
    }
    out
}

/// The stored user message: the prompt verbatim, then what was attached
/// and selected.
pub fn user_message(input: &TurnInput, prompt: &str, components: &str) -> String {
    let mut content = prompt.to_owned();
    if !input.attachments.is_empty() {
        content.push_str("\n\nAttachments:\n");
        let mut upload = 0;
        for a in &input.attachments {
            match a.kind {
                AttachmentKind::UploadToCodebase => {
                    content.push_str(&format!("- File to upload to codebase: {} (file id: {})\n", a.name, TurnInput::upload_id(upload)));
                    upload += 1;
                }
                AttachmentKind::ChatContext => content.push_str(&format!("- {} ({})\n", a.name, a.mime)),
            }
        }
    }
    content.push_str(components);
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str) -> pb::StreamChatRequest {
        pb::StreamChatRequest { prompt: prompt.into(), ..Default::default() }
    }

    fn component() -> pb::ComponentSelection {
        pb::ComponentSelection {
            id: "src/App.tsx:3:1".into(),
            name: "App".into(),
            relative_path: "src/App.tsx".into(),
            line_number: 3,
            column_number: 1,
            ..Default::default()
        }
    }

    fn message(r: &pb::StreamChatRequest) -> String {
        match validate(r, &ChatConfig::default()) {
            Ok(_) => "ok".into(),
            Err(e) => e.message,
        }
    }

    #[test]
    fn prompts_are_required_and_trimmed() {
        assert_eq!(message(&req("   ")), PROMPT_REQUIRED);
        assert_eq!(validate(&req("  hi  "), &ChatConfig::default()).unwrap().prompt, "hi");
        let long = "x".repeat(ChatConfig::default().max_prompt_chars + 1);
        assert!(message(&req(&long)).contains("longer than"));
    }

    #[test]
    fn components_need_non_blank_fields() {
        let mut r = req("p");
        r.selected_components = vec![component()];
        assert_eq!(message(&r), "ok");
        r.selected_components[0].name = " ".into();
        assert_eq!(message(&r), BAD_COMPONENTS);
        let mut c = component();
        c.runtime_id = Some(String::new());
        r.selected_components = vec![c];
        assert_eq!(message(&r), BAD_COMPONENTS);
    }

    #[test]
    fn attachments_accept_plain_and_data_url_base64() {
        let mut r = req("p");
        let att = |data: &str, kind: &str| pb::Attachment {
            name: "a.txt".into(),
            r#type: "text/plain".into(),
            data: data.into(),
            attachment_type: kind.into(),
        };
        r.attachments = vec![att("aGVsbG8=", "chat-context"), att("data:text/plain;base64,aGVsbG8", "upload-to-codebase")];
        let input = validate(&r, &ChatConfig::default()).unwrap();
        assert!(input.attachments.iter().all(|a| a.bytes == b"hello"));
        assert_eq!(input.uploads().map(|(id, _)| id).collect::<Vec<_>>(), vec!["BLAZE_ATTACHMENT_0"]);
        r.attachments = vec![att("not base64!", "chat-context")];
        assert_eq!(message(&r), BAD_ATTACHMENTS);
        r.attachments = vec![att("aGVsbG8=", "inline")];
        assert_eq!(message(&r), BAD_ATTACHMENTS);
        let cfg = ChatConfig { max_attachment_bytes: 3, ..Default::default() };
        r.attachments = vec![att("aGVsbG8=", "chat-context")];
        assert_eq!(validate(&r, &cfg).unwrap_err().reason, "PAYLOAD_TOO_LARGE");
    }

    #[test]
    fn component_snippets_mark_the_target_line() {
        let block = components_block(&[component()], |_| Some("a\nb\nc\nd\ne\nf\ng".into()));
        assert!(block.contains("Component: App (file: src/App.tsx)"));
        assert!(block.contains("b\nc // <-- EDIT HERE\nd\ne\nf\n"), "{block}");
        let mut dom = component();
        dom.relative_path = "__dom__/div>p".into();
        dom.text_preview = Some("Hello".into());
        assert!(components_block(&[dom], |_| None).contains("DOM element: div>p"));
    }
}
