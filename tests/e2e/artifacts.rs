//! The artifacts role over gRPC (internal: service tokens): repositories from
//! templates, change sets, versions, diffs, reverts, CAS, archives, objects
//! against a signature-checking S3 server, and disaster recovery.

use std::time::Duration;

use blaze::Role;
use blaze_proto::artifacts::{
    self as pb, file_change::Change, object_service_client::ObjectServiceClient, repository_service_client::RepositoryServiceClient,
};
use blaze_testkit::{MeshOptions, TestMesh};
use tonic::Code;

fn mesh_options() -> MeshOptions {
    MeshOptions { roles: vec![Role::Artifacts], ..Default::default() }
}

fn repo(org: &str, app: i64) -> Option<pb::RepoRef> {
    Some(pb::RepoRef { organization_id: org.into(), app_id: app })
}

fn write(path: &str, content: &str) -> pb::FileChange {
    pb::FileChange { change: Some(Change::Write(pb::FileWrite { path: path.into(), content: content.as_bytes().to_vec() })) }
}

const ORG_A: &str = "0190a1b2-0000-7000-8000-00000000000a";
const ORG_B: &str = "0190a1b2-0000-7000-8000-00000000000b";

#[tokio::test(flavor = "multi_thread")]
async fn repositories_from_templates_commit_diff_revert_and_reject_hostile_paths() {
    let mesh = TestMesh::start_with(mesh_options()).await;
    let mut repos = RepositoryServiceClient::new(mesh.service_channel(Role::Artifacts));
    let init = repos
        .init_repo(pb::InitRepoRequest { repo: repo(ORG_A, 1), template_id: String::new(), message: String::new(), author: None })
        .await
        .unwrap()
        .into_inner()
        .commit_hash;
    assert_eq!(init.len(), 40);
    let files = repos.list_files(pb::ListFilesRequest { repo: repo(ORG_A, 1), ..Default::default() }).await.unwrap().into_inner().files;
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for expected in ["AI_RULES.md", "package.json", "package-lock.json", "index.html", "src/App.tsx", "src/main.tsx", "vite.config.ts"] {
        assert!(paths.contains(&expected), "template lacks {expected}: {paths:?}");
    }
    let app_tsx = repos
        .read_file(pb::ReadFileRequest { repo: repo(ORG_A, 1), revision: String::new(), path: "src/App.tsx".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(String::from_utf8_lossy(&app_tsx.content).contains("<Route path=\"/\""));

    let second = repos
        .commit(pb::CommitRequest {
            repo: repo(ORG_A, 1),
            changes: vec![
                write("src/App.tsx", "export default function App() { return null }\n"),
                write("src/lib/deep/util.ts", "export const x = 1;\n"),
                pb::FileChange { change: Some(Change::Delete(pb::FileDelete { path: "README.md".into() })) },
                pb::FileChange {
                    change: Some(Change::Rename(pb::FileRename {
                        from: "src/components/Card.tsx".into(),
                        to: "src/components/Panel.tsx".into(),
                    })),
                },
            ],
            message: "[blaze] second".into(),
            author: Some(pb::Author { name: "Alice".into(), email: "alice@example.test".into() }),
            expected_parent: init.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.parent_hash, init);
    assert!(second.changed_paths.contains(&"src/lib/deep/util.ts".to_owned()));

    let at = |rev: &str, path: &str| {
        let mut repos = repos.clone();
        let (rev, path) = (rev.to_owned(), path.to_owned());
        async move { repos.read_file(pb::ReadFileRequest { repo: repo(ORG_A, 1), revision: rev, path }).await }
    };
    assert!(String::from_utf8_lossy(&at(&init, "src/App.tsx").await.unwrap().into_inner().content).contains("Route"));
    assert_eq!(at("main", "src/lib/deep/util.ts").await.unwrap().into_inner().content, b"export const x = 1;\n");
    assert_eq!(at("main", "README.md").await.unwrap_err().code(), Code::NotFound);

    let diff = repos
        .diff(pb::DiffRequest { repo: repo(ORG_A, 1), from: init.clone(), to: second.commit_hash.clone() })
        .await
        .unwrap()
        .into_inner()
        .files;
    let statuses: Vec<(&str, &str)> = diff.iter().map(|d| (d.status.as_str(), d.path.as_str())).collect();
    assert!(statuses.contains(&("renamed", "src/components/Panel.tsx")), "{statuses:?}");
    assert!(statuses.contains(&("deleted", "README.md")), "{statuses:?}");
    assert!(statuses.contains(&("modified", "src/App.tsx")), "{statuses:?}");

    let reverted = repos
        .revert(pb::RevertRequest { repo: repo(ORG_A, 1), target: init.clone(), message: String::new(), author: None })
        .await
        .unwrap()
        .into_inner();
    assert!(!reverted.unchanged);
    let log =
        repos.list_versions(pb::ListVersionsRequest { repo: repo(ORG_A, 1), ..Default::default() }).await.unwrap().into_inner().commits;
    let messages: Vec<&str> = log.iter().map(|c| c.message.trim_end()).collect();
    assert_eq!(messages, vec![format!("Reverted all changes back to version {init}").as_str(), "[blaze] second", "Init Blaze app"]);
    assert_eq!(log[1].author_email, "alice@example.test");

    // the old parent is no longer the tip: CAS refuses
    let err = repos
        .commit(pb::CommitRequest {
            repo: repo(ORG_A, 1),
            changes: vec![write("x.txt", "x")],
            message: "late".into(),
            author: None,
            expected_parent: init.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    for hostile in ["../x", "/etc/passwd", ".git/config", "src/../../y"] {
        let err = repos
            .commit(pb::CommitRequest {
                repo: repo(ORG_A, 1),
                changes: vec![write(hostile, "x")],
                message: "evil".into(),
                author: None,
                expected_parent: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{hostile}");
    }
    let big = pb::FileChange { change: Some(Change::Write(pb::FileWrite { path: "big.bin".into(), content: vec![7; 3 * 1024 * 1024] })) };
    let err = repos.commit(pb::CommitRequest { repo: repo(ORG_A, 1), changes: vec![big], ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("file is too large"), "{}", err.message());

    // organisation B sees nothing of A's repository
    let err = repos
        .read_file(pb::ReadFileRequest { repo: repo(ORG_B, 1), revision: String::new(), path: "src/App.tsx".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let log =
        repos.list_versions(pb::ListVersionsRequest { repo: repo(ORG_B, 1), ..Default::default() }).await.unwrap().into_inner().commits;
    assert!(log.is_empty());

    // user tokens can not call internal RPCs at all
    let user = blaze_auth::tokens::mint_internal(
        &mesh.keys,
        &blaze_auth::Principal { user_id: "u".into(), orgs: vec![], workspaces: vec![], default_org: String::new(), epoch: 0 },
        Duration::from_secs(60),
    )
    .unwrap();
    let mut plain = RepositoryServiceClient::new(mesh.channel(Role::Artifacts));
    let err = plain.get_head(blaze_testkit::authed(pb::GetHeadRequest { repo: repo(ORG_A, 1) }, &user)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_commits_on_the_same_parent_one_wins() {
    let mesh = TestMesh::start_with(mesh_options()).await;
    let mut repos = RepositoryServiceClient::new(mesh.service_channel(Role::Artifacts));
    let base = repos.init_repo(pb::InitRepoRequest { repo: repo(ORG_A, 2), ..Default::default() }).await.unwrap().into_inner().commit_hash;
    let attempt = |name: &'static str| {
        let mut repos = repos.clone();
        let base = base.clone();
        async move {
            repos
                .commit(pb::CommitRequest {
                    repo: repo(ORG_A, 2),
                    changes: vec![write(name, name)],
                    message: name.into(),
                    author: None,
                    expected_parent: base,
                })
                .await
        }
    };
    let (a, b) = tokio::join!(attempt("a.txt"), attempt("b.txt"));
    let results = [a, b];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(results.iter().filter(|r| r.as_ref().is_err_and(|e| e.code() == Code::Aborted)).count(), 1);
}

async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/stderr", "-w", "%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl");
    (String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_round_trip_multipart_and_presigned_urls_are_checked() {
    let mesh = TestMesh::start_with(mesh_options()).await;
    let mut objects = ObjectServiceClient::new(mesh.service_channel(Role::Artifacts))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

    // round trip, including a multipart-sized object (> 5 MiB)
    let big: Vec<u8> = (0..6 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let put = objects
        .put_attachment(pb::PutAttachmentRequest {
            organization_id: ORG_A.into(),
            app_id: 1,
            name: "../../big file.bin".into(),
            content_type: String::new(),
            content: big.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(put.key.starts_with(&format!("orgs/{ORG_A}/apps/1/attachments/")) && put.key.ends_with("-big_file.bin"), "{}", put.key);
    let got = objects
        .get_attachment(pb::GetAttachmentRequest { organization_id: ORG_A.into(), key: put.key.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content.len(), big.len());
    assert!(got.content == big);
    // organisation B can not read it
    let err = objects.get_attachment(pb::GetAttachmentRequest { organization_id: ORG_B.into(), key: put.key.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let too_big = vec![0u8; 11 * 1024 * 1024];
    let err = objects
        .put_attachment(pb::PutAttachmentRequest {
            organization_id: ORG_A.into(),
            app_id: 1,
            name: "x".into(),
            content_type: String::new(),
            content: too_big,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // presigned PUT then GET with curl
    let presign = |key: &str, method: &str, expiry: i32| {
        let mut objects = objects.clone();
        let (key, method) = (key.to_owned(), method.to_owned());
        async move {
            objects
                .presign_object(pb::PresignObjectRequest { organization_id: ORG_A.into(), key, method, expiry_seconds: expiry })
                .await
                .map(|r| r.into_inner().url)
        }
    };
    let put_url = presign("builds/site/index.html", "PUT", 60).await.unwrap();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), "<h1>hi</h1>").unwrap();
    let (status, body) = curl(&["-X", "PUT", "--upload-file", tmp.path().to_str().unwrap(), &put_url]).await;
    assert_eq!(status, 200, "{body}");
    let get_url = presign("builds/site/index.html", "GET", 60).await.unwrap();
    let (status, body) = curl(&[&get_url]).await;
    assert_eq!((status, body.as_str()), (200, "<h1>hi</h1>"));

    // a tampered signature and an expired URL are refused by the server
    let tampered = {
        let mut u = url::Url::parse(&get_url).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    if k == "X-Amz-Signature" {
                        format!("{}{}", &v[..v.len() - 1], if v.ends_with('0') { '1' } else { '0' })
                    } else {
                        v.to_string()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    };
    let (status, _) = curl(&[&tampered]).await;
    assert_eq!(status, 403, "tampered presigned URL accepted");
    let other_key = get_url.replace("index.html", "secret.html");
    let (status, _) = curl(&[&other_key]).await;
    assert_eq!(status, 403, "a signature is bound to its key");
    let short = presign("builds/site/index.html", "GET", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = curl(&[&short]).await;
    assert_eq!(status, 403, "expired presigned URL accepted");
    // keys can not escape the organisation's prefix
    assert_eq!(presign("../other-org/x", "GET", 60).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_repository_is_restored_from_its_bundle_with_every_version() {
    let mesh = TestMesh::start_with(mesh_options()).await;
    let mut repos = RepositoryServiceClient::new(mesh.service_channel(Role::Artifacts));
    repos.init_repo(pb::InitRepoRequest { repo: repo(ORG_A, 3), ..Default::default() }).await.unwrap();
    for i in 0..3 {
        repos
            .commit(pb::CommitRequest {
                repo: repo(ORG_A, 3),
                changes: vec![write("src/n.ts", &format!("export const n = {i};\n"))],
                message: format!("v{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let before =
        repos.list_versions(pb::ListVersionsRequest { repo: repo(ORG_A, 3), ..Default::default() }).await.unwrap().into_inner().commits;
    assert_eq!(before.len(), 4);

    // the volume is lost
    let dir = mesh.cfg.git.root.join(ORG_A).join("3.git");
    std::fs::remove_dir_all(&dir).unwrap();
    let err =
        repos.read_file(pb::ReadFileRequest { repo: repo(ORG_A, 3), revision: String::new(), path: "src/n.ts".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let restored = repos.restore_repo(pb::RestoreRepoRequest { repo: repo(ORG_A, 3) }).await.unwrap().into_inner();
    assert_eq!((restored.commit_hash.as_str(), restored.commits), (before[0].oid.as_str(), 4));
    let after =
        repos.list_versions(pb::ListVersionsRequest { repo: repo(ORG_A, 3), ..Default::default() }).await.unwrap().into_inner().commits;
    assert_eq!(after, before);
    for (i, version) in before.iter().take(3).rev().enumerate() {
        let f = repos
            .read_file(pb::ReadFileRequest { repo: repo(ORG_A, 3), revision: version.oid.clone(), path: "src/n.ts".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(String::from_utf8(f.content).unwrap(), format!("export const n = {i};\n"));
    }
    // and the archive of a version is downloadable
    let mut repos2 = repos.clone();
    let archive = repos2
        .archive_commit(pb::ArchiveCommitRequest { repo: repo(ORG_A, 3), revision: before[2].oid.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(archive.commit_hash, before[2].oid);
    let bytes = reqwest::get(&archive.url).await.unwrap().bytes().await.unwrap();
    assert!(bytes.len() > 1000 && bytes[0] == 0x1f && bytes[1] == 0x8b, "a gzip archive");
}
