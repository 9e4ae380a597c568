//! An RTMFP responder with Flash crypto (RFC 7425): answers "any server"
//! EPDs (e.g. rtmfp-cpp's `fcclient`), accepts every flow and counts what
//! it receives.
//!
//! ```text
//! cargo run -p rtmfp-flash --example flash_responder -- [options]
//!   --bind ADDR:PORT   listen address (default 127.0.0.1:1935)
//!   --require          require HMAC and session sequence numbers
//!   --no-hmac          never send or ask for HMAC
//!   --no-sseq          never send or ask for session sequence numbers
//!   --static           static DH keys in the certificate instead of ephemeral
//!   --hostname NAME    put a Hostname option in the certificate
//!   --group N          offer only DH group N (repeatable)
//!   --record FILE      write the first exchange and keys as a JSON test vector
//!   --sessions N       exit after N sessions have closed (default: run until --time)
//!   --time SECS        run for SECS (default 30)
//! ```

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::{EndpointConfig, Event};
use rtmfp_flash::{fingerprint, hex_encode, DhGroup, FlashProfile, Negotiation};

fn usage() -> ! {
    eprintln!("usage: flash_responder [--bind ADDR:PORT] [--require] [--no-hmac] [--no-sseq] [--static] [--hostname NAME] [--group N] [--record FILE] [--sessions N] [--time SECS]");
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut bind: SocketAddr = "127.0.0.1:1935".parse()?;
    let mut hmac = Negotiation::PREFERRED;
    let mut sseq = Negotiation::PREFERRED;
    let mut static_keys = false;
    let mut hostname: Option<String> = None;
    let mut groups: Option<Vec<DhGroup>> = None;
    let mut record: Option<String> = None;
    let mut sessions_limit: Option<usize> = None;
    let mut run_for = Duration::from_secs(30);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bind" => bind = value().parse()?,
            "--require" => {
                hmac = Negotiation::REQUIRED;
                sseq = Negotiation::REQUIRED;
            }
            "--no-hmac" => hmac = Negotiation::OFF,
            "--no-sseq" => sseq = Negotiation::OFF,
            "--static" => static_keys = true,
            "--hostname" => hostname = Some(value()),
            "--group" => {
                let g = DhGroup::from_id(value().parse()?).unwrap_or_else(|| usage());
                groups.get_or_insert_with(Vec::new).push(g);
            }
            "--record" => record = Some(value()),
            "--sessions" => sessions_limit = Some(value().parse()?),
            "--time" => run_for = Duration::from_secs(value().parse()?),
            _ => usage(),
        }
    }

    let (key_log, keys) = common::key_recorder();
    let mut builder = FlashProfile::server(hostname.as_deref())
        .hmac(hmac)
        .sseq(sseq);
    if static_keys {
        builder = builder.static_keys();
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
    let seed = rand_core::RngCore::next_u64(&mut rng);
    let mut node = common::UdpNode::bind(bind, EndpointConfig::default(), Box::new(profile), seed)?;
    if record.is_some() {
        node.record = Some(Vec::new());
    }
    println!("listening on {}", node.local_addr()?);

    let started = Instant::now();
    let mut opened = 0usize;
    let mut closed = 0usize;
    let mut bytes = 0usize;
    let mut messages = 0usize;
    let mut recorded = false;
    let mut first_open: Option<Instant> = None;
    while started.elapsed() < run_for {
        node.turn(Duration::from_millis(50))?;
        while let Some(e) = node.ep.poll_event() {
            match e {
                Event::SessionOpened { session, peer, .. } => {
                    opened += 1;
                    first_open.get_or_insert_with(Instant::now);
                    let info = node.ep.session_info(session).ok_or("no session info")?;
                    println!("SessionOpened {session:?} from {peer}");
                    println!("  client peer ID: {}", fingerprint(&info.far_certificate));
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
                }
                Event::IncomingFlow {
                    session,
                    flow,
                    metadata,
                    ..
                } => {
                    println!(
                        "IncomingFlow {session:?} flow {flow} metadata {:?}",
                        String::from_utf8_lossy(&metadata)
                    );
                }
                Event::Readable { session, flow } => {
                    while let Some(m) = node.ep.read(Instant::now(), session, flow) {
                        bytes += m.data.len();
                        messages += 1;
                    }
                }
                Event::RecvFlowComplete { session, flow } => {
                    println!("flow {flow} of {session:?} complete; {messages} messages, {bytes} bytes so far");
                }
                Event::SessionClosed { session, reason } => {
                    closed += 1;
                    println!("SessionClosed {session:?}: {reason:?}");
                }
                _ => {}
            }
        }
        if let (Some(path), Some(t)) = (&record, first_open) {
            if !recorded && t.elapsed() > Duration::from_secs(2) {
                common::write_vector(
                    path,
                    "rtmfp-cpp fcclient -> rtmfp-flash flash_responder",
                    &node,
                    &keys,
                )?;
                println!("recorded the exchange to {path}");
                recorded = true;
            }
        }
        if sessions_limit.is_some_and(|n| closed >= n) {
            break;
        }
    }
    println!(
        "sessions opened {opened}, closed {closed}; received {messages} messages, {bytes} bytes"
    );
    Ok(())
}
