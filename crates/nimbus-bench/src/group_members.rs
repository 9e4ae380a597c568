//! The members of `nimbus bench group`: each one a sans-IO
//! [`Member`] (engine, NetConnection and NetGroup) on an `rtmfp-tokio`
//! [`Host`] of its own (its own socket), on a current-thread runtime of its
//! own thread. A host wakes on datagrams and timers only; the publisher's
//! media goes in as commands, paced by the tags' timestamps from the moment
//! it has a neighbour. The `nimbus group` command itself is
//! `nimbus_group::cli`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nimbus_media::{MediaSource, MediaTag, TestSource, TestSourceConfig};
use rand_core::{RngCore, SeedableRng};
use rtmfp_flash::{fingerprint, DhGroup, FlashProfile};
use rtmfp_netgroup::{
    GroupConfig, GroupEvent, GroupSpecifier, GroupStats, Member, MemberCommand, MemberConfig,
    MemberEvent,
};
use rtmfp_tokio::{bind_udp, Host, HostConfig};

/// Datagrams one receive call of a member's host takes.
const MEMBER_RECV_BATCH: usize = 8;
/// Longest a member's host waits for its sessions to close after leaving.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters of one member's run.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberReport {
    /// Group counters.
    pub stats: GroupStats,
    /// Media messages received (played).
    pub media_received: u64,
    /// Join sent → first media message played.
    pub first_media: Option<Duration>,
    /// UDP payload bytes the member's socket sent during the run.
    pub udp_sent: u64,
}

/// What one member does.
#[derive(Debug, Clone)]
pub(crate) struct MemberPlan {
    /// Server address.
    pub server: SocketAddr,
    /// Connect URL.
    pub url: String,
    /// Groupspec.
    pub spec: String,
    /// Publish the built-in test source under this stream name.
    pub publish: Option<String>,
    /// Play (stream name).
    pub play: Option<String>,
    /// Start this long after the run starts.
    pub start_after: Duration,
}

/// The groupspec for a group name: multicast, posting, object replication.
pub(crate) fn spec_for(name: &str) -> Result<String> {
    Ok(GroupSpecifier::new(name)
        .map_err(|e| anyhow!("{e}"))?
        .multicast_enabled(true)
        .posting_enabled(true)
        .object_replication_enabled(true)
        .group_spec_with_authorizations())
}

/// Runs every member, each on a thread of its own, for `run` from now;
/// returns their reports in the order of `plans`.
pub(crate) fn run_members(plans: Vec<MemberPlan>, run: Duration) -> Result<Vec<MemberReport>> {
    let started = Instant::now();
    let end = started + run;
    let mut threads = Vec::with_capacity(plans.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let seed = u64::from(std::process::id()) << 20 ^ (i as u64) ^ rand::random::<u64>();
        let t = std::thread::Builder::new()
            .name(format!("member-{i}"))
            .spawn(move || -> Result<MemberReport> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start a member runtime")?
                    .block_on(member(plan, seed, started, end))
            })
            .context("cannot start a member thread")?;
        threads.push(t);
    }
    threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.join()
                .map_err(|_| anyhow!("member {i} panicked"))?
                .with_context(|| format!("member {i}"))
        })
        .collect()
}

/// One member from `started + plan.start_after` to `end`.
async fn member(
    plan: MemberPlan,
    seed: u64,
    started: Instant,
    end: Instant,
) -> Result<MemberReport> {
    tokio::time::sleep_until((started + plan.start_after).into()).await;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    // librtmfp accepts only a certificate made of one 1024-bit static DH
    // key: group members use DH group 2
    let profile = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .build(&mut rng)
        .map_err(|e| anyhow!("cannot build an identity: {e:?}"))?;
    let me = fingerprint(rtmfp::CryptoProfile::certificate(&profile));
    let sock = bind_udp("127.0.0.1:0".parse()?, false, None).context("bind a member socket")?;
    let local = sock.local_addr()?;
    let now = rtmfp_tokio::now();
    let ep = Member::new_endpoint(profile, &mut rng, now);
    let cfg = MemberConfig {
        url: plan.url.clone(),
        servers: vec![plan.server],
        spec: plan.spec.clone(),
        local_addresses: vec![local],
        group: GroupConfig::default(),
        forward_media: false,
        group_seed: rng.next_u64(),
    };
    let m = Member::new(ep, me, cfg, now).map_err(|e| anyhow!("{e}"))?;
    let mut host_cfg = HostConfig::default().recv_batch(MEMBER_RECV_BATCH);
    host_cfg.close_timeout = LEAVE_TIMEOUT;
    let (host, mut events, task) = Host::spawn(m, vec![sock], host_cfg)?;
    if let Some(name) = &plan.publish {
        host.send(MemberCommand::Publish(name.clone())).await?;
    }
    if let Some(name) = &plan.play {
        host.send(MemberCommand::Play(name.clone())).await?;
    }
    let mut source = match plan.publish {
        Some(_) => Some(TestSource::new(TestSourceConfig::default())?),
        None => None,
    };
    // the next tag and the instant its timestamp counts from
    let mut pending: Option<MediaTag> = None;
    let mut media_t0: Option<tokio::time::Instant> = None;
    let end = tokio::time::Instant::from_std(end);
    loop {
        let due = match (media_t0, &pending) {
            (Some(t0), Some(tag)) => Some(t0 + Duration::from_millis(u64::from(tag.timestamp))),
            _ => None,
        };
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            e = events.recv() => match e {
                None => bail!("the member's host stopped"),
                Some(MemberEvent::Group(GroupEvent::NeighborConnect { .. })) => {
                    // publish from the first neighbour on
                    if let (None, Some(src)) = (media_t0, source.as_mut()) {
                        media_t0 = Some(tokio::time::Instant::now());
                        pending = src.next_tag()?;
                    }
                }
                Some(MemberEvent::ConnectFailed(why)) => bail!("NetConnection failed: {why}"),
                Some(MemberEvent::Disconnected) => bail!("the server closed the connection"),
                Some(MemberEvent::Error(why)) => bail!("{why}"),
                Some(_) => {}
            },
            () = tokio::time::sleep_until(due.unwrap_or(end)), if due.is_some() => {
                let (Some(t0), Some(src), Some(name)) = (media_t0, source.as_mut(), plan.publish.as_ref()) else {
                    continue;
                };
                let now = tokio::time::Instant::now();
                while let Some(tag) = pending.take() {
                    if t0 + Duration::from_millis(u64::from(tag.timestamp)) > now {
                        pending = Some(tag);
                        break;
                    }
                    host.send(MemberCommand::SendMedia {
                        name: name.clone(),
                        message_type: tag.kind.message_type(),
                        timestamp: tag.timestamp,
                        payload: tag.data,
                    })
                    .await?;
                    pending = src.next_tag()?;
                }
            }
        }
    }
    let io = host.stats();
    let status = host.with(|m, now| m.status(now)).await?;
    // leave; the host stops once the sessions closed (or after LEAVE_TIMEOUT)
    host.close().await;
    drop(host);
    drop(events);
    let _ = tokio::time::timeout(LEAVE_TIMEOUT * 2, task).await;
    Ok(MemberReport {
        stats: status.stats,
        media_received: status
            .playing
            .values()
            .map(|p| p.video + p.audio + p.data)
            .sum(),
        first_media: status.first_media_after_join,
        udp_sent: io.bytes_sent,
    })
}
