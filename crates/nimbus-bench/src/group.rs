//! `nimbus bench group`: how a multicast stream's costs grow with the group.
//!
//! For each group size N, a `nimbus server` on loopback and N members in
//! this process (one publisher of the built-in H.264 test source, N − 1
//! players; each member its own host, socket, runtime and thread): the
//! publisher's upload, the players' upload (they relay), join-to-first-frame
//! time (the member's own clock: from the join to the first media message
//! it delivers, with no polling in between) and missing fragments.

use std::time::Duration;

use anyhow::Result;

use crate::group_members::{run_members, spec_for, MemberPlan};

/// Options.
#[derive(Debug, Clone)]
pub struct BenchGroupArgs {
    /// Group sizes (members, publisher included).
    pub sizes: Vec<usize>,
    /// Seconds of streaming per size.
    pub seconds: f64,
    /// JSON output.
    pub json: bool,
}

/// Sorts `v` and takes its `p` quantile (NaN when empty).
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::stats::percentile(v, p).unwrap_or(f64::NAN)
}

pub fn run(args: BenchGroupArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let config = nimbus_server::ServerConfig {
        listen: vec!["127.0.0.1:0".parse()?],
        shutdown_grace_secs: 1,
        ..Default::default()
    };
    let server = rt.block_on(nimbus_server::Server::start(config))?;
    let addr = server.local_addrs()[0];
    let seconds = if args.seconds.is_finite() {
        args.seconds.clamp(3.0, 3600.0)
    } else {
        12.0
    };
    let mut rows = Vec::new();
    if !args.json {
        println!("group size | publisher upload kbit/s | player upload kbit/s mean / max | join→first frame ms p50 / max | fragments missed");
    }
    for (k, &n) in args.sizes.iter().enumerate() {
        let n = n.clamp(2, 500);
        let spec = spec_for(&format!("bench-{k}-{n}"))?;
        let url = format!("rtmfp://{addr}/bench");
        let mut plans = Vec::with_capacity(n);
        for i in 0..n {
            plans.push(MemberPlan {
                server: addr,
                url: url.clone(),
                spec: spec.clone(),
                publish: (i == 0).then(|| "cam".to_string()),
                play: (i > 0).then(|| "cam".to_string()),
                // players join while the stream runs (late joiners included)
                start_after: if i == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(300 + 20 * i as u64)
                },
            });
        }
        let run = Duration::from_secs_f64(seconds + 1.0);
        let reports = run_members(plans, run)?;
        let secs = run.as_secs_f64();
        let publisher_kbps = reports[0].udp_sent as f64 * 8.0 / 1000.0 / secs;
        let mut up: Vec<f64> = reports[1..]
            .iter()
            .map(|r| r.udp_sent as f64 * 8.0 / 1000.0 / secs)
            .collect();
        let mean_up = up.iter().sum::<f64>() / up.len() as f64;
        let max_up = pct(&mut up, 1.0);
        let mut first: Vec<f64> = reports[1..]
            .iter()
            .map(|r| {
                r.first_media
                    .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1000.0)
            })
            .collect();
        let p50 = pct(&mut first, 0.5);
        let pmax = pct(&mut first, 1.0);
        let missed: u64 = reports[1..].iter().map(|r| r.stats.fragments_missed).sum();
        let played: u64 = reports[1..].iter().map(|r| r.stats.fragments_played).sum();
        let without_media = reports[1..]
            .iter()
            .filter(|r| r.media_received == 0)
            .count();
        if args.json {
            rows.push(serde_json::json!({
                "members": n,
                "publisher_upload_kbps": publisher_kbps,
                "player_upload_kbps_mean": mean_up,
                "player_upload_kbps_max": max_up,
                "join_to_first_frame_ms_p50": p50,
                "join_to_first_frame_ms_max": pmax,
                "fragments_played": played,
                "fragments_missed": missed,
                "players_without_media": without_media,
            }));
        } else {
            println!(
                "{n:>10} | {publisher_kbps:>23.0} | {mean_up:>15.0} / {max_up:<14.0} | {p50:>14.0} / {pmax:<10.0} | {missed} of {} ({without_media} players got nothing)",
                played + missed
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "sizes": rows }))?
        );
    }
    rt.block_on(server.shutdown());
    Ok(())
}
