//! Opens an RTMFP session with Flash crypto (RFC 7425) to a server such as
//! rtmfp-cpp's `tcserver`, reports `SessionOpened`, exchanges a few packets
//! on a flow and closes.
//!
//! ```text
//! cargo run -p rtmfp-flash --example flash_client -- [options] rtmfp://127.0.0.1:PORT/app
//!   --require        require HMAC and session sequence numbers (rtmfp-cpp's default)
//!   --no-hmac        never send or ask for HMAC
//!   --no-sseq        never send or ask for session sequence numbers
//!   --ephemeral      ephemeral DH keys instead of static keys in the certificate
//!   --group N        offer only DH group N (2, 5, 14, 16)
//!   --record FILE    write the exchange and derived keys as a JSON test vector
//!   --timeout SECS   give up after SECS (default 10)
//! ```

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::SeedableRng;
use rtmfp::{EndpointConfig, Event, Priority};
use rtmfp_flash::{fingerprint, hex_encode, DhGroup, Epd, FlashProfile, Negotiation};

fn usage() -> ! {
    eprintln!("usage: flash_client [--require] [--no-hmac] [--no-sseq] [--ephemeral] [--group N] [--record FILE] [--timeout SECS] rtmfp://HOST:PORT/app");
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut uri = None;
    let mut hmac = Negotiation::PREFERRED;
    let mut sseq = Negotiation::PREFERRED;
    let mut ephemeral = false;
    let mut groups: Option<Vec<DhGroup>> = None;
    let mut record: Option<String> = None;
    let mut timeout = Duration::from_secs(10);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--require" => {
                hmac = Negotiation::REQUIRED;
                sseq = Negotiation::REQUIRED;
            }
            "--no-hmac" => hmac = Negotiation::OFF,
            "--no-sseq" => sseq = Negotiation::OFF,
            "--ephemeral" => ephemeral = true,
            "--group" => {
                let id: u64 = args.next().unwrap_or_else(|| usage()).parse()?;
                let g = DhGroup::from_id(id).unwrap_or_else(|| usage());
                groups.get_or_insert_with(Vec::new).push(g);
            }
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

    let (key_log, keys) = common::key_recorder();
    let mut builder = FlashProfile::client().hmac(hmac).sseq(sseq);
    if ephemeral {
        builder = builder.ephemeral_keys();
    }
    if let Some(g) = &groups {
        builder = builder.groups(g);
    }
    if record.is_some() {
        builder = builder.key_log(key_log);
    }
    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    let profile = builder.build(&mut rng)?;
    println!("my peer ID: {}", profile.peer_id());

    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let seed = rand_core::RngCore::next_u64(&mut rng);
    let mut node =
        common::UdpNode::bind(local, EndpointConfig::default(), Box::new(profile), seed)?;
    if record.is_some() {
        node.record = Some(Vec::new());
    }
    println!("bound to {}", node.local_addr()?);

    let epd = Epd::server(uri.as_bytes()).encode();
    let started = Instant::now();
    let session = node.ep.connect(started, &epd, &[server])?;
    println!("connecting to {uri} ({server}), EPD {}", hex_encode(&epd));

    let deadline = started + timeout;
    let mut opened_at = None;
    let mut flow = None;
    let mut acked = false;
    let mut closing = false;
    let mut ok = false;
    while Instant::now() < deadline {
        node.turn(Duration::from_millis(50))?;
        while let Some(e) = node.ep.poll_event() {
            match e {
                Event::SessionOpened {
                    session: s, peer, ..
                } if s == session => {
                    let t = started.elapsed();
                    opened_at = Some(Instant::now());
                    let info = node.ep.session_info(s).ok_or("no session info")?;
                    println!(
                        "SessionOpened with {peer} after {:.1} ms",
                        t.as_secs_f64() * 1e3
                    );
                    println!("  server peer ID: {}", fingerprint(&info.far_certificate));
                    println!("  near nonce: {}", hex_encode(&info.near_nonce));
                    println!("  far nonce:  {}", hex_encode(&info.far_nonce));
                    if let Some(k) = keys.lock().unwrap().as_ref() {
                        println!(
                            "  group {}, send HMAC {} / recv HMAC {}, send SSEQ {} / recv SSEQ {}",
                            k["group"],
                            k["send_hmac_len"],
                            k["recv_hmac_len"],
                            k["send_sseq"],
                            k["recv_sseq"]
                        );
                    }
                    // move some session traffic both ways: a flow and a message
                    let f = node.ep.open_flow(
                        Instant::now(),
                        s,
                        b"rtmfp-flash example",
                        None,
                        Priority::ROUTINE,
                    )?;
                    node.ep
                        .send(Instant::now(), s, f, Bytes::from_static(b"hello"), None)?;
                    node.ep.close_flow(Instant::now(), s, f)?;
                    flow = Some(f);
                }
                Event::SessionFailed { error, .. } => {
                    println!("SessionFailed: {error}");
                    return Err("session failed".into());
                }
                Event::SendFlowComplete { flow: f, .. } if Some(f) == flow => {
                    println!("flow {f} acknowledged by the server");
                    acked = true;
                }
                Event::SendFlowException { flow: f, code, .. } if Some(f) == flow => {
                    println!(
                        "flow {f} rejected by the server (code {code}): it decrypted our packet"
                    );
                    acked = true;
                }
                Event::SessionClosed { reason, .. } => {
                    println!("SessionClosed: {reason:?}");
                    ok = opened_at.is_some();
                    closing = true;
                }
                _ => {}
            }
        }
        if let Some(t) = opened_at {
            let info = node.ep.session_info(session);
            let got = info.as_ref().map_or(0, |i| i.stats.packets_received);
            if !closing && ((acked && got > 0) || t.elapsed() > Duration::from_secs(3)) {
                if let Some(i) = &info {
                    println!(
                        "session packets: sent {}, received {} (all decrypted and verified)",
                        i.stats.packets_sent, i.stats.packets_received
                    );
                }
                if let Some(path) = &record {
                    common::write_vector(
                        path,
                        &format!("rtmfp-flash flash_client -> {uri}"),
                        &node,
                        &keys,
                    )?;
                    println!("recorded the exchange to {path}");
                }
                node.ep.close_session(Instant::now(), session);
                closing = true;
                ok = got > 0;
            }
            if closing && t.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        if closing && node.ep.session_count() == 0 {
            break;
        }
    }
    if opened_at.is_none() {
        println!("timed out: no session");
        return Err("timeout".into());
    }
    println!(
        "{}",
        if ok {
            "OK"
        } else {
            "session opened but no traffic came back"
        }
    );
    Ok(())
}
