//! A minimal NetGroup member: the sans-IO [`Member`] on `rtmfp-tokio`'s
//! host. It joins a group through a rendezvous server and publishes an FLV
//! file into it as a multicast stream, or plays a multicast stream into an
//! FLV file.
//!
//! ```text
//! cargo run --release -p rtmfp-netgroup --example group_member -- \
//!     SERVER_ADDR URL GROUPSPEC publish STREAM FILE.flv SECONDS
//! cargo run --release -p rtmfp-netgroup --example group_member -- \
//!     SERVER_ADDR URL GROUPSPEC play STREAM OUT.flv SECONDS
//! ```
//!
//! For example, against `nimbus server --listen 127.0.0.1:1935`:
//! `127.0.0.1:1935 rtmfp://127.0.0.1:1935/live G:027f0201010103010c050e74657374011b00 play test123 out.flv 20`.
//! (The `nimbus group` command is the full-featured member.)

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use flash_amf::flv::{FlvHeader, FlvReader, FlvTag, FlvWriter, TagType};
use rand_core::SeedableRng;
use rtmfp::EndpointConfig;
use rtmfp_flash::{fingerprint, DhGroup, FlashProfile};
use rtmfp_netgroup::{GroupConfig, GroupEvent, Member, MemberCommand, MemberConfig, MemberEvent};
use rtmfp_tokio::{Host, HostConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let local = SocketAddr::new("127.0.0.1".parse()?, socket.local_addr()?.port());
    let now = rtmfp_tokio::now();
    let ep = rtmfp::Endpoint::new(
        EndpointConfig::default(),
        Box::new(profile),
        Box::new(rng),
        now,
    );
    let cfg = MemberConfig {
        url: url.clone(),
        servers: vec![server],
        spec: spec.clone(),
        local_addresses: vec![local],
        group: GroupConfig::default(),
        forward_media: true,
        group_seed: seed ^ 1,
    };
    let member = Member::new(ep, me, cfg, now)?;
    let (host, mut events, task) = Host::spawn(member, vec![socket], HostConfig::default())?;
    if mode == "publish" {
        host.send(MemberCommand::Publish(stream.clone())).await?;
    } else {
        host.send(MemberCommand::Play(stream.clone())).await?;
    }
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
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let (mut written, mut first_frame) = (0u64, None);
    let mut media_start: Option<tokio::time::Instant> = None;
    let mut pending: Option<FlvTag> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            e = events.recv() => match e {
                None => break,
                Some(MemberEvent::Group(GroupEvent::Media { message_type, timestamp, payload, .. })) => {
                    if let Some(w) = writer.as_mut() {
                        let ty = match message_type {
                            8 => TagType::Audio,
                            9 => TagType::Video,
                            _ => TagType::ScriptData,
                        };
                        w.write_tag(&FlvTag::new(ty, timestamp, payload))?;
                        written += 1;
                        first_frame.get_or_insert(started.elapsed());
                    }
                }
                Some(MemberEvent::ConnectFailed(why)) => return Err(format!("connect failed: {why}").into()),
                Some(MemberEvent::Group(other)) => println!("{}: {:?}", other.code().unwrap_or("event"), other),
                Some(other) => println!("{other:?}"),
            },
            _ = tick.tick(), if reader.is_some() => {
                // publish: start once a neighbour is there, paced by timestamps
                let now = tokio::time::Instant::now();
                if media_start.is_none() && host.with(|m, _| m.neighbor_count()).await? > 0 {
                    media_start = Some(now);
                }
                let (Some(t0), Some(r)) = (media_start, reader.as_mut()) else { continue };
                loop {
                    if pending.is_none() {
                        pending = r.next_tag()?;
                    }
                    let Some(tag) = pending.as_ref() else { break };
                    if t0 + Duration::from_millis(u64::from(tag.timestamp)) > now {
                        break;
                    }
                    let message_type = match tag.tag_type {
                        TagType::Audio => 8,
                        TagType::Video => 9,
                        _ => 18,
                    };
                    host.send(MemberCommand::SendMedia {
                        name: stream.clone(),
                        message_type,
                        timestamp: tag.timestamp,
                        payload: Bytes::from(tag.data.to_vec()),
                    })
                    .await?;
                    pending = None;
                }
            }
        }
    }
    let stats = host.with(|m, now| m.status(now).stats).await?;
    println!("stats {stats:?}");
    host.send(MemberCommand::Leave).await?;
    drop(host);
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    if let Some(w) = writer.as_mut() {
        w.flush()?;
    }
    println!("tags written {written}, first after {first_frame:?}");
    Ok(())
}
