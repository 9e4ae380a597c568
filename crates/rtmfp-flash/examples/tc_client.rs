//! A Flash NetConnection client (RFC 7425 §5) against a server such as
//! rtmfp-cpp's `tcserver`: connects, creates two streams, plays a name on
//! one, publishes a few audio/video frames under that name on the other and
//! prints what comes back.
//!
//! ```text
//! cargo run -p rtmfp-flash --example tc_client -- [options] rtmfp://127.0.0.1:PORT/app
//!   --name NAME      stream name (default "demo")
//!   --frames N       frames of each kind to publish (default 5)
//!   --record FILE    write the flow messages as a JSON test vector
//!   --timeout SECS   give up after SECS (default 10)
//! ```
//! HMAC and session sequence numbers are required (rtmfp-cpp's default).
//!
//! The engine and the NetConnection are one small machine ([`Client`]) on
//! `rtmfp-tokio`'s host; this program reacts to its `NcEvent`s.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::{DataMessage, Object, Value};
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig};
use rtmfp_flash::message::{NcEvent, NetConnection};
use rtmfp_flash::{hex_encode, FlashProfile, Negotiation};
use rtmfp_tokio::{Host, HostConfig};

/// The NetConnection beside the engine: engine events go to it, and its
/// events are the machine's. Everything else is called on the machine through
/// the host (`HostHandle::with`).
impl common::EndpointApp for NetConnection {
    type Event = NcEvent;

    fn pump(&mut self, ep: &mut Endpoint, now: Instant) {
        while let Some(e) = ep.poll_event() {
            self.on_event(ep, now, &e);
        }
    }

    fn poll_event(&mut self) -> Option<NcEvent> {
        NetConnection::poll_event(self)
    }

    /// Closes the connection; done once the session has closed.
    fn handle_close(&mut self, ep: &mut Endpoint, now: Instant) {
        self.close(ep, now);
        self.pump(ep, now);
    }

