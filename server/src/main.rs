use clap::Parser;
use server::config::Config;
use server::Listeners;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is worth a word.
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("error: cannot read .env: {err}");
            return ExitCode::FAILURE;
        }
    }
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(err) if !err.use_stderr() => err.exit(), // --help, --version
        Err(err) => {
            // clap's first line names the flag and its variable; the rest
            // is a hint to try --help.
            let message = err.to_string();
            eprintln!(
                "{}",
                message.lines().next().unwrap_or("error: bad settings")
            );
            return ExitCode::from(2);
        }
    };
    server::logging::init(config.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tokio::spawn(server::memory::give_back_freed(shutdown.clone()));
    match serve(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line that names the setting to change, not a backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let listeners = Listeners::bind(&config)?;
    server::run(listeners, config, shutdown)
        .await?
        .stopped()
        .await
}

/// SIGTERM (systemd, PM2, Kubernetes) and SIGINT (Ctrl-C) start a drain.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "draining: closing connections with 1012");
    shutdown.cancel();
}
