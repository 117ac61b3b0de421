//! Rows as the API shows them (contract §3). Shared by every role that
//! returns chats and messages (control-plane CRUD, orchestrator stream
//! chunks), so the shapes can not drift apart.

use blaze_kit::timestamp;
use blaze_proto::controlplane as pb;

use crate::{
    apps::AppRow,
    chats::{ChatRow, MessageRow},
};

pub fn app(r: AppRow, files: Vec<String>) -> pb::App {
    pb::App {
        id: r.id,
        organization_id: Some(r.organization_id.to_string()),
        workspace_id: Some(r.workspace_id.to_string()),
        created_by_user_id: r.created_by_user_id.map(|u| u.to_string()),
        name: r.name,
        path: r.path,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        install_command: r.install_command,
        start_command: r.start_command,
        is_favorite: r.is_favorite,
        template_id: r.template_id,
        files,
    }
}

pub fn chat_summary(r: ChatRow) -> pb::ChatSummary {
    pb::ChatSummary {
        id: r.id,
        app_id: r.app_id,
        organization_id: Some(r.organization_id.to_string()),
        workspace_id: Some(r.workspace_id.to_string()),
        created_by_user_id: r.created_by_user_id.map(|u| u.to_string()),
        title: r.title,
        created_at: Some(timestamp(r.created_at)),
        initial_commit_hash: r.initial_commit_hash,
    }
}

pub fn message(r: MessageRow) -> pb::Message {
    pb::Message {
        id: r.id,
        chat_id: r.chat_id,
        organization_id: Some(r.organization_id.to_string()),
        workspace_id: Some(r.workspace_id.to_string()),
        created_by_user_id: r.created_by_user_id.map(|u| u.to_string()),
        role: r.role,
        content: r.content,
        approval_state: r.approval_state,
        source_commit_hash: r.source_commit_hash,
        commit_hash: r.commit_hash,
        request_id: r.request_id,
        max_tokens_used: r.max_tokens_used,
        model: r.model,
        created_at: Some(timestamp(r.created_at)),
    }
}

pub fn chat(r: ChatRow, messages: Vec<MessageRow>) -> pb::Chat {
    pb::Chat {
        id: r.id,
        app_id: r.app_id,
        organization_id: Some(r.organization_id.to_string()),
        workspace_id: Some(r.workspace_id.to_string()),
        created_by_user_id: r.created_by_user_id.map(|u| u.to_string()),
        title: r.title,
        initial_commit_hash: r.initial_commit_hash,
        created_at: Some(timestamp(r.created_at)),
        messages: messages.into_iter().map(message).collect(),
    }
}
