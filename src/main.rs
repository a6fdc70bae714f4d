//! The `linkgate` command line. It parses arguments and calls into the library; no behaviour
//! lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Parser, Subcommand};
use linkgate::config::Config;
use linkgate::link::admin::{self, AdminError, Tools};
use linkgate::server::{self, RunOptions};

/// mimalloc: fewer instructions per allocation than glibc's malloc on the proxy path (see
/// bench/README.md), and it returns freed memory to the system.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A reverse-proxy authentication gate that enforces the Magento.com account link.
#[derive(Debug, Parser)]
#[command(name = "linkgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, env = "LINKGATE_CONFIG", default_value = "config.toml")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve: proxy requests to the upstreams, gated by sign-in.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Take the listening sockets over from a running linkgate (then send the old
        /// process SIGQUIT). See README, "Upgrading without dropping connections".
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration; exit 0, or 1 with `file:line:col: key: reason` lines.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One-command local demo on 127.0.0.1: development Magento.com and
    /// accounts.magento.cloud providers, a sample application, and linkgate in front of it
    /// (in-memory store, linking enforced). Prints the URL to open; stop with Ctrl-C.
    Demo {
        /// linkgate's port: the URL to open.
        #[arg(long, default_value_t = 4180)]
        port: u16,
        /// The development Magento.com (SSO) provider's port.
        #[arg(long, default_value_t = 4181)]
        sso_port: u16,
        /// The development accounts.magento.cloud provider's port.
        #[arg(long, default_value_t = 4182)]
        accounts_port: u16,
        /// The sample application's port.
        #[arg(long, default_value_t = 4183)]
        app_port: u16,
        /// linkgate's admin listener port (health, metrics).
        #[arg(long, default_value_t = 4190)]
        admin_port: u16,
    },
    /// Operator tools over the link registry (needs `session.store = "redis"`).
    ///
    /// Exit 0 on success, 1 when a link is not found or an import had conflicts or invalid
    /// lines, 2 when the tool could not run (configuration, store, files).
    Links {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: LinksAction,
    },
    /// Print a fresh random cookie secret (32 bytes, base64).
    Secret,
}

/// `linkgate links ...`. Keys are `issuer|subject`, as `list` prints them.
#[derive(Debug, Subcommand)]
enum LinksAction {
    /// One line per link, sorted: account key, SSO key, account email, SSO email, created
    /// (RFC 3339), tab-separated.
    List,
    /// Print one link as JSON.
    Show {
        /// An account key or an SSO key.
        id: String,
    },
    /// Remove a link (both directions) and end the sessions of its SSO identity.
    Unlink {
        /// An account key or an SSO key.
        id: String,
    },
    /// Write every link as JSON Lines, sorted by account key.
    Export {
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Insert links from JSON Lines (as `export` writes them); existing links are never
    /// changed.
    Import {
        /// The file to read; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(config)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Warns when Redis, if it answers, may evict links (`maxmemory-policy` `allkeys-*`). A
/// Redis that does not answer is a note, not a failure: `check` validates the file.
fn check_eviction(app: &linkgate::app::App) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(_) => return,
    };
    match runtime.block_on(app.store.eviction_warning()) {
        Ok(Some(warning)) => eprintln!("warning: {warning}"),
        Ok(None) => {}
        Err(e) => eprintln!("note: could not check Redis' maxmemory-policy: {e}"),
    }
}

/// Runs a `links` action on a current-thread runtime of its own (it never runs inside
/// Pingora) and turns the outcome into the exit status.
fn links(config: &Config, action: LinksAction) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("linkgate links: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(links_action(config, action)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("linkgate links: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// One `links` action; `Ok(false)` when it ran but found problems (exit 1).
async fn links_action(config: &Config, action: LinksAction) -> Result<bool, AdminError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Open the input first: a mistyped file name fails before the store is touched.
    let input = match &action {
        LinksAction::Import { file: Some(path) } if path.as_os_str() != "-" => {
            let file = std::fs::File::open(path)
                .map_err(AdminError::io(format!("cannot read {}", path.display())))?;
            Some((
                Box::new(std::io::BufReader::new(file)) as Box<dyn std::io::BufRead>,
                path.display().to_string(),
            ))
        }
        LinksAction::Import { .. } => Some((
            Box::new(std::io::stdin().lock()) as Box<dyn std::io::BufRead>,
            "stdin".to_string(),
        )),
        _ => None,
    };
    let tools = Tools::connect(config).await?;
    match action {
        LinksAction::List => {
            admin::list(&tools, &mut out).await?;
        }
        LinksAction::Show { id } => {
            admin::show(&tools, &id, &mut out).await?;
        }
        LinksAction::Unlink { id } => {
            admin::unlink(&tools, &id, &mut out).await?;
        }
        LinksAction::Export { output: None } => {
            admin::export(&tools, &mut out).await?;
        }
        LinksAction::Export { output: Some(path) } => {
            // Written only once every link was read: a failed export leaves no partial file.
            let mut buf = Vec::new();
            let n = admin::export(&tools, &mut buf).await?;
            std::fs::write(&path, buf)
                .map_err(AdminError::io(format!("cannot write {}", path.display())))?;
            eprintln!(
                "exported {n} link{} to {}",
                if n == 1 { "" } else { "s" },
                path.display()
            );
        }
        LinksAction::Import { .. } => {
            if let Some((mut input, name)) = input {
                let report = admin::import(&tools, &mut input, &name, &mut out).await?;
                return Ok(report.is_clean());
            }
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(&config.config) {
            Ok(c) => {
                let summary = format!(
                    "{}: ok ({} upstream{}, store {})",
                    config.config.display(),
                    c.upstreams.len(),
                    if c.upstreams.len() == 1 { "" } else { "s" },
                    c.session.store.as_str(),
                );
                let unnamed = c.sso.is_some()
                    && c.server.public_url.is_none()
                    && c.upstreams.iter().all(|u| u.hosts.is_empty());
                let redis = c.session.store == linkgate::config::StoreKind::Redis;
                // What `run` builds before serving: upstream hosts resolved, page templates
                // compiled, providers prepared.
                let app = match linkgate::app::App::new(c) {
                    Ok(app) => app,
                    Err(e) => {
                        eprintln!("{}: {e}", config.config.display());
                        return ExitCode::FAILURE;
                    }
                };
                if unnamed {
                    eprintln!(
                        "warning: server.public_url is not set and no upstream lists hosts: sign-in starts only when the gate is opened by its own address (e.g. http://127.0.0.1:4180); set public_url"
                    );
                }
                if redis {
                    check_eviction(&app);
                }
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config, upgrade } => {
            let config = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            linkgate::logging::init(&config.log);
            match server::run(config, RunOptions { upgrade }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("linkgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            port,
            sso_port,
            accounts_port,
            app_port,
            admin_port,
        } => {
            let opts = linkgate::demo::DemoOptions {
                port,
                sso_port,
                accounts_port,
                app_port,
                admin_port,
            };
            match linkgate::demo::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("linkgate demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Links { config, action } => match load(&config.config) {
            Ok(c) => links(&c, action),
            Err(_) => ExitCode::from(2),
        },
        Command::Secret => {
            let bytes: [u8; 32] = rand::random();
            println!(
                "{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            );
            ExitCode::SUCCESS
        }
    }
}
