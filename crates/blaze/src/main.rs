//! `blaze`: the one binary of Blaze Service.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use blaze::{Role, roles};
use blaze_kit::{Config, ConfigSource};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "blaze", version, about = "Blaze Service: the hosted backend of the Blaze AI app builder")]
struct Cli {
    /// TOML config file (defaults < file < BLAZE_* environment).
    #[arg(long, global = true, env = "BLAZE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run roles: `--role all` or e.g. `--role edge,identity`.
    Serve {
        #[arg(long, default_value = "all")]
        role: String,
    },
    /// Apply database migrations (creates the database when missing).
    Migrate,
    /// Development: migrate, seed a dev user and token, run every role.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the benchmarks of DESIGN §11 against a private copy of the system
    /// and write the report (docs/benchmarks.md).
    Bench {
        /// Only these benchmarks (all when none): edge, create, artifacts,
        /// ttft, preview, sse, load. `blaze bench load` is the load test.
        only: Vec<String>,
        /// Also write the report here (default: docs/benchmarks.md when
        /// every benchmark runs; a partial run only prints).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Shorter runs, as a smoke check of the benchmarks.
        #[arg(long)]
        quick: bool,
        /// Load test: concurrent users.
        #[arg(long)]
        users: Option<usize>,
        /// Load test: duration in seconds.
        #[arg(long)]
        seconds: Option<f64>,
    },
    /// Operator tools for the job queue.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Operator tools for app repositories.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// Print the edge's OpenAPI document (what it serves at `/openapi.json`)
    /// without starting anything.
    Openapi {
        /// Write it to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the configuration reference (Markdown): every setting, its
    /// variable, default and description.
    ConfigReference {
        /// Write it to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Start the whole system with dev defaults (state under ./var).
    Up {
        #[arg(long, default_value = "var")]
        var: PathBuf,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List the parked jobs (failed every attempt) with their last error.
    Parked,
    /// Put parked jobs back on the queue as new attempts, once their cause is fixed.
    Replay {
        /// Only this job (default: every parked job).
        #[arg(long)]
        job: Option<uuid::Uuid>,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Rebuild an app's git repository from the bundle in object storage
    /// (after losing the git volume). Run it where the artifacts role's
    /// git root is mounted.
    Restore {
        /// Organisation id (uuid).
        #[arg(long)]
        org: uuid::Uuid,
        /// App id.
        #[arg(long)]
        app: i64,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint an API token for a member of an organisation.
    Mint {
        /// User id (uuid) or external subject.
        #[arg(long)]
        user: String,
        /// Organisation id (uuid) or slug.
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "member")]
        role: String,
        /// Lifetime, e.g. `30d`, `12h`, `3600s`.
        #[arg(long, default_value = "30d")]
        ttl: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Print a new Ed25519 signing key (hex) and its public verify entry.
    Keygen {
        #[arg(long, default_value_t = 1)]
        id: u32,
    },
}

/// Generated text to stdout or, when `out` is given, to that file.
fn emit(text: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display())),
        None => {
            use std::io::Write;
            Ok(std::io::stdout().write_all(text.as_bytes())?)
        }
    }
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(Config::load(&ConfigSource { file: path, env: None })?)
}

fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().with_context(|| format!("bad ttl {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("bad ttl unit in {s:?} (use s, m, h or d)"),
    };
    Ok(Duration::from_secs(secs))
}

async fn serve(cfg: Config, role: &str) -> anyhow::Result<()> {
    let roles = Role::parse_list(role)?;
    blaze_kit::telemetry::init(&cfg.telemetry);
    let mut mesh = roles::start(cfg, &roles).await?;
    for (role, addr) in &mesh.addrs {
        tracing::info!(role = role.name(), %addr, "role started");
    }
    let shutdown = mesh.shutdown_token();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    let result = mesh.wait().await;
    blaze_kit::telemetry::shutdown();
    result
}

async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let applied = blaze::dev::migrate_database(cfg).await?;
    println!("migrations applied: {applied}");
    Ok(())
}

async fn dev_up(cfg: Config, var: &std::path::Path) -> anyhow::Result<()> {
    let cfg = blaze::dev::prepare(cfg, var)?;
    migrate(&cfg).await?;
    // The dev user: provisioned like any first sign-in, owner of its org.
    let db = blaze_db::Db::connect(&cfg.database).await?;
    let claimed = blaze_identity::principal::Claimed {
        external_sub: "dev-user".into(),
        email: Some("dev@local.blaze".into()),
        display_name: Some("Dev User".into()),
    };
    let (principal, user) = blaze_identity::principal::resolve_claimed(&db, &claimed, 0).await.map_err(|e| anyhow::anyhow!(e.message))?;
    let keys = roles::keys(&cfg)?;
    let org: uuid::Uuid = principal.default_org.parse()?;
    let minted = blaze_identity::api_tokens::mint(
        &db,
        &keys,
        blaze_identity::api_tokens::MintRequest {
            org_id: org,
            user_id: user.id,
            role: "owner",
            ttl: Duration::from_secs(30 * 86_400),
            description: "blaze dev up",
            minted_by: None,
        },
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.message))?;
    blaze::dev::write_secret(&var.join("dev/token"), &minted.token)?;
    let roles: Vec<Role> = Role::ALL.to_vec();
    blaze_kit::telemetry::init(&cfg.telemetry);
    // Until a real provider is configured, chats talk to the demo model.
    let mut cfg = cfg;
    let _demo = if cfg.llm.providers.is_empty() && cfg.llm.demo_base_url.is_empty() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let demo = blaze_llm::fake::FakeModel::serve(listener, Default::default())?;
        cfg.llm.demo_base_url = demo.base_url();
        cfg.llm.allow_private_base_urls = true;
        Some(demo)
    } else {
        None
    };
    let demo_url = cfg.llm.demo_base_url.clone();
    let mut mesh = roles::start(cfg, &roles).await?;
    println!();
    println!("Blaze Service is running (dev mode).");
    for (role, addr) in &mesh.addrs {
        println!("  {:<14} {}", role.name(), addr);
    }
    if !demo_url.is_empty() {
        println!("  demo model     {demo_url}");
    }
    println!("  dev user       dev-user (org {})", principal.default_org);
    println!("  dev token      {}/dev/token", var.display());
    println!();
    println!("export BLAZE_TOKEN=$(cat {}/dev/token)", var.display());
    println!();
    let shutdown = mesh.shutdown_token();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    mesh.wait().await
}

