//! `nimbus bench registry`: a load generator over real HTTP on loopback.
//!
//! For each back end it starts a registry on a throw-away database (a temporary
//! SQLite file, or a temporary schema in the given PostgreSQL database), serves it on
//! `127.0.0.1:0`, and drives the legacy endpoint — the requests the Adobe sample
//! sends — from many concurrent keep-alive connections: first a phase of updates
//! (`?username=…&identity=…`), then a phase of look-ups (`?friends=…`). It reports
//! throughput and latency percentiles, then reopens the database and checks that the
//! last acknowledged update of every name is there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Map, Value};

use bytes::Bytes;
use nimbus_registry::{serve, LegacyMode, Registry, RegistryConfig, SqliteSync};
use nimbus_testkit::http::{create_temp_schema, drop_temp_schema, HttpConn};

/// Which back ends to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchBackend {
    /// SQLite only.
    Sqlite,
    /// PostgreSQL only.
    Postgres,
    /// Both (PostgreSQL is skipped with a message if no URL is given).
    Both,
}

impl std::str::FromStr for BenchBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(BenchBackend::Sqlite),
            "postgres" => Ok(BenchBackend::Postgres),
            "both" => Ok(BenchBackend::Both),
            _ => Err(format!("{s:?}: expected sqlite, postgres or both")),
        }
    }
}

impl std::fmt::Display for BenchBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BenchBackend::Sqlite => "sqlite",
            BenchBackend::Postgres => "postgres",
            BenchBackend::Both => "both",
        })
    }
}

/// Settings of `nimbus bench registry`.
#[derive(Clone)]
pub struct BenchArgs {
    /// Print one JSON object instead of text.
    pub json: bool,

    /// Back ends to measure.
    pub backend: BenchBackend,

    /// PostgreSQL database to measure in (a temporary schema is created and dropped).
    /// Defaults to $NIMBUS_TEST_POSTGRES_URL.
    pub postgres_url: Option<String>,

    /// Length of each phase (updates, then look-ups), in seconds.
    pub duration_secs: f64,

    /// Concurrent keep-alive connections.
    pub concurrency: usize,

    /// Distinct user names.
    pub users: usize,

    /// SQLite durability setting to measure with.
    pub sqlite_synchronous: SqliteSync,

    /// Read connections of the registry under test (default as the service's).
    pub db_connections: Option<u32>,
}

impl std::fmt::Debug for BenchArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchArgs")
            .field("json", &self.json)
            .field("backend", &self.backend)
            .field(
                "postgres_url",
                &self
                    .postgres_url
                    .as_deref()
                    .map(nimbus_registry::redact_url),
            )
            .field("duration_secs", &self.duration_secs)
            .field("concurrency", &self.concurrency)
            .field("users", &self.users)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .field("db_connections", &self.db_connections)
            .finish()
    }
}

#[derive(Debug, Default)]
struct PhaseResult {
    cpu_secs: Option<f64>,
    ok: u64,
    errors: u64,
    misses: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl PhaseResult {
    fn per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    /// CPU microseconds (client and server together) per successful request.
    fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.cpu_secs?;
        (self.ok > 0).then(|| cpu * 1e6 / self.ok as f64)
    }

    /// Adds the counts and latencies of a worker.
    fn add(&mut self, r: PhaseResult) {
        self.ok += r.ok;
        self.errors += r.errors;
        self.misses += r.misses;
        self.latencies_us.extend(r.latencies_us);
    }

    /// Closes a phase that began at `started` with `cpu0` CPU seconds used.
    fn finish(&mut self, started: Instant, cpu0: Option<f64>) {
        self.elapsed = started.elapsed();
        self.cpu_secs = cpu0.zip(process_cpu_secs()).map(|(a, b)| b - a);
        self.latencies_us.sort_unstable();
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        crate::stats::percentile(&self.latencies_us, p).map_or(0.0, |us| f64::from(us) / 1000.0)
    }
}

/// One load-generating HTTP connection and what it measured.
struct Worker {
    addr: SocketAddr,
    conn: HttpConn,
    res: PhaseResult,
}

impl Worker {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            conn: Self::open(addr).await?,
            res: PhaseResult::default(),
        })
    }

    async fn open(addr: SocketAddr) -> anyhow::Result<HttpConn> {
        HttpConn::connect(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// GETs `path`. A 200 answer whose body `accept`s is a success (its
    /// latency recorded) and returns the body; anything else counts as an
    /// error (a failed connection is replaced).
    async fn get(
        &mut self,
        path: &str,
        accept: impl Fn(&[u8]) -> bool,
    ) -> anyhow::Result<Option<Bytes>> {
        let t0 = Instant::now();
        match self.conn.get_lean(path).await {
            Ok((200, body)) if accept(&body) => {
                self.res
                    .latencies_us
                    .push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                self.res.ok += 1;
                return Ok(Some(body));
            }
            Ok(_) => {}
            Err(_) => self.conn = Self::open(self.addr).await?,
        }
        self.res.errors += 1;
        Ok(None)
    }
}

/// CPU time (user + system) used by this process so far, from /proc (Linux), in
/// seconds; the load generator and the registry share the process, so this is the
/// CPU cost of both sides, which other load on the machine does not inflate.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn identity_for(name: usize, seq: u64) -> String {
    // 64 hex digits that differ per (name, seq).
    format!(
        "{:016x}{:016x}{:032x}",
        name as u64, seq, 0x6e696d627573u128
    )
}

