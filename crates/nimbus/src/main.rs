//! `nimbus`: the one command-line program of the Nimbus system.
//!
//! It owns argument parsing and wiring only; protocol logic lives in the
//! library crates (`rtmfp`, `rtmfp-tokio`, ...).

mod demo;

use nimbus_bench::{
    engine as bench, group as bench_group, phone as bench_phone, server as bench_server,
};

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
    },
    /// The P2P video phone: log in, call by name, talk (interactive or
    /// scripted with --call/--answer/--seconds/--json).
    Phone(nimbus_phone::PhoneArgs),
    /// A NetGroup member: join a group through a server, publish a
    /// multicast stream into it, play one, post.
    Group(nimbus_group::cli::GroupArgs),
    /// The rendezvous server (Cirrus / FMS replacement): RTMFP with the
    /// Flash profile, introductions, relays, streams, metrics.
    Server(nimbus_server::ServerArgs),
    /// The peer-ID registry web service (reg.cgi-compatible and JSON API).
    Registry(nimbus_registry::RegistryArgs),
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Registry look-ups and updates per second over real HTTP on loopback.
    Registry(nimbus_bench::registry::BenchArgs),
    /// Bulk throughput over loopback UDP (one flow and many flows) and
    /// through the simulator at a given loss.
    Transfer {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Megabytes per run.
        #[arg(long, default_value_t = 200)]
        megabytes: usize,
        /// Flows in the many-flows run.
        #[arg(long, default_value_t = 8)]
        flows: usize,
        /// Loss rate of the simulated run.
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
    },
    /// Sessions opened per second against one responder, and a burst of
    /// simultaneous opens.
    Handshake {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Simultaneous opens in the burst.
        #[arg(long, default_value_t = 1000)]
        burst: usize,
        /// Sequential opens for the rate.
        #[arg(long, default_value_t = 500)]
        sequential: usize,
        /// Crypto profile: plain, or flash (RFC 7425; figures per DH group).
        #[arg(long, default_value = "plain")]
        crypto: String,
    },
    /// Load test of the rendezvous server: a burst of simultaneous
    /// connects, a ramp to many idle sessions (memory per session),
    /// lookups and introductions, with real Flash-profile clients in
    /// worker processes.
    Server(bench_server::BenchServerArgs),
    /// Media latency and loss of a whole call, clean and through the
    /// impairing relay (5 % loss, 50 ms delay by default).
    Phone(bench_phone::BenchPhoneArgs),
    /// How a group multicast's costs grow with the group: publisher and
    /// member upload, join-to-first-frame time, missing fragments.
    Group(bench_group::BenchGroupArgs),
    /// (internal) One worker process of `bench server`.
    #[command(hide = true)]
    ServerWorker(bench_server::WorkerArgs),
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
            json,
            seconds,
            chat_lines,
            dir,
        } => demo::run(demo::DemoArgs {
            json,
            seconds,
            chat_lines,
            dir,
        }),
        Command::Phone(args) => runtime()?.block_on(nimbus_phone::run(args)),
        Command::Group(args) => runtime()?.block_on(nimbus_group::cli::run(args)),
        Command::Server(args) => runtime()?.block_on(nimbus_server::run(args)),
        Command::Registry(args) => runtime()?.block_on(nimbus_registry::run(args)),
        Command::Bench { what } => match what {
            BenchCommand::Registry(args) => {
                runtime()?.block_on(nimbus_bench::registry::bench(args))
            }
            BenchCommand::Transfer {
                json,
                megabytes,
                flows,
                loss,
            } => bench::run_transfer(json, megabytes, flows.max(1), loss),
            BenchCommand::Handshake {
                json,
                burst,
                sequential,
                crypto,
            } => bench::run_handshake(json, burst.max(1), sequential.max(1), &crypto),
            BenchCommand::Server(args) => bench_server::run(args),
            BenchCommand::Phone(args) => bench_phone::run(args),
            BenchCommand::Group(args) => bench_group::run(args),
            BenchCommand::ServerWorker(args) => bench_server::run_worker(args),
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
