//! The git store against real repositories on disk.

use blaze_storage::{
    Limits, StorageError,
    git::{Author, Change, GitStore},
};

const ORG: &str = "0190a1b2-0000-7000-8000-000000000001";

fn store(dir: &tempfile::TempDir) -> GitStore {
    GitStore::new(dir.path(), Limits { file_bytes: 1 << 20, change_set_bytes: 4 << 20, attachment_bytes: 1 << 20 })
}

fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    list.iter().map(|(p, c)| ((*p).to_owned(), c.as_bytes().to_vec())).collect()
}

fn write(path: &str, content: &str) -> Change {
    Change::Write { path: path.into(), content: content.as_bytes().to_vec() }
}

#[test]
fn change_sets_commit_read_diff_revert_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let git = store(&dir);
    let author = Author::default();
    let init = git
        .init(ORG, 7, &files(&[("index.html", "<html>"), ("src/App.tsx", "app v1\n"), ("src/old.ts", "old")]), "Init Blaze app", &author)
        .unwrap();
    assert!(git.repo_dir(ORG, 7).unwrap().join("HEAD").exists());
    assert!(matches!(git.init(ORG, 7, &[], "again", &author), Err(StorageError::RepoExists)));

    let c2 = git
        .commit(
            ORG,
            7,
            &[
                write("src/App.tsx", "app v2\n"),
                write("src/components/deep/Button.tsx", "button"),
                Change::Delete { path: "index.html".into() },
                Change::Rename { from: "src/old.ts".into(), to: "src/new.ts".into() },
            ],
            "second",
            &author,
            Some(&init),
        )
        .unwrap();
    assert!(!c2.unchanged);
    assert_eq!(c2.parent.as_deref(), Some(init.as_str()));
    assert_eq!(c2.changed, vec!["index.html", "src/App.tsx", "src/components/deep/Button.tsx", "src/new.ts", "src/old.ts"]);

    // read back at both revisions
    assert_eq!(git.read_file(ORG, 7, "", "src/App.tsx").unwrap().0, b"app v2\n");
    assert_eq!(git.read_file(ORG, 7, &init, "src/App.tsx").unwrap().0, b"app v1\n");
    assert!(matches!(git.read_file(ORG, 7, "main", "index.html"), Err(StorageError::FileNotFound(_))));
    assert_eq!(git.read_file(ORG, 7, &init, "index.html").unwrap().0, b"<html>");
    let (list, head) = git.list_files(ORG, 7, "main", false, 0).unwrap();
    assert_eq!(head, c2.commit);
    let paths: Vec<&str> = list.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["src/App.tsx", "src/components/deep/Button.tsx", "src/new.ts"]);

    // diff
    let diff = git.diff(ORG, 7, &init, &c2.commit).unwrap();
    let summary: Vec<(&str, &str, Option<&str>)> = diff.iter().map(|d| (d.status, d.path.as_str(), d.previous_path.as_deref())).collect();
    assert_eq!(
        summary,
        vec![
            ("deleted", "index.html", None),
            ("modified", "src/App.tsx", None),
            ("added", "src/components/deep/Button.tsx", None),
            ("renamed", "src/new.ts", Some("src/old.ts")),
        ]
    );
    let patch = &diff.iter().find(|d| d.path == "src/App.tsx").unwrap().patch;
    assert!(patch.contains("-app v1") && patch.contains("+app v2"), "{patch}");

    // an empty change leaves main alone
    let same = git.commit(ORG, 7, &[write("src/App.tsx", "app v2\n")], "noop", &author, None).unwrap();
    assert!(same.unchanged);
    assert_eq!(same.commit, c2.commit);

    // revert = a new commit with the old tree
    let r = git.revert(ORG, 7, &init, "Reverted all changes back to version x", &author).unwrap();
    assert!(!r.unchanged);
    assert_eq!(git.read_file(ORG, 7, "", "src/App.tsx").unwrap().0, b"app v1\n");
    assert!(git.diff(ORG, 7, &init, &r.commit).unwrap().is_empty());
    assert!(git.revert(ORG, 7, &init, "again", &author).unwrap().unchanged);

    // log: newest first, paginated
    let (log, more) = git.log(ORG, 7, None, 10).unwrap();
    assert!(!more);
    let msgs: Vec<&str> = log.iter().map(|c| c.message.trim_end()).collect();
    assert_eq!(msgs, vec!["Reverted all changes back to version x", "second", "Init Blaze app"]);
    assert_eq!(log[2].oid, init);
    assert!(log[0].timestamp > 1_700_000_000);
    assert_eq!(log[0].author_email, "noreply@blaze.sh");
    let (page1, more) = git.log(ORG, 7, None, 2).unwrap();
    assert!(more);
    let (page2, more) = git.log(ORG, 7, Some(&page1[1].oid), 2).unwrap();
    assert_eq!((page2.len(), more), (1, false));
    assert_eq!(page2[0].oid, init);

    // archive holds the tree at a revision
    let (tgz, commit) = git.archive(ORG, 7, &init).unwrap();
    assert_eq!(commit, init);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz.as_slice()));
    let mut names: Vec<String> = archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["index.html", "src/App.tsx", "src/old.ts"]);
}

