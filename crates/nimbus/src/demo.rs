//! `nimbus demo`: the whole system on this machine — a rendezvous server with
//! the embedded registry, two phones (alice and bob), a call by name with
//! live test media and chat straight between the phones, and a summary.

use std::path::PathBuf;

use anyhow::Result;
use nimbus_phone::phone::PhoneStatus;
use serde_json::json;

use nimbus_bench::system::{run_call, CallOptions, CallResult};

pub(crate) struct DemoArgs {
    pub json: bool,
    pub seconds: f64,
    pub chat_lines: usize,
    pub dir: Option<PathBuf>,
}

fn loss(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        (1.0 - received as f64 / sent as f64).max(0.0)
    }
}

/// Figures of one direction (`from` → `to`).
fn direction(from: &PhoneStatus, to: &PhoneStatus) -> serde_json::Value {
    json!({
        "video_frames_sent": from.sent.video_frames,
        "video_frames_received": to.received.video_frames,
        "audio_packets_sent": from.sent.audio_packets,
        "audio_packets_received": to.received.audio_packets,
        "video_loss": loss(from.sent.video_frames, to.received.video_frames),
        "audio_loss": loss(from.sent.audio_packets, to.received.audio_packets),
        "media_bytes_received": to.received.bytes,
        "sender_drops": from.send_drops,
        "latency_ms": {
            "audio": { "p50": to.audio_latency.p50_ms, "p99": to.audio_latency.p99_ms, "max": to.audio_latency.max_ms },
            "video": { "p50": to.video_latency.p50_ms, "p99": to.video_latency.p99_ms, "max": to.video_latency.max_ms },
        },
    })
}

pub(crate) fn summary(r: &CallResult) -> serde_json::Value {
    let a = r.alice.calls.last().unwrap_or(&r.alice.status);
    let b = r.bob.calls.last().unwrap_or(&r.bob.status);
    json!({
        "direct_path": r.direct,
        "registry": { "registered_by_name": r.registered, "unregistered_on_quit": r.unregistered },
        "peer_address_seen_by_alice": a.peer_address,
        "peer_address_seen_by_bob": b.peer_address,
        "server_media_bytes_relayed": r.server_media_bytes,
        "server_media_messages_relayed": r.server_media_messages,
        "call_setup_ms": r.setup_ms,
        "first_frame_ms": r.first_frame_ms,
        "alice_to_bob": direction(a, b),
        "bob_to_alice": direction(b, a),
        "chat_lines_sent": a.chat_sent + b.chat_sent,
        "chat_lines_delivered": r.chat_at_alice.len() + r.chat_at_bob.len(),
        "rtt_ms": a.rtt_ms,
        "received_flv": {
            "alice": r.alice.recordings.first(),
            "bob": r.bob.recordings.first(),
        },
    })
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("nimbus-demo-{}", std::process::id()))
    });
    if !args.json {
        println!("nimbus demo: a rendezvous server with its registry, and two phones on 127.0.0.1");
    }
    let opts = CallOptions {
        seconds: args.seconds,
        chat_lines: args.chat_lines,
        impair: None,
        dir,
        verbose: !args.json,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(run_call(&opts))?;
    let s = summary(&r);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let a = r.alice.calls.last().unwrap_or(&r.alice.status);
    let b = r.bob.calls.last().unwrap_or(&r.bob.status);
    println!();
    println!("summary");
    println!(
        "  path: {} (alice sees bob at {}, bob sees alice at {}); the server relayed {} media bytes",
        if r.direct { "direct, peer to peer" } else { "NOT direct" },
        a.peer_address.as_deref().unwrap_or("-"),
        b.peer_address.as_deref().unwrap_or("-"),
        r.server_media_bytes
    );
    println!(
        "  call set-up {:.1} ms, first video frame {:.1} ms after dialling, rtt {}",
        r.setup_ms,
        r.first_frame_ms,
        a.rtt_ms
            .map(|x| format!("{x:.2} ms"))
            .unwrap_or_else(|| "-".into())
    );
    for (name, from, to) in [("alice → bob", a, b), ("bob → alice", b, a)] {
        println!(
            "  {name}: video {}/{} frames, audio {}/{} packets (loss {:.2} % / {:.2} %), latency audio p50 {:.1} ms p99 {:.1} ms, video p50 {:.1} ms p99 {:.1} ms",
            to.received.video_frames,
            from.sent.video_frames,
            to.received.audio_packets,
            from.sent.audio_packets,
            loss(from.sent.video_frames, to.received.video_frames) * 100.0,
            loss(from.sent.audio_packets, to.received.audio_packets) * 100.0,
            to.audio_latency.p50_ms,
            to.audio_latency.p99_ms,
            to.video_latency.p50_ms,
            to.video_latency.p99_ms,
        );
    }
    println!(
        "  registry: both registered by name {}, unregistered on quit {}",
        r.registered, r.unregistered
    );
    println!(
        "  chat: {} of {} lines delivered",
        r.chat_at_alice.len() + r.chat_at_bob.len(),
        a.chat_sent + b.chat_sent
    );
    for (n, rep) in [("alice", &r.alice), ("bob", &r.bob)] {
        if let Some(p) = rep.recordings.first() {
            println!("  {n} received: {}", p.display());
        }
    }
    if let Some(p) = r.bob.recordings.first() {
        println!("  (play one: ffplay {})", p.display());
    }
    Ok(())
}
