//! Command line: `sfu-gateway run` and `sfu-gateway check-config`.

use crate::config::{Config, ConfigError, LogFormat};
use crate::media::Fragments;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code of an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

/// sfu-gateway: bridges SIP and RTMP into the Cloudflare Realtime SFU, and back out.
#[derive(Debug, Parser)]
#[command(name = "sfu-gateway", version, about)]
pub struct Cli {
    /// Configuration file (TOML); see gateway.example.toml.
    #[arg(long, global = true, value_name = "FILE", env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway.
    Run,
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
}

fn load(cli: &Cli) -> Result<(Config, Fragments), ConfigError> {
    let config = Config::load(cli.config.as_deref())?;
    config.validate()?;
    let fragments = Fragments::load(config.pipelines.dir.as_deref())?;
    Ok((config, fragments))
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, fragments) = match load(&cli) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config.to_redacted_toml());
            println!("\n# pipeline fragments");
            for (name, fragment) in fragments.summary() {
                println!("# {name} ({:?}): {}", fragment.source, fragment.description);
            }
            println!("# configuration OK");
            ExitCode::SUCCESS
        }
        Command::Run => {
            let format = cli.log_format.unwrap_or(config.log.format);
            crate::logging::init(format, &config.log.level);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(crate::server::run(config, fragments))
        }
    }
}