#[test]
fn hostile_paths_sizes_and_foreign_orgs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let git = store(&dir);
    let author = Author::default();
    git.init(ORG, 1, &files(&[("a.txt", "a")]), "init", &author).unwrap();
    for hostile in ["../escape.txt", "/etc/passwd", ".git/config", "src/../../x"] {
        let err = git.commit(ORG, 1, &[write(hostile, "x")], "evil", &author, None).unwrap_err();
        assert!(matches!(err, StorageError::InvalidPath(_)), "{hostile}: {err}");
    }
    assert!(!dir.path().join("escape.txt").exists());
    let big = Change::Write { path: "big.bin".into(), content: vec![1; (1 << 20) + 1] };
    assert!(matches!(git.commit(ORG, 1, &[big], "big", &author, None), Err(StorageError::TooLarge { what: "file", .. })));
    assert!(matches!(
        git.commit(ORG, 1, &[Change::Delete { path: "missing".into() }], "x", &author, None),
        Err(StorageError::FileNotFound(_))
    ));
    // another organisation, or an org id that is a path, finds nothing
    assert!(matches!(git.read_file("0190a1b2-0000-7000-8000-000000000002", 1, "", "a.txt"), Err(StorageError::RepoNotFound)));
    assert!(matches!(git.read_file("../..", 1, "", "a.txt"), Err(StorageError::RepoNotFound)));
    // binary files round-trip
    let png = vec![0x89, b'P', b'N', b'G', 0, 1, 2, 255];
    git.commit(ORG, 1, &[Change::Write { path: "logo.png".into(), content: png.clone() }], "bin", &author, None).unwrap();
    assert_eq!(git.read_file(ORG, 1, "", "logo.png").unwrap().0, png);
    let (list, _) = git.list_files(ORG, 1, "", false, 0).unwrap();
    assert!(list.iter().find(|f| f.path == "logo.png").unwrap().binary);
}

#[test]
fn concurrent_commits_on_the_same_parent_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let git = store(&dir);
    let author = Author::default();
    let base = git.init(ORG, 2, &files(&[("n.txt", "0")]), "init", &author).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let git = git.clone();
                let base = base.clone();
                let author = author.clone();
                s.spawn(move || git.commit(ORG, 2, &[write(&format!("f{i}.txt"), "x")], &format!("c{i}"), &author, Some(&base)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results.iter().filter(|r| matches!(r, Err(StorageError::Conflict { .. }))).count();
    assert_eq!((wins, conflicts), (1, 5), "{results:?}");
    // without an expected parent, concurrent writers all land
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let git = git.clone();
                let author = author.clone();
                s.spawn(move || git.commit(ORG, 2, &[write(&format!("g{i}.txt"), "y")], &format!("g{i}"), &author, None))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let (files, _) = git.list_files(ORG, 2, "", false, 0).unwrap();
    assert_eq!(files.iter().filter(|f| f.path.starts_with('g')).count(), 6, "no write was lost");
}

#[test]
fn bundles_restore_every_version_and_git_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let git = store(&dir);
    let author = Author::default();
    git.init(ORG, 3, &files(&[("a.txt", "1"), ("bin/x", "#!/bin/sh")]), "one", &author).unwrap();
    git.commit(ORG, 3, &[write("a.txt", "2"), write("dir/b.txt", "b")], "two", &author, None).unwrap();
    git.commit(ORG, 3, &[Change::Delete { path: "dir/b.txt".into() }], "three", &author, None).unwrap();
    let (before, _) = git.log(ORG, 3, None, 100).unwrap();
    let bundle = git.bundle(ORG, 3).unwrap();

    // the real git accepts our bundle (a cross-check of the format)
    let path = dir.path().join("app.bundle");
    std::fs::write(&path, &bundle).unwrap();
    if let Ok(out) = std::process::Command::new("git").args(["bundle", "list-heads"]).arg(&path).output() {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&before[0].oid));
    }

    git.delete(ORG, 3).unwrap();
    assert!(matches!(git.head(ORG, 3), Err(StorageError::RepoNotFound)));
    let (head, commits) = git.restore(ORG, 3, &bundle).unwrap();
    assert_eq!((head.as_str(), commits), (before[0].oid.as_str(), 3));
    let (after, _) = git.log(ORG, 3, None, 100).unwrap();
    assert_eq!(after, before);
    assert_eq!(git.read_file(ORG, 3, &before[1].oid, "dir/b.txt").unwrap().0, b"b");
    // a tampered bundle is refused
    let mut bad = bundle.clone();
    let n = bad.len();
    bad[n - 30] ^= 0xff;
    assert!(matches!(git.restore(ORG, 3, &bad), Err(StorageError::InvalidBundle(_))));
}
