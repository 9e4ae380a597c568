//! `nimbus bench …`: the command lines of the benchmarks in `nimbus-bench`.

use std::net::SocketAddr;

use anyhow::Result;
use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};
use nimbus_bench::registry::BenchBackend;
use nimbus_bench::{
    engine as bench, group as bench_group, phone as bench_phone, registry as bench_registry,
    server as bench_server,
};
use nimbus_registry::SqliteSync;

use crate::runtime;

#[derive(Subcommand, Debug)]
pub(crate) enum BenchCommand {
    /// Registry look-ups and updates per second over real HTTP on loopback.
    Registry(BenchArgs),
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
    /// Sessions opened per second against one responder, a burst of
    /// simultaneous opens, and the single-connect latency p50/p99 of the
    /// sequential run.
    Handshake {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Simultaneous opens in the burst.
        #[arg(long, default_value_t = 1000)]
        burst: usize,
        /// Sequential opens (one at a time) for the rate and the latency.
        #[arg(long, default_value_t = 500)]
        sequential: usize,
        /// Crypto profile: plain, or flash (RFC 7425; figures per DH group;
        /// groups 2 and 14 take the full burst, group 16 at most 100).
        #[arg(long, default_value = "plain")]
        crypto: String,
    },
    /// Load test of the rendezvous server: a burst of simultaneous
    /// connects, a ramp to many idle sessions (memory per session),
    /// lookups and introductions, with real Flash-profile clients in
    /// worker processes.
    Server(BenchServerArgs),
    /// Media latency and loss of a whole call, clean and through the
    /// impairing relay (5 % loss, 50 ms delay by default).
    Phone(BenchPhoneArgs),
    /// How a group multicast's costs grow with the group: publisher and
    /// member upload, join-to-first-frame time, missing fragments.
    Group(BenchGroupArgs),
    /// (internal) One worker process of `bench server`.
    #[command(hide = true)]
    ServerWorker(WorkerArgs),
}

/// Runs one benchmark.
pub(crate) fn run(what: BenchCommand) -> Result<()> {
    match what {
        BenchCommand::Registry(args) => runtime()?.block_on(bench_registry::bench(args.into())),
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
        BenchCommand::Server(args) => bench_server::run(args.into()),
        BenchCommand::Phone(args) => bench_phone::run(args.into()),
        BenchCommand::Group(args) => bench_group::run(args.into()),
        BenchCommand::ServerWorker(args) => bench_server::run_worker(args.into()),
    }
}

/// Arguments of `nimbus bench server`.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchServerArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Total sessions to open and hold (burst included).
    #[arg(long, default_value_t = 20_000)]
    sessions: usize,
    /// Clients connecting simultaneously in the burst phase.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// Seconds to hold every session idle before measuring memory.
    #[arg(long, default_value_t = 30)]
    hold_secs: u64,
    /// Lookup + introduction pairs (0 = skip; needs the nimbus `lookup` call).
    #[arg(long, default_value_t = 500)]
    pairs: usize,
    /// Engine shards of the spawned server (0 = one per core).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Connects per second in the ramp phase (at most).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Most connects outstanding at once in the ramp phase, over all
    /// workers (0 = no limit: an open loop at --rate).
    #[arg(long, default_value_t = 200)]
    ramp_inflight: usize,
    /// Diffie-Hellman group the spawned server offers (2 = 1024-bit, 14 =
    /// 2048-bit); clients offer groups 2 and 14.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::PossibleValuesParser::new(["2", "14"]).map(|s| s.parse::<u8>().unwrap_or(2)))]
    dh_group: u8,
    /// Client DH keys: "ephemeral" (a fresh key per handshake, as Flash
    /// Player) or "static" (generated before the timed phases).
    #[arg(long, default_value = "ephemeral", value_parser = ["ephemeral", "static"])]
    client_keys: String,
    /// Clients per worker process (each client has its own UDP socket).
    #[arg(long, default_value_t = 5000)]
    clients_per_worker: usize,
    /// Loopback source addresses the clients are spread over (127.0.0.2 and
    /// up).
    #[arg(long, default_value_t = 49)]
    source_addresses: u8,
    /// Seconds a client waits for Connect.Success (and for a direct session).
    #[arg(long, default_value_t = 10)]
    connect_timeout_secs: u64,
    /// Bench a server that is already running at this UDP address instead
    /// of spawning `nimbus server`.
    #[arg(long, value_name = "ADDR")]
    server: Option<SocketAddr>,
    /// With --server: its process ID, to read its memory and CPU.
    #[arg(long, value_name = "PID", requires = "server")]
    server_pid: Option<u32>,
    /// With --server: its Prometheus endpoint (nimbus metrics) host:port.
    #[arg(long, value_name = "ADDR", requires = "server")]
    server_metrics: Option<SocketAddr>,
    /// Application in the connect URL (rtmfp://ADDR/APP?user=cN).
    #[arg(long, default_value = "bench")]
    app: String,
}

