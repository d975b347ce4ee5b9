//! Logging setup for the binaries: `tracing` to stderr, plain or JSON, filtered by `RUST_LOG`
//! (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `format` is `json` or anything else for plain text.
pub fn init(format: &str) {
    init_stderr(format, "info");
}

/// Installs the global subscriber writing to `file` (appending; created if missing) or, without
/// one, to stderr. `level` applies when `RUST_LOG` is unset.
///
/// # Errors
/// The log file cannot be opened; nothing is installed then.
pub fn init_with(format: &str, level: &str, file: Option<&std::path::Path>) -> std::io::Result<()> {
    let Some(path) = file else {
        init_stderr(format, level);
        return Ok(());
    };
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A Mutex<File> is a MakeWriter: each event is written whole, under the lock.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::sync::Mutex::new(file)).with_ansi(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn init_stderr(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    // Colour only on a terminal: logs redirected to files stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
