//! Runs the registry load generator without the `nimbus` CLI:
//! `cargo run --release -p nimbus-registry --example registry_bench -- --json`.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "registry_bench")]
struct Cli {
    #[command(flatten)]
    args: nimbus_registry::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nimbus_registry::bench(Cli::parse().args).await
}