/// Updates phase: worker `w` owns the names `i` with `i % concurrency == w`, so the last
/// acknowledged identity of each name is well defined.
async fn run_updates(
    addr: SocketAddr,
    concurrency: usize,
    users: usize,
    duration: Duration,
    run_id: &str,
) -> anyhow::Result<(PhaseResult, HashMap<usize, String>)> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let cpu0 = process_cpu_secs();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let run_id = run_id.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut worker = Worker::connect(addr).await?;
            let mut acked: HashMap<usize, String> = HashMap::new();
            let mine: Vec<usize> = (w..users).step_by(concurrency).collect();
            if mine.is_empty() {
                return Ok::<_, anyhow::Error>((worker.res, acked));
            }
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let name = mine[(seq as usize) % mine.len()];
                seq += 1;
                let id = identity_for(name, seq);
                let path = format!("/reg.cgi?username=b{run_id}u{name}&identity={id}&time={seq}");
                let updated = |body: &[u8]| contains(body, b"<update>true</update>");
                if worker.get(&path, updated).await?.is_some() {
                    acked.insert(name, id);
                }
            }
            Ok((worker.res, acked))
        }));
    }
    let mut total = PhaseResult::default();
    let mut acked = HashMap::new();
    for t in tasks {
        let (r, a) = t.await.context("update worker panicked")??;
        total.add(r);
        acked.extend(a);
    }
    total.finish(started, cpu0);
    Ok((total, acked))
}

async fn run_lookups(
    addr: SocketAddr,
    concurrency: usize,
    names: Arc<Vec<usize>>,
    duration: Duration,
    run_id: &str,
) -> anyhow::Result<PhaseResult> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let cpu0 = process_cpu_secs();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let names = Arc::clone(&names);
        let run_id = run_id.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut worker = Worker::connect(addr).await?;
            // A cheap per-worker pseudo-random walk over the names.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1);
            let mut seq = 0u64;
            while Instant::now() < deadline && !names.is_empty() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                seq += 1;
                let name = names[(x % names.len() as u64) as usize];
                let path = format!("/reg.cgi?friends=b{run_id}u{name}&time={seq}");
                if let Some(body) = worker.get(&path, |_| true).await? {
                    if !contains(&body, b"<identity>") {
                        worker.res.misses += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>(worker.res)
        }));
    }
    let mut total = PhaseResult::default();
    for t in tasks {
        total.add(t.await.context("lookup worker panicked")??);
    }
    total.finish(started, cpu0);
    Ok(total)
}

fn bench_config(args: &BenchArgs) -> RegistryConfig {
    RegistryConfig {
        legacy_mode: LegacyMode::Open,
        sqlite_sync: args.sqlite_synchronous,
        max_connections: args.db_connections,
        maintenance_interval: Duration::from_secs(3600),
        ..RegistryConfig::for_tests()
    }
}

/// Runs both phases against the database at `url` and fills `out` with figures
/// prefixed by `prefix`.
async fn bench_one(
    prefix: &str,
    url: &str,
    args: &BenchArgs,
    out: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let concurrency = args.concurrency.max(1);
    let users = args.users.max(1);
    let duration = Duration::from_secs_f64(args.duration_secs.max(0.1));
    let mut rnd = [0u8; 4];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let run_id = rnd.iter().map(|b| format!("{b:02x}")).collect::<String>();

    let registry = Registry::open(url, bench_config(args)).await?;
    let handle = serve(&registry, "127.0.0.1:0".parse()?).await?;
    let addr = handle.local_addr();

    let (upd, acked) = run_updates(addr, concurrency, users, duration, &run_id).await?;
    let names: Arc<Vec<usize>> = Arc::new(acked.keys().copied().collect());
    let look = run_lookups(addr, concurrency, names, duration, &run_id).await?;

    handle.shutdown().await?;
    registry.close().await;
    drop(registry);

    // Durability check: reopen and read back the last acknowledged value of each name.
    let reopened = Registry::open(url, bench_config(args)).await?;
    let mut lost = 0u64;
    for (name, id) in &acked {
        match reopened.lookup(&format!("b{run_id}u{name}")).await? {
            Some(p) if &p.peer_id == id => {}
            _ => lost += 1,
        }
    }
    reopened.close().await;

    let put = |out: &mut Map<String, Value>, k: &str, v: Value| {
        out.insert(format!("{prefix}_{k}"), v);
    };
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    put(out, "lookups_per_s", json!(round(look.per_second())));
    put(out, "lookup_p50_ms", json!(round(look.percentile_ms(0.50))));
    put(out, "lookup_p99_ms", json!(round(look.percentile_ms(0.99))));
    put(out, "lookup_errors", json!(look.errors));
    put(out, "lookup_misses", json!(look.misses));
    put(out, "updates_per_s", json!(round(upd.per_second())));
    put(out, "update_p50_ms", json!(round(upd.percentile_ms(0.50))));
    put(out, "update_p99_ms", json!(round(upd.percentile_ms(0.99))));
    put(out, "update_errors", json!(upd.errors));
    put(out, "acked_updates", json!(upd.ok));
    if let Some(c) = look.cpu_us_per_request() {
        put(out, "lookup_cpu_us_per_req", json!(round(c)));
    }
    if let Some(c) = upd.cpu_us_per_request() {
        put(out, "update_cpu_us_per_req", json!(round(c)));
    }
    put(out, "names_checked_after_reopen", json!(acked.len()));
    put(out, "lost_acked_updates", json!(lost));
    Ok(())
}

