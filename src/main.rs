//! The `linkgate` command line. It parses arguments and calls into the library; no behaviour
//! lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Parser, Subcommand};
use linkgate::config::Config;
use linkgate::server::{self, RunOptions};

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
    /// Print a fresh random cookie secret (32 bytes, base64).
    Secret,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(&config.config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} upstream{}, store {})",
                    config.config.display(),
                    c.upstreams.len(),
                    if c.upstreams.len() == 1 { "" } else { "s" },
                    c.session.store.as_str(),
                );
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
