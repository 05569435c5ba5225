//! Command line: `serve`, `check`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config;
use crate::server::{Server, reload};

/// A security gateway for HTTP APIs.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate and compile a config file; print every error with its TOML
    /// path (exit 1) and every warning.
    Check {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Manage API keys (in the store the config names).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage users (Portcullis as the identity provider). Passwords are read
    /// from standard input (first line), never from arguments.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage OAuth clients (client credentials grant).
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Print a new admin API token and the SHA-256 for `[admin] token_sha256`.
    AdminToken,
    /// Print a new P-256 signing key (PKCS#8 PEM) for `[auth.tokens] signing_keys`.
    SigningKey,
    /// Run a sample API behind the gateway, with a commented example config.
    Demo {
        /// Where to write the config, certificate and key.
        #[arg(long, default_value = "./portcullis-demo")]
        dir: PathBuf,
        /// HTTPS port on 127.0.0.1.
        #[arg(long, default_value_t = 8443)]
        https_port: u16,
        /// HTTP port on 127.0.0.1 (redirects to HTTPS).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Admin API port on 127.0.0.1.
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
        /// Write the files and compile the config, then exit without serving.
        #[arg(long)]
        dry_run: bool,
        /// Keep rate-limit counts in this Redis (`redis://host:port`), shared
        /// by every instance that uses it; default: in memory.
        #[arg(long)]
        redis: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once and never stored.
    Create {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Owner (becomes the identity's subject).
        #[arg(long)]
        owner: String,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        /// Scopes, comma-separated.
        #[arg(long, default_value = "")]
        scopes: String,
        /// Lifetime (e.g. "30d"); default `auth.api_keys.default_expiry`.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys (never the keys themselves) as JSON.
    List {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Issue a replacement; the old key works for the overlap, then dies.
    Rotate {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Key id.
        id: String,
        /// How long the old key keeps working (e.g. "1h"); default
        /// `auth.api_keys.rotation_overlap`.
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Revoke a key: the next request with it is refused.
    Revoke {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Key id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// Add a client; its secret is printed once.
    Add {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// `client_id`.
        #[arg(long)]
        id: String,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        /// Scopes the client may ask for, comma-separated.
        #[arg(long, default_value = "")]
        scopes: String,
    },
    /// List clients as JSON (never secrets).
    List {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Disable a client: it gets no new tokens.
    Disable {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// `client_id`.
        id: String,
    },
}

fn clients(cmd: ClientsCommand) -> Result<String, String> {
    let config = match &cmd {
        ClientsCommand::Add { config, .. }
        | ClientsCommand::List { config }
        | ClientsCommand::Disable { config, .. } => config,
    };
    let plan = config::load(config).map_err(|e| e.to_string())?;
    let (Some(t), Some(path)) = (&plan.authn.tokens, &plan.store_path) else {
        return Err("this config has no [auth.tokens]".into());
    };
    let store = crate::store::Store::open(path)?;
    let now = crate::unix_now();
    match cmd {
        ClientsCommand::Add {
            id, name, scopes, ..
        } => {
            let scopes: Vec<String> = scopes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let secret = t
                .create_client(&store, &id, &name, scopes.clone(), now)
                .map_err(|e| {
                    if e.contains("UNIQUE") {
                        format!("client {id:?} exists")
                    } else {
                        e
                    }
                })?;
            Ok(serde_json::to_string_pretty(
                &serde_json::json!({"client_id": id, "client_secret": secret, "scopes": scopes}),
            )
            .unwrap_or_default())
        }
        ClientsCommand::List { .. } => {
            Ok(serde_json::to_string_pretty(&store.client_list()?).unwrap_or_default())
        }
        ClientsCommand::Disable { id, .. } => {
            if store.client_disable(&id)? {
                Ok(format!("disabled {id}"))
            } else {
                Err(format!("no client {id:?}"))
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user; the password is read from standard input.
    Add {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Login name.
        #[arg(long)]
        username: String,
        /// Roles, comma-separated.
        #[arg(long, default_value = "")]
        roles: String,
        /// Attributes for policies, a JSON object.
        #[arg(long, default_value = "{}")]
        attributes: String,
    },
    /// List users as JSON (never password hashes).
    List {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Disable a user and end their sessions.
    Disable {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Login name.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Login name.
        username: String,
    },
    /// Set a new password (from standard input) and end the user's sessions.
    Passwd {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Login name.
        username: String,
    },
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn users(cmd: UsersCommand) -> Result<String, String> {
    let config = match &cmd {
        UsersCommand::Add { config, .. }
        | UsersCommand::List { config }
        | UsersCommand::Disable { config, .. }
        | UsersCommand::Enable { config, .. }
        | UsersCommand::Passwd { config, .. } => config,
    };
    let plan = config::load(config).map_err(|e| e.to_string())?;
    let (Some(_), Some(path)) = (&plan.authn.sessions, &plan.store_path) else {
        return Err("this config has no [auth.sessions]".into());
    };
    let store = crate::store::Store::open(path)?;
    let now = crate::unix_now();
    match cmd {
        UsersCommand::Add {
            username,
            roles,
            attributes,
            ..
        } => {
            let roles = roles
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect();
            let attributes: serde_json::Value = serde_json::from_str(&attributes)
                .map_err(|e| format!("--attributes is not JSON: {e}"))?;
            let user = crate::authn::sessions::new_user(
                &username,
                &read_password()?,
                roles,
                attributes,
                now,
            )?;
            store.user_insert(&user).map_err(|e| {
                if e.contains("UNIQUE") {
                    format!("user {username:?} exists")
                } else {
                    e
                }
            })?;
            Ok(serde_json::to_string_pretty(&user).unwrap_or_default())
        }
        UsersCommand::List { .. } => {
            Ok(serde_json::to_string_pretty(&store.user_list()?).unwrap_or_default())
        }
        UsersCommand::Disable { username, .. } | UsersCommand::Enable { username, .. }
            if store.user_by_name(&username)?.is_none() =>
        {
            Err(format!("no user {username:?}"))
        }
        UsersCommand::Disable { username, .. } => {
            store.user_set_disabled(&username, true)?;
            crate::store::shared::block_on(crate::store::shared::end_user(
                &plan, &store, &username,
            ))
            .map(drop)?;
            Ok(format!("disabled {username}; their sessions are ended"))
        }
        UsersCommand::Enable { username, .. } => {
            store.user_set_disabled(&username, false)?;
            Ok(format!("enabled {username}"))
        }
        UsersCommand::Passwd { username, .. } => {
            let hash = crate::authn::sessions::hash_password(&read_password()?)?;
            if store.user_set_password(&username, &hash)? {
                crate::store::shared::block_on(crate::store::shared::end_user(
                    &plan, &store, &username,
                ))
                .map(drop)?;
                Ok(format!(
                    "password changed for {username}; their sessions are ended"
                ))
            } else {
                Err(format!("no user {username:?}"))
            }
        }
    }
}

fn keys(cmd: KeysCommand) -> Result<String, String> {
    let config = match &cmd {
        KeysCommand::Create { config, .. }
        | KeysCommand::List { config }
        | KeysCommand::Rotate { config, .. }
        | KeysCommand::Revoke { config, .. } => config,
    };
    let plan = config::load(config).map_err(|e| e.to_string())?;
    let (Some(k), Some(path)) = (&plan.authn.api_keys, &plan.store_path) else {
        return Err("this config has no [auth.api_keys]".into());
    };
    let store = crate::store::Store::open(path)?;
    let now = crate::unix_now();
    let secs = |s: &str| {
        config::units::parse_duration(s).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    };
    let json = |v: &dyn erased::Json| v.to_json();
    match cmd {
        KeysCommand::Create {
            owner,
            name,
            scopes,
            expires,
            ..
        } => {
            let scopes = scopes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let expires = expires.as_deref().map(secs).transpose()?;
            let new = k.create(&store, &owner, &name, scopes, expires, now)?;
            Ok(json(&new))
        }
        KeysCommand::List { .. } => Ok(json(&store.key_list()?)),
        KeysCommand::Rotate { id, overlap, .. } => {
            let overlap = overlap.as_deref().map(secs).transpose()?;
            let new = k.rotate(&store, &id, overlap, now)?;
            if let Some(until) = store.key_get(&id)?.and_then(|r| r.expires) {
                crate::store::shared::block_on(crate::store::shared::revoke_key(
                    &plan, &id, until,
                ))?;
            }
            Ok(json(&new))
        }
        KeysCommand::Revoke { id, .. } => {
            if store.key_revoke(&id, now)? {
                crate::store::shared::block_on(crate::store::shared::revoke_key(&plan, &id, now))?;
                Ok(format!("revoked {id}"))
            } else if crate::store::shared::block_on(crate::store::shared::revoke_key_again(
                &plan, &store, &id,
            ))? {
                Ok(format!("{id} was revoked; recorded in redis again"))
            } else {
                Err(format!("no active key {id}"))
            }
        }
    }
}

mod erased {
    /// Pretty JSON of anything serializable, behind one object-safe trait.
    pub(super) trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default()
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::install_crypto_provider();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Serve { config } => serve(&config),
        Command::Clients { command } => match clients(command) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::SigningKey => match crate::authn::tokens::new_signing_key() {
            Ok(pem) => {
                print!("{pem}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::AdminToken => match crate::admin::new_token() {
            Ok((token, hash)) => {
                println!("token (give to operators, store nowhere else): {token}");
                println!("[admin] token_sha256 = \"{hash}\"");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Users { command } => match users(command) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Keys { command } => match keys(command) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Demo {
            dir,
            https_port,
            http_port,
            admin_port,
            dry_run,
            redis,
        } => {
            init_tracing("info");
            let rt = match runtime(0) {
                Ok(rt) => rt,
                Err(e) => return fail(format!("cannot start the runtime: {e}")),
            };
            match rt.block_on(crate::demo::run(
                &dir,
                &crate::demo::DemoPorts {
                    https: https_port,
                    http: http_port,
                    admin: admin_port,
                    redis,
                },
                dry_run,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

fn check(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(plan) => {
            for w in &plan.warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: {} routes, {} upstreams, {} CORS policies",
                plan.routes.len(),
                plan.upstreams.len(),
                plan.cors.len()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{errs}");
            eprintln!("{}: {} error(s)", file.display(), errs.0.len());
            ExitCode::FAILURE
        }
    }
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    // One worker: a current-thread runtime does the same work without the
    // work-stealing scheduler's cross-thread synchronisation.
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            b.worker_threads(workers);
        }
        b
    };
    b.enable_all().thread_name("portcullis").build()
}

/// JSON diagnostics on stderr (`RUST_LOG` overrides the configured level).
pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
}

fn serve(path: &std::path::Path) -> ExitCode {
    let plan = match config::load(path) {
        Ok(p) => p,
        Err(errs) => {
            eprintln!("{errs}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&plan.log_level);
    for w in &plan.warnings {
        tracing::warn!(warning = %w, "unsafe or unusual setting");
    }
    let rt = match runtime(plan.worker_threads) {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let path = path.to_path_buf();
    match rt.block_on(serve_until_signal(plan, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Binds, serves, reloads on SIGHUP and file change, and drains on
/// SIGTERM/SIGINT.
pub async fn serve_until_signal(plan: config::Plan, path: PathBuf) -> std::io::Result<()> {
    let server = Server::bind(plan, Some(path)).await?;
    tracing::info!(https = ?server.https_addr(), http = ?server.http_addr(), "portcullis listening");
    let handle = server.handle();
    reload::spawn_sighup(handle.shared());
    reload::spawn_watcher(handle.shared(), Duration::from_secs(1));
    spawn_shutdown_signals(handle.clone());
    server.run().await?;
    tracing::info!("portcullis stopped");
    Ok(())
}

/// SIGTERM and SIGINT start a graceful shutdown.
pub fn spawn_shutdown_signals(handle: crate::server::Handle) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM/SIGINT");
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down: draining in-flight requests");
        handle.shutdown();
    });
}