    fn is_done(&self, ep: &Endpoint) -> Option<bool> {
        Some(ep.session_count() == 0)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = common::Args::new(
        "tc_client [--name NAME] [--frames N] [--record FILE] [--timeout SECS] rtmfp://HOST:PORT/app",
    );
    let mut uri = None;
    let mut name = "demo".to_string();
    let mut frames = 5u32;
    let mut record: Option<String> = None;
    let mut timeout = Duration::from_secs(10);
    while let Some(a) = args.next_arg() {
        match a.as_str() {
            "--name" => name = args.value(),
            "--frames" => frames = args.value().parse()?,
            "--record" => record = Some(args.value()),
            "--timeout" => timeout = Duration::from_secs(args.value().parse()?),
            s if s.starts_with("rtmfp://") => uri = Some(s.to_string()),
            _ => args.usage(),
        }
    }
    let uri = uri.unwrap_or_else(|| args.usage());
    let server = common::resolve_rtmfp_uri(&uri)?;

    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    let profile = FlashProfile::client()
        .hmac(Negotiation::REQUIRED)
        .sseq(Negotiation::REQUIRED)
        .build(&mut rng)?;
    let local = common::any_address_for(server);
    let seed = rand_core::RngCore::next_u64(&mut rng);
    let mut ep = common::engine(EndpointConfig::default(), Box::new(profile), seed);
    let started = Instant::now();
    let mut nc =
        NetConnection::connect(&mut ep, rtmfp_tokio::now(), &uri, &[server], Object::new())?;
    nc.set_tracing(record.is_some());
    let socket = common::bind(local)?;
    println!("connecting to {uri} from {}", socket.local_addr()?);
    let mut config = HostConfig::default();
    // on the way out: wait this long for the session to close
    config.close_timeout = Duration::from_millis(300);
    let (host, mut events, task) =
        Host::spawn(common::Driven { ep, app: nc }, vec![socket], config)?;

    let deadline = tokio::time::Instant::from_std(started + timeout);
    let (mut pub_tid, mut play_tid) = (None, None);
    let (mut pub_stream, mut play_stream) = (None, None);
    let (mut publishing, mut playing) = (false, false);
    let mut sent = false;
    let mut got_audio = 0;
    let mut got_video = 0;
    let mut got_data = 0;
    let mut done_at: Option<tokio::time::Instant> = None;
    let mut ok = false;
    loop {
        let e = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep_until(done_at.map_or(deadline, |t| t + Duration::from_millis(300))), if done_at.is_some() => {
                ok = true;
                break;
            }
            e = events.recv() => match e {
                Some(e) => e,
                None => break,
            },
        };
        match &e {
            NcEvent::Connected(s) => {
                println!("{} ({}): {}", s.code, s.level, s.description);
                let (p, q) = host
                    .with(|m, now| {
                        let p = m.app.create_stream(&mut m.ep, now)?;
                        let q = m.app.create_stream(&mut m.ep, now)?;
                        Ok::<_, rtmfp::Error>((p, q))
                    })
                    .await??;
                pub_tid = Some(p);
                play_tid = Some(q);
            }
            NcEvent::ConnectFailed(s) => {
                println!(
                    "connect failed: {} ({}): {}",
                    s.code, s.level, s.description
                );
                return Err("connect failed".into());
            }
            NcEvent::StreamCreated {
                transaction_id,
                stream,
            } => {
                if Some(*transaction_id) == play_tid {
                    println!("createStream -> {stream} (for play)");
                    play_stream = Some(*stream);
                    let (stream, name) = (*stream, name.clone());
                    host.with(move |m, now| m.app.play(&mut m.ep, now, stream, &name))
                        .await??;
                } else if Some(*transaction_id) == pub_tid {
                    println!("createStream -> {stream} (for publish)");
                    pub_stream = Some(*stream);
                }
            }
            NcEvent::Status { stream, status } => {
                if *stream != 0 {
                    println!(
                        "stream {stream} onStatus {} ({}): {}",
                        status.code, status.level, status.description
                    );
                }
                match status.code.as_str() {
                    "NetStream.Play.Start" => {
                        playing = true;
                        if let Some(s) = pub_stream {
                            let name = name.clone();
                            host.with(move |m, now| m.app.publish(&mut m.ep, now, s, &name))
                                .await??;
                        }
                    }
                    "NetStream.Publish.Start" => publishing = true,
                    _ => {}
                }
            }
            NcEvent::Audio {
                stream,
                timestamp,
                payload,
            }
            | NcEvent::Video {
                stream,
                timestamp,
                payload,
            } => {
                let (kind, got) = match e {
                    NcEvent::Audio { .. } => ("audio", &mut got_audio),
                    _ => ("video", &mut got_video),
                };
                if Some(*stream) == play_stream {
                    *got += 1;
                }
                println!(
                    "stream {stream} {kind} t={timestamp} {} bytes: {}",
                    payload.len(),
                    hex_encode(payload)
                );
            }
            NcEvent::Data {
                stream,
                timestamp,
                message,
            } => {
                got_data += 1;
                println!(
                    "stream {stream} data t={timestamp} {}({:?})",
                    message.handler, message.values
                );
            }
            NcEvent::UserControl { stream, event } => {
                println!("stream {stream} user control {event:?}");
            }
            NcEvent::Command { stream, command } => {
                println!("stream {stream} command {}", command.name);
            }
            NcEvent::CallResult { .. } => {}
            NcEvent::Closed => {
                println!("connection closed");
            }
            _ => {}
        }
        if publishing && playing && !sent {
            let s = pub_stream.ok_or("no publish stream")?;
            sent = true;
            host.with(move |m, now| publish_frames(&mut m.app, &mut m.ep, now, s, frames))
                .await??;
            println!(
                "published {frames} video + {frames} audio frames (+ headers, metadata) as {name:?} on stream {s}"
            );
        }
        if sent && got_video > frames && got_audio > frames && done_at.is_none() {
            done_at = Some(tokio::time::Instant::now());
        }
    }
    println!("received {got_video} video, {got_audio} audio, {got_data} data messages");
    if let Some(path) = &record {
        let trace: Vec<serde_json::Value> = host
            .with(|m, _| m.app.take_trace())
            .await?
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "dir": if t.sent { "out" } else { "in" },
                    "metadata": hex_encode(&t.metadata),
                    "message": hex_encode(&t.message),
                })
            })
            .collect();
        let v = serde_json::json!({
            "description": format!("rtmfp-flash tc_client -> {uri}: connect, createStream x2, play + publish {name:?}, {frames} frames"),
            "messages": trace,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
        println!("recorded the flow messages to {path}");
    }
    // close the connection; the host stops once the session has closed
    // (at most 300 ms)
    host.close().await;
    drop(host);
    drop(events);
    let _ = task.await;
    if ok {
        println!("OK");
        Ok(())
    } else {
        Err("did not get the published frames back".into())
    }
}

/// Metadata, the AVC sequence header and the AAC config, then `frames`
/// video and audio frames on stream `s`.
fn publish_frames(
    nc: &mut NetConnection,
    ep: &mut Endpoint,
    now: Instant,
    s: u32,
    frames: u32,
) -> Result<(), rtmfp::Error> {
    let meta = Object::new()
        .with("width", 320.0)
        .with("height", 240.0)
        .with("videocodecid", 7.0)
        .with("audiocodecid", 10.0);
    nc.send_data(
        ep,
        now,
        s,
        0,
        DataMessage::set_data_frame(Value::Object(meta)),
    )?;
    // AVC sequence header and AAC config first, then frames
    nc.send_video(
        ep,
        now,
        s,
        0,
        Bytes::from_static(b"\x17\x00\x00\x00\x00\x01\x42\xc0\x1e\xff"),
    )?;
    nc.send_audio(ep, now, s, 0, Bytes::from_static(b"\xaf\x00\x12\x10"))?;
    for i in 0..frames {
        let t = i * 40;
        let kind = if i == 0 { 0x17 } else { 0x27 };
        let video = vec![kind, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, i as u8];
        nc.send_video(ep, now, s, t, video.into())?;
        nc.send_audio(ep, now, s, t, Bytes::from(vec![0xaf, 1, 0x21, i as u8]))?;
    }
    Ok(())
}
