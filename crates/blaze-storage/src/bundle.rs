//! Git bundles (v2) written and read without the git CLI.
//!
//! A bundle is a header naming `refs/heads/main` followed by a packfile.
//! We write every object reachable from main as a full (non-delta) entry,
//! which is a valid pack that `git bundle verify` and `git clone` accept; we
//! read the same subset back. Bundles are the disaster-recovery copy of a
//! repository in object storage.

use std::io::{Read, Write};

use gix::{ObjectId, objs::Write as _};
use sha1::{Digest, Sha1};

use crate::{StorageError, StorageResult};

const HEADER: &str = "# v2 git bundle\n";

fn err(e: impl std::fmt::Display) -> StorageError {
    StorageError::InvalidBundle(e.to_string())
}

fn kind_code(kind: gix::object::Kind) -> u8 {
    match kind {
        gix::object::Kind::Commit => 1,
        gix::object::Kind::Tree => 2,
        gix::object::Kind::Blob => 3,
        gix::object::Kind::Tag => 4,
    }
}

fn collect(repo: &gix::Repository, head: ObjectId) -> StorageResult<Vec<ObjectId>> {
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::new();
    let mut stack = vec![head];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let obj = repo.find_object(id).map_err(|e| StorageError::Git(e.to_string()))?;
        order.push(id);
        match obj.kind {
            gix::object::Kind::Commit => {
                let c = obj.into_commit();
                stack.push(c.tree_id().map_err(|e| StorageError::Git(e.to_string()))?.detach());
                stack.extend(c.parent_ids().map(|p| p.detach()));
            }
            gix::object::Kind::Tree => {
                let t = obj.into_tree();
                for entry in t.iter() {
                    let entry = entry.map_err(|e| StorageError::Git(e.to_string()))?;
                    // submodule commits are not objects of this repository
                    if !entry.mode().is_commit() {
                        stack.push(entry.oid().to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(order)
}

/// Bundle everything reachable from `head`.
pub fn create(repo: &gix::Repository, head: ObjectId) -> StorageResult<Vec<u8>> {
    let ids = collect(repo, head)?;
    let mut pack = Vec::new();
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        let obj = repo.find_object(id).map_err(|e| StorageError::Git(e.to_string()))?;
        let data = &obj.data;
        // type-and-size header: 3 type bits, then little-endian base-128 size
        let mut size = data.len();
        let mut byte = (kind_code(obj.kind) << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data)?;
        pack.extend_from_slice(&z.finish()?);
    }
    let checksum = Sha1::digest(&pack);
    pack.extend_from_slice(&checksum);
    let mut out = format!("{HEADER}{head} refs/heads/main\n\n").into_bytes();
    out.extend_from_slice(&pack);
    Ok(out)
}

/// Write a bundle's objects into `repo`; returns the commit `main` points to.
pub fn unpack(repo: &gix::Repository, bundle: &[u8]) -> StorageResult<ObjectId> {
    let rest = bundle.strip_prefix(HEADER.as_bytes()).ok_or_else(|| err("not a v2 bundle"))?;
    let header_end = rest.windows(2).position(|w| w == b"\n\n").ok_or_else(|| err("bundle header is not terminated"))?;
    let header = std::str::from_utf8(&rest[..header_end]).map_err(err)?;
    let mut head = None;
    for line in header.lines() {
        if line.starts_with('-') {
            return Err(err("bundles with prerequisites are not supported"));
        }
        if let Some((id, name)) = line.split_once(' ')
            && name == "refs/heads/main"
        {
            head = Some(ObjectId::from_hex(id.as_bytes()).map_err(err)?);
        }
    }
    let head = head.ok_or_else(|| err("bundle has no refs/heads/main"))?;
    let pack = &rest[header_end + 2..];
    if pack.len() < 32 || &pack[..4] != b"PACK" {
        return Err(err("missing packfile"));
    }
    let (body, checksum) = pack.split_at(pack.len() - 20);
    if Sha1::digest(body)[..] != *checksum {
        return Err(err("pack checksum mismatch"));
    }
    let count = u32::from_be_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let mut pos = 12;
    for _ in 0..count {
        let mut byte = *body.get(pos).ok_or_else(|| err("truncated pack"))?;
        pos += 1;
        let kind = match (byte >> 4) & 0x07 {
            1 => gix::object::Kind::Commit,
            2 => gix::object::Kind::Tree,
            3 => gix::object::Kind::Blob,
            4 => gix::object::Kind::Tag,
            _ => return Err(err("delta objects are not supported")),
        };
        let mut size = (byte & 0x0f) as usize;
        let mut shift = 4;
        while byte & 0x80 != 0 {
            byte = *body.get(pos).ok_or_else(|| err("truncated pack"))?;
            pos += 1;
            size |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
        }
        let mut z = flate2::bufread::ZlibDecoder::new(&body[pos..]);
        let mut data = Vec::with_capacity(size);
        z.read_to_end(&mut data).map_err(err)?;
        if data.len() != size {
            return Err(err("object size mismatch"));
        }
        pos += z.total_in() as usize;
        repo.write_buf(kind, &data).map_err(|e| StorageError::Git(e.to_string()))?;
    }
    repo.find_commit(head).map_err(|_| err("main's commit is not in the bundle"))?;
    Ok(head)
}