async fn mint(cfg: &Config, user: &str, org: &str, role: &str, ttl: &str, description: &str) -> anyhow::Result<()> {
    let keys = roles::keys(cfg)?;
    let db = blaze_db::Db::connect(&cfg.database).await?;
    let ttl = parse_ttl(ttl)?;
    let tx = db.global().await?;
    let user_id = match uuid::Uuid::parse_str(user) {
        Ok(id) => id,
        Err(_) => blaze_db::tenancy::upsert_user(&tx, user, None, None).await?.id,
    };
    tx.commit().await?;
    let tx = db.as_user(user_id).await?;
    let orgs = blaze_db::tenancy::orgs_of_user(&tx, user_id).await?;
    tx.commit().await?;
    let org = orgs
        .iter()
        .find(|o| o.id.to_string() == org || o.slug == org)
        .with_context(|| format!("user {user} is not an active member of organization {org}"))?;
    let minted = blaze_identity::api_tokens::mint(
        &db,
        &keys,
        blaze_identity::api_tokens::MintRequest { org_id: org.id, user_id, role, ttl, description, minted_by: None },
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.message))?;
    println!("{}", minted.token);
    eprintln!("token {} for user {} in {} ({}), expires {}", minted.row.id, user_id, org.slug, role, minted.row.expires_at);
    Ok(())
}

async fn jobs(cfg: &Config, command: JobsCommand) -> anyhow::Result<()> {
    use blaze_execution::ops;
    let broker = ops::broker(cfg).await?;
    match command {
        JobsCommand::Parked => {
            let parked = ops::parked_jobs(&broker).await?;
            for p in &parked {
                let (job, org) = p.job.as_ref().map(|j| (j.job_id.to_string(), j.org_id.to_string())).unwrap_or(("-".into(), "-".into()));
                println!("{job}\torg {org}\t{kind}\t{attempts} attempts\t{error}", kind = p.kind, attempts = p.attempts, error = p.error);
            }
            eprintln!("{} parked", parked.len());
        }
        JobsCommand::Replay { job } => {
            let db = blaze_db::Db::connect(&cfg.database).await?;
            let replayed = ops::replay_parked(&broker, &db, job).await?;
            for id in &replayed {
                println!("{id}");
            }
            eprintln!("{} replayed", replayed.len());
            if job.is_some() && replayed.is_empty() {
                anyhow::bail!("job {} is not parked, or was cancelled or finished since", job.unwrap_or_default());
            }
        }
    }
    broker.close().await;
    Ok(())
}

async fn restore_repo(cfg: Config, org: uuid::Uuid, app: i64) -> anyhow::Result<()> {
    let deps = blaze_artifacts::Deps::new(std::sync::Arc::new(cfg))?;
    let org = org.to_string();
    let bundle = deps.objects.get(&blaze_artifacts::bundle_key(&org, app)).await.context("no bundle stored for this app")?;
    let (head, commits) = tokio::task::spawn_blocking(move || deps.git.restore(&org, app, &bundle)).await??;
    println!("restored {commits} commits, main at {head}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { role } => serve(load(cli.config)?, &role).await,
        Command::Migrate => migrate(&load(cli.config)?).await,
        Command::Jobs { command } => jobs(&load(cli.config)?, command).await,
        Command::Repo { command: RepoCommand::Restore { org, app } } => restore_repo(load(cli.config)?, org, app).await,
        Command::Bench { out, quick, only, users, seconds } => {
            let out = out.or_else(|| only.is_empty().then(|| PathBuf::from("docs/benchmarks.md")));
            blaze::bench::run(load(cli.config)?, blaze::bench::BenchOptions { out, quick, only, users, seconds }).await
        }
        Command::Dev { command: DevCommand::Up { var } } => dev_up(load(cli.config)?, &var).await,
        Command::Token { command: TokenCommand::Mint { user, org, role, ttl, description } } => {
            mint(&load(cli.config)?, &user, &org, &role, &ttl, &description).await
        }
        Command::Openapi { out } => emit(&blaze_edge::openapi::document()?, out),
        Command::ConfigReference { out } => emit(&blaze_kit::config::reference::markdown()?, out),
        Command::Token { command: TokenCommand::Keygen { id } } => {
            let private = blaze_auth::KeySet::new_private_key_hex();
            let keys = blaze_auth::KeySet::from_config(&private, id, &[])?;
            println!("BLAZE_AUTH_SIGNING_KEY={private}");
            println!("BLAZE_AUTH_SIGNING_KEY_ID={id}");
            println!("# verify-only roles: BLAZE_AUTH_VERIFY_KEYS={}", keys.public_entry().expect("has key"));
            Ok(())
        }
    }
}
