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

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::{DataMessage, Object, Value};
use rand_core::SeedableRng;
use rtmfp::EndpointConfig;
use rtmfp_flash::message::{NcEvent, NetConnection};
use rtmfp_flash::{hex_encode, FlashProfile, Negotiation};

fn usage() -> ! {
    eprintln!("usage: tc_client [--name NAME] [--frames N] [--record FILE] [--timeout SECS] rtmfp://HOST:PORT/app");
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut uri = None;
    let mut name = "demo".to_string();
    let mut frames = 5u32;
    let mut record: Option<String> = None;
    let mut timeout = Duration::from_secs(10);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = args.next().unwrap_or_else(|| usage()),
            "--frames" => frames = args.next().unwrap_or_else(|| usage()).parse()?,
            "--record" => record = Some(args.next().unwrap_or_else(|| usage())),
            "--timeout" => {
                timeout = Duration::from_secs(args.next().unwrap_or_else(|| usage()).parse()?)
            }
            s if s.starts_with("rtmfp://") => uri = Some(s.to_string()),
            _ => usage(),
        }
    }
    let uri = uri.unwrap_or_else(|| usage());
    let authority = uri["rtmfp://".len()..]
        .split('/')
        .next()
        .unwrap_or_default();
    let server: SocketAddr = authority
        .to_socket_addrs()?
        .next()
        .ok_or("cannot resolve the server address")?;

    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    let profile = FlashProfile::client()
        .hmac(Negotiation::REQUIRED)
        .sseq(Negotiation::REQUIRED)
        .build(&mut rng)?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let seed = rand_core::RngCore::next_u64(&mut rng);
    let mut node =
        common::UdpNode::bind(local, EndpointConfig::default(), Box::new(profile), seed)?;
    let started = Instant::now();
    let mut nc = NetConnection::connect(&mut node.ep, started, &uri, &[server], Object::new())?;
    nc.set_tracing(record.is_some());
    println!("connecting to {uri} from {}", node.local_addr()?);

    let deadline = started + timeout;
    let (mut pub_tid, mut play_tid) = (None, None);
    let (mut pub_stream, mut play_stream) = (None, None);
    let (mut publishing, mut playing) = (false, false);
    let mut sent = false;
    let mut got_audio = 0;
    let mut got_video = 0;
    let mut got_data = 0;
    let mut done_at = None;
    let mut ok = false;
    while Instant::now() < deadline {
        node.turn(Duration::from_millis(20))?;
        let now = Instant::now();
        while let Some(e) = node.ep.poll_event() {
            nc.on_event(&mut node.ep, now, &e);
        }
        while let Some(e) = nc.poll_event() {
            match &e {
                NcEvent::Connected(s) => {
                    println!("{} ({}): {}", s.code, s.level, s.description);
                    pub_tid = Some(nc.create_stream(&mut node.ep, now)?);
                    play_tid = Some(nc.create_stream(&mut node.ep, now)?);
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
                        nc.play(&mut node.ep, now, *stream, &name)?;
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
                                nc.publish(&mut node.ep, now, s, &name)?;
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
                } => {
                    if Some(*stream) == play_stream {
                        got_audio += 1;
                    }
                    println!(
                        "stream {stream} audio t={timestamp} {} bytes: {}",
                        payload.len(),
                        hex_encode(payload)
                    );
                }
                NcEvent::Video {
                    stream,
                    timestamp,
                    payload,
                } => {
                    if Some(*stream) == play_stream {
                        got_video += 1;
                    }
                    println!(
                        "stream {stream} video t={timestamp} {} bytes: {}",
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
        }
        if publishing && playing && !sent {
            let s = pub_stream.ok_or("no publish stream")?;
            sent = true;
            let meta = Object::new()
                .with("width", 320.0)
                .with("height", 240.0)
                .with("videocodecid", 7.0)
                .with("audiocodecid", 10.0);
            nc.send_data(
                &mut node.ep,
                now,
                s,
                0,
                DataMessage::set_data_frame(Value::Object(meta)),
            )?;
            // AVC sequence header and AAC config first, then frames
            nc.send_video(
                &mut node.ep,
                now,
                s,
                0,
                Bytes::from_static(b"\x17\x00\x00\x00\x00\x01\x42\xc0\x1e\xff"),
            )?;
            nc.send_audio(
                &mut node.ep,
                now,
                s,
                0,
                Bytes::from_static(b"\xaf\x00\x12\x10"),
            )?;
            for i in 0..frames {
                let t = i * 40;
                let kind = if i == 0 { 0x17 } else { 0x27 };
                let video = vec![kind, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, i as u8];
                nc.send_video(&mut node.ep, now, s, t, video.into())?;
                nc.send_audio(
                    &mut node.ep,
                    now,
                    s,
                    t,
                    Bytes::from(vec![0xaf, 1, 0x21, i as u8]),
                )?;
            }
            println!(
                "published {frames} video + {frames} audio frames (+ headers, metadata) as {name:?} on stream {s}"
            );
        }
        if sent && got_video > frames && got_audio > frames && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if let Some(t) = done_at {
            if t.elapsed() > Duration::from_millis(300) {
                ok = true;
                break;
            }
        }
    }
    println!("received {got_video} video, {got_audio} audio, {got_data} data messages");
    if let Some(path) = &record {
        let trace: Vec<serde_json::Value> = nc
            .take_trace()
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
    nc.close(&mut node.ep, Instant::now());
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end && node.ep.session_count() > 0 {
        node.turn(Duration::from_millis(20))?;
    }
    if ok {
        println!("OK");
        Ok(())
    } else {
        Err("did not get the published frames back".into())
    }
}
