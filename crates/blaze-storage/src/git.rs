//! Bare git repositories through gix, one per app, no worktree.
//!
//! Every write builds a tree with the tree editor and commits it on
//! `refs/heads/main`; gix updates the ref only if it still points at the
//! parent we started from (compare-and-swap), so concurrent writers never
//! lose each other's work: with an expected parent the loser gets
//! [`StorageError::Conflict`], without one it rebuilds on the new tip.
//! gix is blocking; callers run these functions on blocking threads.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use gix::{ObjectId, objs::tree::EntryKind};

use crate::{Limits, StorageError, StorageResult, is_binary, paths};

const MAIN: &str = "refs/heads/main";
const CAS_RETRIES: usize = 8;

fn git_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Git(e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Author { name: "Blaze".into(), email: "noreply@blaze.sh".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Write { path: String, content: Vec<u8> },
    Delete { path: String },
    Rename { from: String, to: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    pub commit: String,
    pub parent: Option<String>,
    pub changed: Vec<String>,
    /// The change set left the tree as it was: no commit was made.
    pub unchanged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub oid: String,
    pub message: String,
    /// Author time, Unix seconds.
    pub timestamp: i64,
    pub author_name: String,
    pub author_email: String,
    pub parents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub binary: bool,
    pub executable: bool,
    pub content: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// added | modified | deleted | renamed
    pub status: &'static str,
    pub path: String,
    pub previous_path: Option<String>,
    pub binary: bool,
    pub patch: String,
}

#[derive(Clone)]
pub struct GitStore {
    root: PathBuf,
    limits: Limits,
}

fn valid_org(org: &str) -> bool {
    !org.is_empty() && org.len() <= 64 && org.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn signature_time() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{now} +0000")
}

impl GitStore {
    pub fn new(root: impl Into<PathBuf>, limits: Limits) -> Self {
        GitStore { root: root.into(), limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// `<root>/<org>/<app>.git`; the org id is validated, so no input can
    /// point outside the root.
    pub fn repo_dir(&self, org: &str, app: i64) -> StorageResult<PathBuf> {
        if !valid_org(org) || app <= 0 {
            return Err(StorageError::RepoNotFound);
        }
        Ok(self.root.join(org).join(format!("{app}.git")))
    }

    pub fn exists(&self, org: &str, app: i64) -> bool {
        self.repo_dir(org, app).map(|d| d.join("HEAD").exists()).unwrap_or(false)
    }

    pub fn open(&self, org: &str, app: i64) -> StorageResult<gix::Repository> {
        let dir = self.repo_dir(org, app)?;
        if !dir.join("HEAD").exists() {
            return Err(StorageError::RepoNotFound);
        }
        gix::open(&dir).map_err(|_| StorageError::RepoNotFound)
    }

    fn create_repo(dir: &Path) -> StorageResult<gix::Repository> {
        std::fs::create_dir_all(dir.parent().expect("repo dir has a parent"))?;
        let repo = gix::init_bare(dir).map_err(git_err)?;
        // HEAD names main even before the first commit
        std::fs::write(dir.join("HEAD"), "ref: refs/heads/main\n")?;
        Ok(repo)
    }

    /// Create the repository with one commit holding `files`.
    pub fn init(&self, org: &str, app: i64, files: &[(String, Vec<u8>)], message: &str, author: &Author) -> StorageResult<String> {
        let dir = self.repo_dir(org, app)?;
        if dir.join("HEAD").exists() {
            return Err(StorageError::RepoExists);
        }
        Self::create_repo(&dir)?;
        let changes: Vec<Change> = files.iter().map(|(p, c)| Change::Write { path: p.clone(), content: c.clone() }).collect();
        match self.commit(org, app, &changes, message, author, None) {
            Ok(outcome) => Ok(outcome.commit),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn head_id(repo: &gix::Repository) -> StorageResult<Option<ObjectId>> {
        match repo.try_find_reference(MAIN).map_err(git_err)? {
            Some(mut r) => Ok(Some(r.peel_to_id().map_err(git_err)?.detach())),
            None => Ok(None),
        }
    }

    pub fn head(&self, org: &str, app: i64) -> StorageResult<Option<String>> {
        let repo = self.open(org, app)?;
        Ok(Self::head_id(&repo)?.map(|id| id.to_string()))
    }

    /// A commit id from `""`, `main`, `HEAD` or a full commit id.
    fn resolve(repo: &gix::Repository, rev: &str) -> StorageResult<ObjectId> {
        let rev = rev.trim();
        if rev.is_empty() || rev == "main" || rev == "HEAD" || rev == MAIN {
            return Self::head_id(repo)?.ok_or_else(|| StorageError::RevisionNotFound("main".into()));
        }
        if rev.len() != 40 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::RevisionNotFound(rev.into()));
        }
        let id = ObjectId::from_hex(rev.as_bytes()).map_err(|_| StorageError::RevisionNotFound(rev.into()))?;
        match repo.find_object(id) {
            Ok(o) if o.kind == gix::object::Kind::Commit => Ok(id),
            _ => Err(StorageError::RevisionNotFound(rev.into())),
        }
    }

    fn tree_of(repo: &gix::Repository, commit: ObjectId) -> StorageResult<ObjectId> {
        Ok(repo.find_commit(commit).map_err(git_err)?.tree_id().map_err(git_err)?.detach())
    }

    /// Every blob of a tree: path → (id, executable).
    fn blobs(repo: &gix::Repository, tree: ObjectId) -> StorageResult<BTreeMap<String, (ObjectId, bool)>> {
        fn walk(repo: &gix::Repository, tree: ObjectId, prefix: &str, out: &mut BTreeMap<String, (ObjectId, bool)>) -> StorageResult<()> {
            let tree = repo.find_tree(tree).map_err(git_err)?;
            for entry in tree.iter() {
                let entry = entry.map_err(git_err)?;
                let name = entry.filename().to_string();
                let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                let mode = entry.mode();
                if mode.is_tree() {
                    walk(repo, entry.oid().to_owned(), &path, out)?;
                } else if mode.is_blob() {
                    out.insert(path, (entry.oid().to_owned(), mode.is_executable()));
                }
            }
            Ok(())
        }
        let mut out = BTreeMap::new();
        walk(repo, tree, "", &mut out)?;
        Ok(out)
    }

    pub fn read_file(&self, org: &str, app: i64, rev: &str, path: &str) -> StorageResult<(Vec<u8>, String)> {
        let path = paths::normalize(path)?;
        let repo = self.open(org, app)?;
        let commit = Self::resolve(&repo, rev)?;
        let tree = repo.find_commit(commit).map_err(git_err)?.tree().map_err(git_err)?;
        let entry = tree.lookup_entry_by_path(&path).map_err(git_err)?.ok_or_else(|| StorageError::FileNotFound(path.clone()))?;
        if !entry.mode().is_blob() {
            return Err(StorageError::FileNotFound(path));
        }
        let data = entry.object().map_err(git_err)?.detach().data;
        Ok((data, commit.to_string()))
    }

    pub fn list_files(
        &self,
        org: &str,
        app: i64,
        rev: &str,
        with_content: bool,
        max_content: u64,
    ) -> StorageResult<(Vec<FileEntry>, String)> {
        let repo = self.open(org, app)?;
        let commit = Self::resolve(&repo, rev)?;
        let blobs = Self::blobs(&repo, Self::tree_of(&repo, commit)?)?;
        let mut out = Vec::with_capacity(blobs.len());
        for (path, (id, executable)) in blobs {
            let data = repo.find_object(id).map_err(git_err)?.detach().data;
            let size = data.len() as u64;
            let binary = is_binary(&data);
            let content = (with_content && (max_content == 0 || size <= max_content)).then_some(data);
            out.push(FileEntry { path, size, binary, executable, content });
        }
        Ok((out, commit.to_string()))
    }

    fn check_sizes(&self, changes: &[Change]) -> StorageResult<()> {
        let mut total = 0u64;
        for c in changes {
            if let Change::Write { content, .. } = c {
                let size = content.len() as u64;
                if size > self.limits.file_bytes {
                    return Err(StorageError::TooLarge { what: "file", size, limit: self.limits.file_bytes });
                }
                total += size;
            }
        }
        if total > self.limits.change_set_bytes {
            return Err(StorageError::TooLarge { what: "change set", size: total, limit: self.limits.change_set_bytes });
        }
        Ok(())
    }

    /// Apply a change set as one commit on main.
    pub fn commit(
        &self,
        org: &str,
        app: i64,
        changes: &[Change],
        message: &str,
        author: &Author,
        expected_parent: Option<&str>,
    ) -> StorageResult<CommitOutcome> {
        self.check_sizes(changes)?;
        // Normalise every path up front: a bad path fails the whole set.
        let changes: Vec<Change> = changes
            .iter()
            .map(|c| {
                Ok(match c {
                    Change::Write { path, content } => Change::Write { path: paths::normalize(path)?, content: content.clone() },
                    Change::Delete { path } => Change::Delete { path: paths::normalize(path)? },
                    Change::Rename { from, to } => Change::Rename { from: paths::normalize(from)?, to: paths::normalize(to)? },
                })
            })
            .collect::<StorageResult<_>>()?;
        for attempt in 0..CAS_RETRIES {
            let repo = self.open(org, app)?;
            let parent = Self::head_id(&repo)?;
            if let Some(expected) = expected_parent.filter(|e| !e.is_empty()) {
                let actual = parent.map(|p| p.to_string()).unwrap_or_default();
                if actual != expected {
                    return Err(StorageError::Conflict { expected: expected.into(), actual });
                }
            }
            let base_tree = match parent {
                Some(p) => Self::tree_of(&repo, p)?,
                None => repo.object_hash().empty_tree(),
            };
            let mut editor = repo.edit_tree(base_tree).map_err(git_err)?;
            let existing = Self::blobs(&repo, base_tree)?;
            let mut changed = Vec::new();
            for change in &changes {
                match change {
                    Change::Write { path, content } => {
                        let blob = repo.write_blob(content).map_err(git_err)?.detach();
                        let kind = if existing.get(path).is_some_and(|(_, x)| *x) { EntryKind::BlobExecutable } else { EntryKind::Blob };
                        editor.upsert(path.as_str(), kind, blob).map_err(git_err)?;
                        changed.push(path.clone());
                    }
                    Change::Delete { path } => {
                        let is_dir = existing.keys().any(|p| p.starts_with(&format!("{path}/")));
                        if !existing.contains_key(path) && !is_dir {
                            return Err(StorageError::FileNotFound(path.clone()));
                        }
                        editor.remove(path.as_str()).map_err(git_err)?;
                        changed.push(path.clone());
                    }
                    Change::Rename { from, to } => {
                        let (blob, executable) = *existing.get(from).ok_or_else(|| StorageError::FileNotFound(from.clone()))?;
                        editor.remove(from.as_str()).map_err(git_err)?;
                        let kind = if executable { EntryKind::BlobExecutable } else { EntryKind::Blob };
                        editor.upsert(to.as_str(), kind, blob).map_err(git_err)?;
                        changed.push(from.clone());
                        changed.push(to.clone());
                    }
                }
            }
            let tree = editor.write().map_err(git_err)?.detach();
            if let Some(p) = parent
                && tree == base_tree
            {
                let head = p.to_string();
                return Ok(CommitOutcome { commit: head.clone(), parent: Some(head), changed: Vec::new(), unchanged: true });
            }
            let time = signature_time();
            let sig = gix::actor::SignatureRef { name: author.name.as_str().into(), email: author.email.as_str().into(), time: &time };
            match repo.commit_as(sig, sig, MAIN, message, tree, parent) {
                Ok(id) => {
                    changed.sort();
                    changed.dedup();
                    return Ok(CommitOutcome { commit: id.to_string(), parent: parent.map(|p| p.to_string()), changed, unchanged: false });
                }
                Err(e) => {
                    // The ref moved (or its lock is held) under us.
                    let now = Self::head_id(&self.open(org, app)?)?;
                    if now == parent {
                        return Err(git_err(e));
                    }
                    if let Some(expected) = expected_parent.filter(|e| !e.is_empty()) {
                        return Err(StorageError::Conflict {
                            expected: expected.into(),
                            actual: now.map(|p| p.to_string()).unwrap_or_default(),
                        });
                    }
                    tracing::debug!(attempt, "main moved during commit; rebuilding on the new tip");
                }
            }
        }
        Err(StorageError::Conflict { expected: "current tip".into(), actual: "still moving".into() })
    }

    /// Commits of main, newest first, following first parents; `after` is the
    /// last commit of the previous page.
    pub fn log(&self, org: &str, app: i64, after: Option<&str>, limit: usize) -> StorageResult<(Vec<CommitInfo>, bool)> {
        let repo = self.open(org, app)?;
        let Some(mut next) = Self::head_id(&repo)? else { return Ok((Vec::new(), false)) };
        let mut skipping = after.is_some();
        let mut out = Vec::new();
        loop {
            let commit = repo.find_commit(next).map_err(git_err)?;
            let id = next.to_string();
            let parents: Vec<ObjectId> = commit.parent_ids().map(|p| p.detach()).collect();
            if skipping {
                if Some(id.as_str()) == after {
                    skipping = false;
                }
            } else {
                if out.len() == limit {
                    return Ok((out, true));
                }
                let author = commit.author().map_err(git_err)?;
                out.push(CommitInfo {
                    oid: id,
                    message: commit.message_raw().map_err(git_err)?.to_string(),
                    timestamp: author.time().map(|t| t.seconds).unwrap_or(0),
                    author_name: author.name.to_string(),
                    author_email: author.email.to_string(),
                    parents: parents.iter().map(|p| p.to_string()).collect(),
                });
            }
            match parents.first() {
                Some(p) => next = *p,
                None => return Ok((out, false)),
            }
        }
    }

    /// File-level differences between two revisions, with unified patches for
    /// text files; renames are detected by content.
    pub fn diff(&self, org: &str, app: i64, from: &str, to: &str) -> StorageResult<Vec<FileDiff>> {
        let repo = self.open(org, app)?;
        let old = Self::blobs(&repo, Self::tree_of(&repo, Self::resolve(&repo, from)?)?)?;
        let new = Self::blobs(&repo, Self::tree_of(&repo, Self::resolve(&repo, to)?)?)?;
        let data = |id: ObjectId| -> StorageResult<Vec<u8>> { Ok(repo.find_object(id).map_err(git_err)?.detach().data) };
        let mut added: Vec<&String> = new.keys().filter(|p| !old.contains_key(*p)).collect();
        let mut deleted: Vec<&String> = old.keys().filter(|p| !new.contains_key(*p)).collect();
        let mut out = Vec::new();
        // exact-content renames
        let mut renamed = Vec::new();
        for d in &deleted {
            if let Some(pos) = added.iter().position(|a| new[*a].0 == old[*d].0) {
                let a = added.remove(pos);
                renamed.push(((*d).clone(), a.clone()));
            }
        }
        deleted.retain(|d| !renamed.iter().any(|(from, _)| from == *d));
        let patch = |path: &str, a: &[u8], b: &[u8]| -> (bool, String) {
            if is_binary(a) || is_binary(b) {
                return (true, String::new());
            }
            let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
            let diff = similar::TextDiff::from_lines(a.as_ref(), b.as_ref());
            (false, diff.unified_diff().context_radius(3).header(&format!("a/{path}"), &format!("b/{path}")).to_string())
        };
        for (path, (id, _)) in &new {
            if let Some((old_id, _)) = old.get(path)
                && old_id != id
            {
                let (binary, p) = patch(path, &data(*old_id)?, &data(*id)?);
                out.push(FileDiff { status: "modified", path: path.clone(), previous_path: None, binary, patch: p });
            }
        }
        for path in added {
            let (binary, p) = patch(path, b"", &data(new[path].0)?);
            out.push(FileDiff { status: "added", path: path.clone(), previous_path: None, binary, patch: p });
        }
        for path in deleted {
            let (binary, p) = patch(path, &data(old[path].0)?, b"");
            out.push(FileDiff { status: "deleted", path: path.clone(), previous_path: None, binary, patch: p });
        }
        for (from, to) in renamed {
            let binary = is_binary(&data(new[&to].0)?);
            out.push(FileDiff { status: "renamed", path: to, previous_path: Some(from), binary, patch: String::new() });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// A new commit on main whose tree is the tree of `target` (history is
    /// never rewritten).
    pub fn revert(&self, org: &str, app: i64, target: &str, message: &str, author: &Author) -> StorageResult<CommitOutcome> {
        for _ in 0..CAS_RETRIES {
            let repo = self.open(org, app)?;
            let target_id = Self::resolve(&repo, target)?;
            let target_tree = Self::tree_of(&repo, target_id)?;
            let parent = Self::head_id(&repo)?.ok_or_else(|| StorageError::RevisionNotFound("main".into()))?;
            if Self::tree_of(&repo, parent)? == target_tree {
                let head = parent.to_string();
                return Ok(CommitOutcome { commit: head.clone(), parent: Some(head), changed: Vec::new(), unchanged: true });
            }
            let time = signature_time();
            let sig = gix::actor::SignatureRef { name: author.name.as_str().into(), email: author.email.as_str().into(), time: &time };
            match repo.commit_as(sig, sig, MAIN, message, target_tree, Some(parent)) {
                Ok(id) => {
                    return Ok(CommitOutcome {
                        commit: id.to_string(),
                        parent: Some(parent.to_string()),
                        changed: Vec::new(),
                        unchanged: false,
                    });
                }
                Err(e) => {
                    if Self::head_id(&self.open(org, app)?)? == Some(parent) {
                        return Err(git_err(e));
                    }
                }
            }
        }
        Err(StorageError::Conflict { expected: "current tip".into(), actual: "still moving".into() })
    }

    /// The tree at a revision as a `.tar.gz` (for sandboxes).
    pub fn archive(&self, org: &str, app: i64, rev: &str) -> StorageResult<(Vec<u8>, String)> {
        let (files, commit) = self.list_files(org, app, rev, true, 0)?;
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for f in files {
            let content = f.content.unwrap_or_default();
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(if f.executable { 0o755 } else { 0o644 });
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, &f.path, content.as_slice())?;
        }
        let gz = builder.into_inner()?.finish()?;
        Ok((gz, commit))
    }

    /// Remove the repository directory.
    pub fn delete(&self, org: &str, app: i64) -> StorageResult<()> {
        let dir = self.repo_dir(org, app)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        Ok(())
    }

    /// Rebuild a repository from a bundle (replacing whatever is there).
    pub fn restore(&self, org: &str, app: i64, bundle: &[u8]) -> StorageResult<(String, usize)> {
        let dir = self.repo_dir(org, app)?;
        let staging = dir.with_extension("git.restoring");
        let _ = std::fs::remove_dir_all(&staging);
        let repo = Self::create_repo(&staging)?;
        let head = crate::bundle::unpack(&repo, bundle)?;
        let edit = gix::refs::transaction::RefEdit {
            change: gix::refs::transaction::Change::Update {
                log: Default::default(),
                expected: gix::refs::transaction::PreviousValue::Any,
                new: gix::refs::Target::Object(head),
            },
            name: MAIN.try_into().map_err(git_err)?,
            deref: false,
        };
        repo.edit_reference(edit).map_err(git_err)?;
        let mut commits = 0;
        let mut next = Some(head);
        while let Some(id) = next {
            commits += 1;
            next = repo.find_commit(id).map_err(git_err)?.parent_ids().next().map(|p| p.detach());
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&staging, &dir)?;
        Ok((head.to_string(), commits))
    }

    /// The bundle of a repository (every object reachable from main).
    pub fn bundle(&self, org: &str, app: i64) -> StorageResult<Vec<u8>> {
        let repo = self.open(org, app)?;
        let head = Self::head_id(&repo)?.ok_or_else(|| StorageError::RevisionNotFound("main".into()))?;
        crate::bundle::create(&repo, head)
    }
}
