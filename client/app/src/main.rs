//! `zeo-app`: the binary. Parses the configuration, installs logging, and runs
//! [`zeo_app::run`] until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use zeo_app::config::Config;

/// `EX_USAGE`: the configuration is invalid.
const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    zeo_app::telemetry::init(config.log_format);
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "invalid configuration");
        return ExitCode::from(EXIT_USAGE);
    }
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signals.cancel();
    });
    match zeo_app::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "zeo-app failed");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop zeo-app with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
