//! `nimbus`: the one command-line program of the Nimbus system.
//!
//! It owns argument parsing and wiring only; protocol logic lives in the
//! library crates (`rtmfp`, `rtmfp-tokio`, ...).

mod cmd;
mod demo;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "nimbus",
    version,
    about = "RTMFP (RFC 7016) transport, rendezvous server and P2P phone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole system on this machine: a rendezvous server with its
    /// registry, two phones (alice and bob); alice calls bob, they exchange
    /// live test media and chat peer to peer, hang up, and a summary is
    /// printed.
    Demo {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Seconds of media.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Chat lines each phone sends.
        #[arg(long, default_value_t = 3)]
        chat_lines: usize,
        /// Directory for the registry database and the received FLV files
        /// (default: a new one under the temporary directory).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Web phones instead: alice's page on ADDR (default
        /// 127.0.0.1:8935), bob's on the next port; watch the call live in a
        /// browser (until Ctrl-C).
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = nimbus_phone::cli::DEFAULT_WEB_ADDR)]
        web: Option<String>,
        /// With --web: open both pages in the system browser.
        #[arg(long, requires = "web")]
        open: bool,
    },
    /// The P2P video phone: log in, call by name, talk (interactive or
    /// scripted with --call/--answer/--seconds/--json).
    Phone(cmd::phone::PhoneCli),
    /// A NetGroup member: join a group through a server, publish a
    /// multicast stream into it, play one, post.
    Group(cmd::group::GroupArgs),
    /// The rendezvous server (Cirrus / FMS replacement): RTMFP with the
    /// Flash profile, introductions, relays, streams, metrics.
    Server(cmd::server::ServerArgs),
    /// The peer-ID registry web service (reg.cgi-compatible and JSON API).
    Registry(cmd::registry::RegistryArgs),
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        what: cmd::bench::BenchCommand,
    },
}

fn main() {
    // errors are for users: one line with its causes, no backtrace
    if let Err(e) = run(Cli::parse()) {
        eprintln!("nimbus: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            dir,
            web: Some(web),
            open,
            ..
        } => runtime()?.block_on(async {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("nimbus-demo-web-{}", std::process::id()))
            });
            nimbus_web::demo::run(nimbus_web::demo::options(&web, dir, open).await?).await
        }),
        Command::Demo {
            json,
            seconds,
            chat_lines,
            dir,
            ..
        } => demo::run(demo::DemoArgs {
            json,
            seconds,
            chat_lines,
            dir,
        }),
        Command::Phone(args) => runtime()?.block_on(cmd::phone::run(args)),
        Command::Group(args) => runtime()?.block_on(cmd::group::run(args)),
        Command::Server(args) => runtime()?.block_on(cmd::server::run(args)),
        Command::Registry(args) => runtime()?.block_on(cmd::registry::run(args)),
        Command::Bench { what } => cmd::bench::run(what),
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
