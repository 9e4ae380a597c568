//! Crash test: the standalone server is killed with SIGKILL in the middle of a burst
//! of updates and restarted on the same database; every update acknowledged before
//! the kill must still be there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nimbus_testkit::http::{postgres_url_or_skip, Db, HttpConn, TestDb};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WORKERS: usize = 24;
const NAMES_PER_WORKER: usize = 20;

/// Starts `nimbus registry` and waits for its "listening on" line.
async fn spawn_server(db_url: &str, sync: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args([
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db_url,
            "--legacy-mode",
            "open",
            "--rate-limit",
            "0",
            "--sqlite-synchronous",
            sync,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nimbus registry");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("server start timed out")
        .expect("read stdout")
        .expect("server exited before listening");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    (child, addr)
}

fn identity(worker: usize, seq: u64) -> String {
    format!("{:032x}{:032x}", worker as u128, u128::from(seq))
}

fn seq_of(identity: &str) -> u64 {
    u64::from_str_radix(&identity[32..], 16).unwrap()
}

async fn crash_and_restart(db: Db, sync: &str) {
    let test = format!("crash_and_restart_{sync}");
    let Some(test_db) = TestDb::new(db, &test).await else {
        return;
    };
    let (mut child, addr) = spawn_server(&test_db.url, sync).await;

    // Each worker owns its names and sends updates one after another, so for each
    // name the last acknowledged sequence number is well defined; the update in
    // flight at the kill may or may not have been committed.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let acked = acked.clone();
        let acks = acks.clone();
        workers.push(tokio::spawn(async move {
            let Ok(mut conn) = HttpConn::connect(addr).await else {
                return 0u64;
            };
            let mut failures = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let name = format!("w{w}n{}", seq as usize % NAMES_PER_WORKER);
                let path = format!(
                    "/reg.cgi?username={name}&identity={}&time={seq}",
                    identity(w, seq)
                );
                match conn.get(&path).await {
                    Ok(r) if r.status == 200 && r.body.contains("<update>true</update>") => {
                        acked.lock().unwrap().insert(name, seq);
                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(r) => panic!("unexpected reply {}: {}", r.status, r.body),
                    Err(_) => {
                        failures += 1;
                        break; // the server is gone
                    }
                }
            }
            failures
        }));
    }

    // Let the burst run, then kill the server in the middle of it.
    let start = Instant::now();
    while acks.load(std::sync::atomic::Ordering::SeqCst) < 2000
        && start.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "server should have died from SIGKILL");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    }
    let mut interrupted = 0;
    for w in workers {
        interrupted += w.await.unwrap();
    }
    assert!(
        interrupted > 0,
        "the kill should have interrupted the burst"
    );
    let acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    let total = acks.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        total >= 100,
        "only {total} updates acknowledged before the kill"
    );

    // Restart on the same database and read everything back.
    let (mut child, addr) = spawn_server(&test_db.url, sync).await;
    let mut conn = HttpConn::connect(addr).await.unwrap();
    let mut missing = Vec::new();
    for (name, seq) in &acked {
        let r = conn.get(&format!("/reg.cgi?friends={name}")).await.unwrap();
        let got = r
            .body
            .split("<identity>")
            .nth(1)
            .and_then(|s| s.split("</identity>").next())
            .map(seq_of);
        // The acknowledged update, or the next one for this name (a worker cycles
        // through its names), which was in flight at the kill.
        match got {
            Some(s) if s == *seq || s == *seq + NAMES_PER_WORKER as u64 => {}
            other => missing.push((name.clone(), *seq, other)),
        }
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    eprintln!(
        "{test} [{db:?}]: {total} updates acknowledged before SIGKILL, {} names checked, {} lost",
        acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged updates lost: {missing:?}");
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_mid_burst_sync_full() {
    crash_and_restart(Db::Sqlite, "full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_mid_burst_sync_normal() {
    crash_and_restart(Db::Sqlite, "normal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_mid_burst() {
    if postgres_url_or_skip("postgres_sigkill_mid_burst").is_none() {
        return;
    }
    crash_and_restart(Db::Postgres, "full").await;
}
