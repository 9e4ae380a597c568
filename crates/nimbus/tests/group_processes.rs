//! `nimbus group` processes on loopback through a `nimbus server` process:
//! one command-line member plays, records, posts and summarises; 30 member
//! processes play one multicast stream while a third of them leave and join
//! again, and fewer than 1 % of the fragments in their play spans are
//! missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nimbus");

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn member(url: &str, args: &[&str], seconds: f64) -> Child {
    Command::new(BIN)
        .args([
            "group",
            "--server",
            url,
            "--group",
            "processes",
            "--json",
            "--bind",
            "127.0.0.1:0",
        ])
        .args(args)
        .args(["--seconds", &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nimbus group")
}

/// Waits for a member (bounded) and returns its summary.
fn summary(child: Child, limit: Duration) -> serde_json::Value {
    let started = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("a member did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad summary ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A `nimbus server` process on a free port, and its URL for `app`.
fn server(app: &str) -> (Child, String) {
    let port = free_port();
    let server = Command::new(BIN)
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    (server, format!("rtmfp://127.0.0.1:{port}/{app}"))
}

/// `nimbus group --play cam --record … --post … --seconds 6 --json` against
/// a member publishing the test source: the command-line member plays,
/// records, posts once a neighbour is there, and its summary has the
/// figures; the publisher gets the post once.
#[test]
fn command_line_member_plays_records_posts_and_summarises() {
    let (mut server, url) = server("group");
    let publisher = member(&url, &["--publish", "cam"], 12.0);
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("cli.flv");
    let player = member(
        &url,
        &[
            "--play",
            "cam",
            "--record",
            rec.to_str().unwrap(),
            "--post",
            "hello from the command line",
        ],
        6.0,
    );
    let j = summary(player, Duration::from_secs(30));
    let p = summary(publisher, Duration::from_secs(30));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(j["neighbors"].as_array().unwrap().len(), 1, "{j:#}");
    assert!(j["played"]["cam"]["video"].as_u64().unwrap() >= 30, "{j:#}");
    assert!(j["join_to_first_video_ms"].as_f64().is_some(), "{j:#}");
    assert_eq!(
        j["media_written"].as_u64(),
        j["played"]["cam"]["written"].as_u64()
    );
    assert!(
        j["stats"]["fragments_received"].as_u64().unwrap() > 0,
        "{j:#}"
    );
    assert!(std::fs::metadata(&rec).unwrap().len() > 10_000);
    assert_eq!(
        p["posts"],
        serde_json::json!(["hello from the command line"]),
        "{p:#}"
    );
}

#[test]
fn thirty_members_play_a_stream_while_a_third_leave_and_rejoin() {
    let (mut server, url) = server("groups");
    let publisher = member(&url, &["--publish", "live"], 26.0);
    std::thread::sleep(Duration::from_millis(500));
    // 20 stay the whole time, 10 leave after 8 s and join again 1 s later
    let mut steady = Vec::new();
    let mut churn = Vec::new();
    for i in 0..30 {
        if i % 3 == 2 {
            churn.push(member(&url, &["--play", "live"], 8.0));
        } else {
            steady.push(member(&url, &["--play", "live"], 24.0));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut results = Vec::new();
    for c in churn {
        results.push(summary(c, Duration::from_secs(30)));
    }
    std::thread::sleep(Duration::from_secs(1));
    let rejoined: Vec<Child> = (0..10)
        .map(|_| member(&url, &["--play", "live"], 13.0))
        .collect();
    for c in rejoined {
        results.push(summary(c, Duration::from_secs(40)));
    }
    for c in steady {
        results.push(summary(c, Duration::from_secs(40)));
    }
    let p = summary(publisher, Duration::from_secs(40));
    let _ = server.kill();
    let _ = server.wait();
    let num = |v: &serde_json::Value, k: &str| v["stats"][k].as_u64().unwrap_or(0);
    let published = num(&p, "fragments_published");
    let (mut played, mut missed) = (0u64, 0u64);
    for r in &results {
        assert!(
            num(r, "fragments_played") > 0,
            "a member played nothing: {r}"
        );
        eprintln!(
            "member: played {} missed {} received {} dup {} pulls {} first {}",
            num(r, "fragments_played"),
            num(r, "fragments_missed"),
            num(r, "fragments_received"),
            num(r, "fragments_duplicate"),
            num(r, "pulls_sent"),
            r["join_to_first_media_ms"]
        );
        played += num(r, "fragments_played");
        missed += num(r, "fragments_missed");
    }
    let ratio = missed as f64 / (played + missed) as f64;
    eprintln!(
        "30 member processes: publisher made {published} fragments; players played {played}, missed {missed} ({:.3} %)",
        ratio * 100.0
    );
    assert!(published > 1000, "published {published}");
    assert!(ratio < 0.01, "missed {missed} of {}", played + missed);
}