impl From<BenchServerArgs> for bench_server::BenchServerArgs {
    fn from(a: BenchServerArgs) -> Self {
        Self {
            json: a.json,
            sessions: a.sessions,
            burst: a.burst,
            hold_secs: a.hold_secs,
            pairs: a.pairs,
            shards: a.shards,
            rate: a.rate,
            ramp_inflight: a.ramp_inflight,
            dh_group: a.dh_group,
            client_keys: a.client_keys,
            clients_per_worker: a.clients_per_worker,
            source_addresses: a.source_addresses,
            connect_timeout_secs: a.connect_timeout_secs,
            server: a.server,
            server_pid: a.server_pid,
            server_metrics: a.server_metrics,
            app: a.app,
        }
    }
}

/// Arguments of the hidden `nimbus bench server-worker`.
#[derive(Args, Debug, Clone)]
pub(crate) struct WorkerArgs {
    /// Server UDP address.
    #[arg(long)]
    server: SocketAddr,
    /// Connect URL without the query (rtmfp://ADDR/APP).
    #[arg(long)]
    url: String,
    /// Global index of the first client.
    #[arg(long)]
    first: usize,
    /// Clients in this worker.
    #[arg(long)]
    count: usize,
    /// Loopback source addresses.
    #[arg(long, default_value_t = 49)]
    source_addresses: u8,
    /// Server DH group (2 or 14).
    #[arg(long, default_value_t = 2)]
    dh_group: u8,
    /// "ephemeral" or "static".
    #[arg(long, default_value = "ephemeral")]
    client_keys: String,
}

impl From<WorkerArgs> for bench_server::WorkerArgs {
    fn from(a: WorkerArgs) -> Self {
        Self {
            server: a.server,
            url: a.url,
            first: a.first,
            count: a.count,
            source_addresses: a.source_addresses,
            dh_group: a.dh_group,
            client_keys: a.client_keys,
        }
    }
}

/// Arguments of `nimbus bench phone`.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchPhoneArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Seconds of media per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Loss rate of the impaired run (each direction).
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// One-way delay of the impaired run, ms.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// Extra uniform jitter of the impaired run, ms (0 keeps packets in order).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
}

impl From<BenchPhoneArgs> for bench_phone::BenchPhoneArgs {
    fn from(a: BenchPhoneArgs) -> Self {
        Self {
            json: a.json,
            seconds: a.seconds,
            loss: a.loss,
            delay_ms: a.delay_ms,
            jitter_ms: a.jitter_ms,
        }
    }
}

/// Options.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchGroupArgs {
    /// Group sizes (members, publisher included).
    #[arg(long, value_delimiter = ',', default_value = "2,5,10,20,40")]
    sizes: Vec<usize>,
    /// Seconds of streaming per size.
    #[arg(long, default_value_t = 12.0)]
    seconds: f64,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

impl From<BenchGroupArgs> for bench_group::BenchGroupArgs {
    fn from(a: BenchGroupArgs) -> Self {
        Self {
            sizes: a.sizes,
            seconds: a.seconds,
            json: a.json,
        }
    }
}

/// Settings of `nimbus bench registry`.
#[derive(Args, Clone)]
pub(crate) struct BenchArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,

    /// Back ends to measure.
    #[arg(long, default_value_t = BenchBackend::Both)]
    backend: BenchBackend,

    /// PostgreSQL database to measure in (a temporary schema is created and dropped).
    /// Defaults to $NIMBUS_TEST_POSTGRES_URL.
    #[arg(long, env = "NIMBUS_TEST_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,

    /// Length of each phase (updates, then look-ups), in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,

    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,

    /// Distinct user names.
    #[arg(long, default_value_t = 10_000)]
    users: usize,

    /// SQLite durability setting to measure with.
    #[arg(long, default_value_t = SqliteSync::Full)]
    sqlite_synchronous: SqliteSync,

    /// Read connections of the registry under test (default as the service's).
    #[arg(long)]
    db_connections: Option<u32>,
}

impl std::fmt::Debug for BenchArgs {
    // the library's, which hides the database password
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&bench_registry::BenchArgs::from(self.clone()), f)
    }
}

impl From<BenchArgs> for bench_registry::BenchArgs {
    fn from(a: BenchArgs) -> Self {
        Self {
            json: a.json,
            backend: a.backend,
            postgres_url: a.postgres_url,
            duration_secs: a.duration_secs,
            concurrency: a.concurrency,
            users: a.users,
            sqlite_synchronous: a.sqlite_synchronous,
            db_connections: a.db_connections,
        }
    }
}