/// Runs the benchmark and prints the figures (text, or one JSON object with
/// `--json`). Fails if an acknowledged update was lost.
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut out = Map::new();
    out.insert("concurrency".into(), json!(args.concurrency.max(1)));
    out.insert("duration_secs".into(), json!(args.duration_secs));
    out.insert("users".into(), json!(args.users.max(1)));
    let mut lost_total = 0u64;

    if matches!(args.backend, BenchBackend::Sqlite | BenchBackend::Both) {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let url = format!("sqlite:{}", dir.path().join("bench.sqlite").display());
        out.insert(
            "sqlite_synchronous".into(),
            json!(match args.sqlite_synchronous {
                SqliteSync::Full => "full",
                SqliteSync::Normal => "normal",
            }),
        );
        bench_one("sqlite", &url, &args, &mut out).await?;
        lost_total += out
            .get("sqlite_lost_acked_updates")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }

    if matches!(args.backend, BenchBackend::Postgres | BenchBackend::Both) {
        match args.postgres_url.as_deref().filter(|u| !u.is_empty()) {
            None => {
                let why = "no PostgreSQL URL (give --postgres-url or set NIMBUS_TEST_POSTGRES_URL)";
                eprintln!("SKIPPED: postgres benchmark: {why}");
                out.insert("postgres_skipped".into(), json!(why));
            }
            Some(base) => match create_temp_schema(base).await {
                Err(e) => {
                    let why = format!("cannot connect to PostgreSQL: {e}");
                    eprintln!("SKIPPED: postgres benchmark: {why}");
                    out.insert("postgres_skipped".into(), json!(why));
                }
                Ok((url, schema)) => {
                    let r = bench_one("postgres", &url, &args, &mut out).await;
                    if let Err(e) = drop_temp_schema(base, &schema).await {
                        eprintln!("warning: could not drop schema {schema}: {e}");
                    }
                    r?;
                    lost_total += out
                        .get("postgres_lost_acked_updates")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                }
            },
        }
    }

    if args.json {
        println!("{}", Value::Object(out));
    } else {
        print_human(&out);
    }
    if lost_total > 0 {
        bail!("{lost_total} acknowledged updates were lost");
    }
    Ok(())
}

fn print_human(out: &Map<String, Value>) {
    let get = |k: &str| out.get(k).cloned().unwrap_or(Value::Null);
    println!(
        "registry benchmark: {} connections, {} s per phase, {} names",
        get("concurrency"),
        get("duration_secs"),
        get("users")
    );
    for b in ["sqlite", "postgres"] {
        if let Some(why) = out.get(&format!("{b}_skipped")) {
            println!("{b}: skipped ({})", why.as_str().unwrap_or(""));
            continue;
        }
        if !out.contains_key(&format!("{b}_lookups_per_s")) {
            continue;
        }
        let g = |k: &str| get(&format!("{b}_{k}"));
        println!(
            "{b}: look-ups {}/s (p50 {} ms, p99 {} ms, errors {}, {} µs CPU each), updates {}/s (p50 {} ms, p99 {} ms, errors {}, {} µs CPU each), {} acked updates, {} lost after reopen",
            g("lookups_per_s"),
            g("lookup_p50_ms"),
            g("lookup_p99_ms"),
            g("lookup_errors"),
            g("lookup_cpu_us_per_req"),
            g("updates_per_s"),
            g("update_p50_ms"),
            g("update_p99_ms"),
            g("update_errors"),
            g("update_cpu_us_per_req"),
            g("acked_updates"),
            g("lost_acked_updates"),
        );
    }
}
