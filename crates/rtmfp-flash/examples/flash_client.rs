//! Opens an RTMFP session with Flash crypto (RFC 7425) to a server such as
//! rtmfp-cpp's `tcserver`, reports `SessionOpened`, exchanges a few packets
//! on a flow and closes. The engine runs on `rtmfp-tokio`'s host (wrapped in
//! the examples' datagram recorder for `--record`).
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

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{EndpointConfig, Event, Priority};
use rtmfp_flash::{hex_encode, DhGroup, Epd, FlashProfile, Negotiation};
use rtmfp_tokio::{Host, HostConfig};

/// Datagrams kept for a `--record` test vector.
const RECORD_LIMIT: usize = 10;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = common::Args::new(
        "flash_client [--require] [--no-hmac] [--no-sseq] [--ephemeral] [--group N] [--record FILE] [--timeout SECS] rtmfp://HOST:PORT/app",
    );
    let mut uri = None;
    let mut hmac = Negotiation::PREFERRED;
    let mut sseq = Negotiation::PREFERRED;
    let mut ephemeral = false;
    let mut groups: Option<Vec<DhGroup>> = None;
    let mut record: Option<String> = None;
    let mut timeout = Duration::from_secs(10);
    while let Some(a) = args.next_arg() {
        match a.as_str() {
            "--require" => {
                hmac = Negotiation::REQUIRED;
                sseq = Negotiation::REQUIRED;
            }
            "--no-hmac" => hmac = Negotiation::OFF,
            "--no-sseq" => sseq = Negotiation::OFF,
            "--ephemeral" => ephemeral = true,
            "--group" => {
                let g = DhGroup::from_id(args.value().parse()?).unwrap_or_else(|| args.usage());
                groups.get_or_insert_with(Vec::new).push(g);
            }
            "--record" => record = Some(args.value()),
            "--timeout" => timeout = Duration::from_secs(args.value().parse()?),
            s if s.starts_with("rtmfp://") => uri = Some(s.to_string()),
            _ => args.usage(),
        }
    }
    let uri = uri.unwrap_or_else(|| args.usage());
    let server = common::resolve_rtmfp_uri(&uri)?;

    let (key_log, keys) = common::key_recorder();
    let mut builder = FlashProfile::client().hmac(hmac).sseq(sseq);
    if ephemeral {
        builder = builder.ephemeral_keys();
    }
    let key_log = record.is_some().then_some(key_log);
    let (profile, mut rng) = common::build_profile(builder, groups.as_deref(), key_log)?;

    let local = common::any_address_for(server);
    let seed = rand_core::RngCore::next_u64(&mut rng);
    let ep = common::engine(EndpointConfig::default(), Box::new(profile), seed);
    let limit = if record.is_some() { RECORD_LIMIT } else { 0 };
    let socket = common::bind(local)?;
    println!("bound to {}", socket.local_addr()?);
    let (host, mut events, task) = Host::spawn(
        common::Recorder::new(ep, limit),
        vec![socket],
        HostConfig::default(),
    )?;

    let epd = Epd::server(uri.as_bytes()).encode();
    let epd_hex = hex_encode(&epd);
    let started = Instant::now();
    let session = host
        .with(move |m, now| m.inner.connect(now, &epd, &[server]))
        .await??;
    println!("connecting to {uri} ({server}), EPD {epd_hex}");

    let deadline = tokio::time::Instant::from_std(started + timeout);
    let mut opened_at: Option<Instant> = None;
    let mut flow = None;
    let mut acked = false;
    let mut closing = false;
    let mut ok = false;
    loop {
        // after the open: close once traffic came back (or after 3 s), give up after 4 s
        let check = opened_at.map(|t| {
            let after = if closing { 4 } else { 3 };
            tokio::time::Instant::from_std(t + Duration::from_secs(after))
        });
        let e = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep_until(check.unwrap_or(deadline)), if check.is_some() => None,
            e = events.recv() => match e {
                Some(e) => Some(e),
                None => break,
            },
        };
        match e {
            Some(Event::SessionOpened {
                session: s, peer, ..
            }) if s == session => {
                let t = started.elapsed();
                opened_at = Some(Instant::now());
                println!(
                    "SessionOpened with {peer} after {:.1} ms",
                    t.as_secs_f64() * 1e3
                );
                // move some session traffic both ways: a flow and a message
                let (info, f) = host
                    .with(move |m, now| {
                        let info = m.inner.session_info(s);
                        let f = m
                            .inner
                            .open_flow(now, s, b"rtmfp-flash example", None, Priority::ROUTINE)
                            .and_then(|f| {
                                m.inner
                                    .send(now, s, f, Bytes::from_static(b"hello"), None)?;
                                m.inner.close_flow(now, s, f)?;
                                Ok(f)
                            });
                        (info, f)
                    })
                    .await?;
                let info = info.ok_or("no session info")?;
                common::print_session("server", &info, &keys);
                flow = Some(f?);
            }
            Some(Event::SessionFailed { error, .. }) => {
                println!("SessionFailed: {error}");
                return Err("session failed".into());
            }
            Some(Event::SendFlowComplete { flow: f, .. }) if Some(f) == flow => {
                println!("flow {f} acknowledged by the server");
                acked = true;
            }
            Some(Event::SendFlowException { flow: f, code, .. }) if Some(f) == flow => {
                println!("flow {f} rejected by the server (code {code}): it decrypted our packet");
                acked = true;
            }
            Some(Event::SessionClosed { reason, .. }) => {
                println!("SessionClosed: {reason:?}");
                ok = opened_at.is_some();
                closing = true;
            }
            _ => {}
        }
        if let Some(t) = opened_at {
            let (info, recorded) = host
                .with(move |m, _| (m.inner.session_info(session), m.recorded().to_vec()))
                .await?;
            let got = info.as_ref().map_or(0, |i| i.stats.packets_received);
            if !closing && ((acked && got > 0) || t.elapsed() >= Duration::from_secs(3)) {
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
                        &recorded,
                        &keys,
                    )?;
                    println!("recorded the exchange to {path}");
                }
                host.with(move |m, now| m.inner.close_session(now, session))
                    .await?;
                closing = true;
                ok = got > 0;
            }
            if closing && t.elapsed() >= Duration::from_secs(4) {
                break;
            }
        }
        if closing && host.with(|m, _| m.inner.session_count()).await? == 0 {
            break;
        }
    }
    drop(host);
    let _ = task.await;
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
