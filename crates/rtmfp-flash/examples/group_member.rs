//! A NetGroup member on a blocking UDP socket: joins a group through a
//! rendezvous server and publishes an FLV file into it as a multicast
//! stream, or plays a multicast stream into an FLV file.
//!
//! ```text
//! cargo run --release -p rtmfp-flash --example group_member -- \
//!     SERVER_ADDR URL GROUPSPEC publish STREAM FILE.flv SECONDS
//! cargo run --release -p rtmfp-flash --example group_member -- \
//!     SERVER_ADDR URL GROUPSPEC play STREAM OUT.flv SECONDS
//! ```
//!
//! For example, against `nimbus server --listen 127.0.0.1:1935`:
//! `127.0.0.1:1935 rtmfp://127.0.0.1:1935/live G:027f0201010103010c050e74657374011b00 play test123 out.flv 20`.
//! (The `nimbus group` command is the full-featured member.)

mod common;

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::UdpNode;
use rand_core::SeedableRng;
use rtmfp::{EndpointConfig, Event};
use rtmfp_flash::amf::flv::{FlvHeader, FlvReader, FlvTag, FlvWriter, TagType};
use rtmfp_flash::amf::Object;
use rtmfp_flash::group::{GroupConfig, GroupEvent, NetGroup};
use rtmfp_flash::message::{NcEvent, NetConnection};
use rtmfp_flash::{fingerprint, DhGroup, FlashProfile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 8 {
        eprintln!("usage: group_member SERVER_ADDR URL GROUPSPEC publish|play STREAM FILE SECONDS");
        std::process::exit(2);
    }
    let server: SocketAddr = a[1].parse()?;
    let (url, spec, mode, stream, file) = (&a[2], &a[3], a[4].as_str(), &a[5], &a[6]);
    let seconds: u64 = a[7].parse()?;
    let seed = u64::from(std::process::id()) ^ 0x6e67;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    // librtmfp's peers accept only a certificate made of one 1024-bit
    // static DH key (group 2)
    let profile = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .build(&mut rng)?;
    let me = fingerprint(rtmfp::CryptoProfile::certificate(&profile));
    println!("peer ID {me}");
    let mut node = UdpNode::bind(
        "0.0.0.0:0".parse()?,
        EndpointConfig::default(),
        Box::new(profile),
        seed,
    )?;
    let local = node.local_addr()?;
    let started = Instant::now();
    let mut nc = NetConnection::connect(&mut node.ep, started, url, &[server], Object::new())?;
    nc.set_peer_addresses(&[SocketAddr::new("127.0.0.1".parse()?, local.port())]);
    let mut group: Option<NetGroup> = None;
    let mut reader = if mode == "publish" {
        Some(FlvReader::new(BufReader::new(File::open(file)?))?)
    } else {
        None
    };
    let mut writer = if mode == "play" {
        Some(FlvWriter::new(
            File::create(file)?,
            &FlvHeader::new(true, true),
        )?)
    } else {
        None
    };
    let mut pending: Option<FlvTag> = None;
    let mut media_start: Option<Instant> = None;
    let (mut written, mut first_frame) = (0u64, None);
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        node.turn(Duration::from_millis(5))?;
        let now = Instant::now();
        while let Some(ev) = node.ep.poll_event() {
            if let Some(g) = group.as_mut() {
                if g.on_event(&mut node.ep, now, &ev) {
                    continue;
                }
            }
            if nc.on_event(&mut node.ep, now, &ev) {
                continue;
            }
            if let Event::IncomingFlow { session, flow, .. } = ev {
                let _ = node.ep.reject_flow(now, session, flow, 0);
            }
        }
        while let Some(e) = nc.poll_event() {
            match e {
                NcEvent::Connected(_) => {
                    println!("NetConnection.Connect.Success");
                    let mut g = NetGroup::new(
                        spec,
                        me,
                        nc.session(),
                        nc.control_flow_id(),
                        vec![server],
                        GroupConfig::default(),
                        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 1)),
                    )?;
                    g.join(&mut node.ep, now)?;
                    if mode == "publish" {
                        g.publish(&mut node.ep, now, stream)?;
                    } else {
                        g.play(stream)?;
                    }
                    group = Some(g);
                }
                NcEvent::ConnectFailed(s) => {
                    return Err(format!("connect failed: {}", s.code).into())
                }
                _ => {}
            }
        }
        let Some(g) = group.as_mut() else { continue };
        if g.poll_timeout().is_some_and(|t| t <= now) {
            g.handle_timeout(&mut node.ep, now);
        }
        // publish: start once a neighbour is there, paced by timestamps
        if let Some(r) = reader.as_mut() {
            if media_start.is_none() && g.neighbor_count() > 0 {
                media_start = Some(now);
            }
            if let Some(t0) = media_start {
                loop {
                    if pending.is_none() {
                        pending = r.next_tag()?;
                    }
                    let Some(tag) = pending.as_ref() else { break };
                    if t0 + Duration::from_millis(u64::from(tag.timestamp)) > now {
                        break;
                    }
                    let t = match tag.tag_type {
                        TagType::Audio => 8,
                        TagType::Video => 9,
                        _ => 18,
                    };
                    g.send_media(&mut node.ep, now, stream, t, tag.timestamp, &tag.data)?;
                    pending = None;
                }
            }
        }
        while let Some(e) = g.poll_event() {
            match e {
                GroupEvent::Media {
                    message_type,
                    timestamp,
                    payload,
                    ..
                } => {
                    if let Some(w) = writer.as_mut() {
                        let ty = match message_type {
                            8 => TagType::Audio,
                            9 => TagType::Video,
                            _ => TagType::ScriptData,
                        };
                        w.write_tag(&FlvTag::new(ty, timestamp, payload))?;
                        written += 1;
                        first_frame.get_or_insert(now - started);
                    }
                }
                other => println!("{}: {:?}", other.code().unwrap_or("event"), other),
            }
        }
    }
    if let Some(g) = group.as_mut() {
        println!("stats {:?}", g.stats());
        g.leave(&mut node.ep, Instant::now());
    }
    nc.close(&mut node.ep, Instant::now());
    node.turn(Duration::from_millis(50))?;
    if let Some(w) = writer.as_mut() {
        w.flush()?;
    }
    println!("tags written {written}, first after {first_frame:?}");
    Ok(())
}
