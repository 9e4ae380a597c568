//! `nimbus bench phone`: media latency and loss of a whole call (server,
//! registry, two phones on loopback), clean and through the impairing relay
//! of the phone driver (loss and delay on what each phone receives from the
//! other, so both directions are impaired).

use std::time::Duration;

use anyhow::Result;
use nimbus_phone::driver::Impairment;
use nimbus_phone::phone::PhoneStatus;
use serde_json::json;

use crate::system::{run_call, CallOptions, CallResult};

/// Arguments of `nimbus bench phone`.
#[derive(Debug, Clone)]
pub struct BenchPhoneArgs {
    /// Print one JSON object.
    pub json: bool,
    /// Seconds of media per run.
    pub seconds: f64,
    /// Loss rate of the impaired run (each direction).
    pub loss: f64,
    /// One-way delay of the impaired run, ms.
    pub delay_ms: u64,
    /// Extra uniform jitter of the impaired run, ms (0 keeps packets in order).
    pub jitter_ms: u64,
}

fn pct(sent: u64, recv: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        ((1.0 - recv as f64 / sent as f64) * 100.0).max(0.0)
    }
}

fn dir(from: &PhoneStatus, to: &PhoneStatus) -> serde_json::Value {
    json!({
        "audio_p50_ms": to.audio_latency.p50_ms,
        "audio_p99_ms": to.audio_latency.p99_ms,
        "audio_max_ms": to.audio_latency.max_ms,
        "video_p50_ms": to.video_latency.p50_ms,
        "video_p99_ms": to.video_latency.p99_ms,
        "video_max_ms": to.video_latency.max_ms,
        "audio_sent": from.sent.audio_packets,
        "audio_received": to.received.audio_packets,
        "audio_loss_pct": pct(from.sent.audio_packets, to.received.audio_packets),
        "video_sent": from.sent.video_frames,
        "video_received": to.received.video_frames,
        "video_loss_pct": pct(from.sent.video_frames, to.received.video_frames),
        "sender_drops": from.send_drops,
    })
}

fn figures(r: &CallResult) -> serde_json::Value {
    let a = r.alice.calls.last().unwrap_or(&r.alice.status);
    let b = r.bob.calls.last().unwrap_or(&r.bob.status);
    json!({
        "direct": r.direct,
        "server_media_bytes_relayed": r.server_media_bytes,
        "call_setup_ms": r.setup_ms,
        "first_frame_ms": r.first_frame_ms,
        "alice_to_bob": dir(a, b),
        "bob_to_alice": dir(b, a),
    })
}

fn line(name: &str, v: &serde_json::Value) {
    for d in ["alice_to_bob", "bob_to_alice"] {
        let x = &v[d];
        println!(
            "  {name:<9} {d:<12} audio p50 {:>6.1} ms p99 {:>6.1} ms max {:>6.1} ms loss {:>5.2} % | video p50 {:>6.1} ms p99 {:>6.1} ms loss {:>5.2} %",
            x["audio_p50_ms"].as_f64().unwrap_or(0.0),
            x["audio_p99_ms"].as_f64().unwrap_or(0.0),
            x["audio_max_ms"].as_f64().unwrap_or(0.0),
            x["audio_loss_pct"].as_f64().unwrap_or(0.0),
            x["video_p50_ms"].as_f64().unwrap_or(0.0),
            x["video_p99_ms"].as_f64().unwrap_or(0.0),
            x["video_loss_pct"].as_f64().unwrap_or(0.0),
        );
    }
}

pub fn run(args: BenchPhoneArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let base = std::env::temp_dir().join(format!("nimbus-bench-phone-{}", std::process::id()));
    let mut opts = CallOptions {
        seconds: args.seconds,
        chat_lines: 0,
        impair: None,
        dir: base.join("clean"),
        verbose: false,
    };
    if !args.json {
        println!(
            "nimbus bench phone: a whole call on loopback, {} s of media per run (320x240 H.264 at 15 fps, 20 ms PCM audio)",
            args.seconds
        );
    }
    let clean = rt.block_on(run_call(&opts))?;
    opts.dir = base.join("impaired");
    opts.impair = Some(Impairment {
        loss: args.loss.clamp(0.0, 1.0),
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        seed: 0,
    });
    let impaired = rt.block_on(run_call(&opts))?;
    let _ = std::fs::remove_dir_all(&base);
    let (c, i) = (figures(&clean), figures(&impaired));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "seconds": args.seconds,
                "clean": c,
                "impaired": { "loss": args.loss, "delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms, "figures": i },
            }))?
        );
        return Ok(());
    }
    line("clean", &c);
    line(
        &format!("{:.0}%+{}ms", args.loss * 100.0, args.delay_ms),
        &i,
    );
    println!(
        "  direct path: clean {}, impaired {}; server relayed {} / {} media bytes",
        clean.direct, impaired.direct, clean.server_media_bytes, impaired.server_media_bytes
    );
    Ok(())
}
