//! Standalone registry server: `nimbus-registry --listen ADDR --db URL`.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "nimbus-registry",
    version,
    about = "Nimbus peer-ID registry (reg.cgi-compatible, JSON API)"
)]
struct Cli {
    #[command(flatten)]
    args: nimbus_registry::RegistryArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match nimbus_registry::run(cli.args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nimbus-registry: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
