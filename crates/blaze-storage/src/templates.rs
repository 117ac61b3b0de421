//! The app templates, embedded at build time from `templates/<id>/`. A
//! template's version is a hash of its files, so caches keyed by it (warm
//! `node_modules`) are invalidated exactly when the template changes.

use sha1::{Digest, Sha1};

/// The files of one template: (path, content).
type Files = &'static [(&'static str, &'static [u8])];

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

pub const DEFAULT: &str = "react";

#[derive(Debug, Clone)]
pub struct Template {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub files: &'static [(&'static str, &'static [u8])],
}

fn describe(id: &str) -> (&'static str, &'static str) {
    match id {
        "react" => ("React", "React, TypeScript, Vite, React Router and Tailwind CSS"),
        _ => ("Template", "An app template"),
    }
}

pub fn all() -> Vec<Template> {
    EMBEDDED
        .iter()
        .map(|(id, files)| {
            let (title, description) = describe(id);
            Template { id, title, description, files }
        })
        .collect()
}

pub fn get(id: &str) -> Option<Template> {
    let id = if id.is_empty() { DEFAULT } else { id };
    all().into_iter().find(|t| t.id == id)
}

impl Template {
    pub fn version(&self) -> String {
        let mut h = Sha1::new();
        for (path, content) in self.files {
            h.update(path.as_bytes());
            h.update([0]);
            h.update(content);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn owned_files(&self) -> Vec<(String, Vec<u8>)> {
        self.files.iter().map(|(p, c)| ((*p).to_owned(), c.to_vec())).collect()
    }
}
