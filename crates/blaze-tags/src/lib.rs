//! The action-tag dialect spoken by the app-builder LLM, and what a turn of it
//! means for the project's files.
//!
//! * [`parser`]: incremental, total parser for `<blaze-*>` tags. Works on a
//!   stream of chunks and gives the same answer however the stream is split.
//! * [`search_replace`]: SEARCH/REPLACE block parsing and tolerant application.
//! * [`guard`]: path and package-spec validation, size and command limits.
//! * [`plan`]: turns the parsed tags of one turn into a validated change plan
//!   (the input for a single git commit), collecting violations instead of
//!   failing the whole turn.
//! * [`render`]: small text helpers shared with the chat rendering side.
//!
//! Pure library: no I/O, no async, and no input can make it panic.

pub mod guard;
pub mod parser;
pub mod plan;
pub mod render;
pub mod search_replace;

pub use guard::Guardrails;
pub use parser::{OpenTag, Parsed, Parser, Tag, parse};
pub use plan::{FileChangeSummary, Plan, Violation, build};
