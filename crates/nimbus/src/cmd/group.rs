//! `nimbus group`: a NetGroup member on the command line, interactive or
//! scripted (`--publish`, `--play`, `--post`, `--seconds`, `--json`).
//! User guide: `docs/netgroup.md`, "Command line".

use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use rtmfp_flash::{DhGroup, PeerId};
use rtmfp_netgroup::GroupEvent;
use serde_json::json;

use nimbus_group::{
    decode_post_text, encode_post_text, GroupCommand, GroupHandle, GroupMember, GroupMemberConfig,
    GroupStatus, MemberCommand, MemberEvent, SinkSpec, SourceSpec,
};

/// Lines of standard input waiting for the member (the reader waits beyond).
const STDIN_LINES: usize = 64;

/// Arguments of `nimbus group`.
#[derive(Args, Debug, Clone)]
pub(crate) struct GroupArgs {
    /// The rendezvous server: rtmfp://HOST[:PORT]/APP.
    #[arg(long, default_value = "rtmfp://127.0.0.1:1935/group")]
    server: String,
    /// Group name: the groupspec is built from it with multicast, posting
    /// and object replication enabled (members must use the same name).
    #[arg(long, conflicts_with = "spec")]
    group: Option<String>,
    /// A full groupspec (`G:…`, e.g. from a Flash app) instead of --group.
    #[arg(long)]
    spec: Option<String>,
    /// Publish a multicast stream with this name.
    #[arg(long)]
    publish: Option<String>,
    /// What --publish sends: `test` (H.264 test pattern and tone), an FLV
    /// file, or `-` for FLV on standard input.
    #[arg(long, default_value = "test")]
    source: String,
    /// Play the multicast stream with this name.
    #[arg(long)]
    play: Option<String>,
    /// Write the played stream to this FLV file (`-`: standard output, e.g.
    /// `| ffplay -`).
    #[arg(long, requires = "play")]
    record: Option<String>,
    /// Post this text (an AMF0 string) once a neighbour is connected
    /// (repeatable).
    #[arg(long)]
    post: Vec<String>,
    /// Leave after this many seconds (default: at `quit` or end of input).
    #[arg(long)]
    seconds: Option<f64>,
    /// Local UDP address (default: any address, a free port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// DH groups of our identity (repeatable: 2, 5, 14, 16; default 16, 14
    /// and 2). `--dh-group 2` alone for librtmfp peers.
    #[arg(long = "dh-group")]
    dh_groups: Vec<u8>,
    /// Print a JSON summary at the end (and no event lines).
    #[arg(long)]
    json: bool,
}

/// Where event lines go: stderr when stdout carries FLV.
struct Out {
    quiet: bool,
    stderr: bool,
}

impl Out {
    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        if self.stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

fn dh_group(n: u8) -> anyhow::Result<DhGroup> {
    Ok(match n {
        2 => DhGroup::Modp1024,
        5 => DhGroup::Modp1536,
        14 => DhGroup::Modp2048,
        16 => DhGroup::Modp4096,
        _ => bail!("unknown DH group {n} (2, 5, 14 or 16)"),
    })
}

fn parse_address(s: &str) -> anyhow::Result<[u8; 32]> {
    s.parse::<PeerId>()
        .map(|p| p.0)
        .map_err(|_| anyhow::anyhow!("a group address is 64 hex digits, not {s:?}"))
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
}

/// A user-given number of seconds: NaN and negatives are 0, at most ten years.
fn seconds(s: f64) -> Duration {
    const MAX: f64 = 10.0 * 365.0 * 86_400.0;
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(s.min(MAX))
    }
}

const HELP: &str = "commands: post TEXT | publish NAME [test|FILE] | unpublish NAME | play NAME [FILE] | \
send-nearest ADDRESS TEXT | send-all TEXT | have FIRST LAST | want FIRST LAST | neighbors | status | quit";

/// One interactive line; `false` to quit (or when the member has ended).
async fn command(h: &GroupHandle, line: &str, out: &Out) -> bool {
    let line = line.trim();
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let two = || rest.split_once(' ').map(|(a, b)| (a.trim(), b.trim()));
    let range = || -> Option<(u64, u64)> {
        let (a, b) = two()?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let c: GroupCommand = match cmd {
        "" => return true,
        "quit" | "exit" => return false,
        "post" if !rest.is_empty() => MemberCommand::Post(encode_post_text(rest)).into(),
        "publish" if !rest.is_empty() => {
            let (name, src) = two().unwrap_or((rest, "test"));
            GroupCommand::Publish {
                name: name.into(),
                source: SourceSpec::parse(src),
            }
        }
        "unpublish" if !rest.is_empty() => GroupCommand::Unpublish(rest.into()),
        "play" if !rest.is_empty() => {
            let (name, sink) = two().unwrap_or((rest, ""));
            GroupCommand::Play {
                name: name.into(),
                sink: SinkSpec::parse(sink),
            }
        }
        "send-nearest" => match two().map(|(a, t)| (parse_address(a), t)) {
            Some((Ok(address), text)) => MemberCommand::SendToNearest {
                address,
                message: encode_post_text(text),
            }
            .into(),
            Some((Err(e), _)) => {
                out.line(&format!("{e}"));
                return true;
            }
            None => {
                out.line(HELP);
                return true;
            }
        },
        "send-all" if !rest.is_empty() => {
            MemberCommand::SendToAllNeighbors(encode_post_text(rest)).into()
        }
        "have" | "want" => match range() {
            Some((a, b)) if cmd == "have" => MemberCommand::AddHaveObjects(a, b).into(),
            Some((a, b)) => MemberCommand::AddWantObjects(a, b).into(),
            None => {
                out.line(HELP);
                return true;
            }
        },
        "neighbors" | "status" => {
            return match h.status().await {
                Some(s) => {
                    print_status(&s, out, cmd == "neighbors");
                    true
                }
                None => false,
            };
        }
        _ => {
            out.line(HELP);
            return true;
        }
    };
    h.send(c).await.is_ok()
}

fn print_status(s: &GroupStatus, out: &Out, neighbors_only: bool) {
    if neighbors_only {
        out.line(&format!("{} neighbours", s.neighbors.len()));
        for n in &s.neighbors {
            out.line(&format!("  {n}"));
        }
        return;
    }
    let st = &s.stats;
    out.line(&format!(
        "connected {} joined {} neighbours {} members known {} (estimated {})",
        s.connected,
        s.joined,
        s.neighbors.len(),
        st.members_known,
        s.estimated_members
    ));
    for (name, n) in &s.publishing {
        out.line(&format!("publishing {name}: {n} messages"));
    }
    for (name, p) in &s.playing {
        out.line(&format!(
            "playing {name}: {} video {} audio {} data, {} written",
            p.video, p.audio, p.data, p.written
        ));
    }
    out.line(&format!(
        "fragments published {} received {} duplicate {} missed {} sent {}; pulls {}; media delivered {}; posts {}",
        st.fragments_published,
        st.fragments_received,
        st.fragments_duplicate,
        st.fragments_missed,
        st.fragments_sent,
        st.pulls_sent,
        st.media_delivered,
        st.posts_delivered
    ));
}

/// The JSON summary of a run.
fn summary_json(s: &GroupStatus, posts: &[String]) -> serde_json::Value {
    let st = &s.stats;
    let played: serde_json::Map<String, serde_json::Value> = s
        .playing
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                json!({
                    "video": p.video,
                    "audio": p.audio,
                    "data": p.data,
                    "written": p.written,
                    "join_to_first_media_ms": ms(p.first_media_after_join),
                    "join_to_first_video_ms": ms(p.first_video_after_join),
                }),
            )
        })
        .collect();
    let first_video = s
        .playing
        .values()
        .filter_map(|p| p.first_video_after_join)
        .min();
    json!({
        "peer_id": s.peer_id,
        "group_address": s.group_address,
        "group_id": s.group_id,
        "connected": s.connected,
        "joined": s.joined,
        "start_to_join_ms": ms(s.joined_after),
        "neighbors": s.neighbors,
        "estimated_members": s.estimated_members,
        "stats": {
            "members_known": st.members_known,
            "neighbors": st.neighbors,
            "fragments_published": st.fragments_published,
            "fragments_received": st.fragments_received,
            "fragments_duplicate": st.fragments_duplicate,
            "fragments_missed": st.fragments_missed,
            "fragments_sent": st.fragments_sent,
            "fragments_played": st.fragments_played,
            "fragment_bytes_sent": st.fragment_bytes_sent,
            "fragment_bytes_received": st.fragment_bytes_received,
            "pulls_sent": st.pulls_sent,
            "media_delivered": st.media_delivered,
            "posts_delivered": st.posts_delivered,
            "events_dropped": st.events_dropped,
            "connects_refused": st.connects_refused,
        },
        "published": s.publishing,
        "played": played,
        "media_written": s.playing.values().map(|p| p.written).sum::<u64>(),
        "join_to_first_media_ms": ms(s.first_media_after_join),
        "join_to_first_video_ms": ms(first_video),
        "start_to_first_video_ms": ms(first_video.zip(s.joined_after).map(|(a, b)| a + b)),
        "posts": posts,
        "seconds": s.uptime.as_secs_f64(),
    })
}

/// Runs `nimbus group`.
pub(crate) async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let json = args.json;
    let (status, posts) = run_member(args).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(&status, &posts))?
        );
    }
    Ok(())
}

/// Runs one member as `nimbus group` does (event lines unless `--json`) and
/// returns its final status and the posts it received.
async fn run_member(args: GroupArgs) -> anyhow::Result<(GroupStatus, Vec<String>)> {
    let spec = match (&args.spec, &args.group) {
        (Some(s), _) => s.clone(),
        (None, Some(g)) => GroupMemberConfig::spec_for(g)?,
        (None, None) => bail!("give a group: --group NAME or --spec G:…"),
    };
    let mut cfg = GroupMemberConfig::new(&args.server, &spec)
        .with_context(|| format!("server {}", args.server))?;
    if !args.dh_groups.is_empty() {
        cfg.dh_groups = Some(
            args.dh_groups
                .iter()
                .map(|&g| dh_group(g))
                .collect::<anyhow::Result<_>>()?,
        );
    }
    let bind = args
        .bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let sock = std::net::UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    let source = SourceSpec::parse(&args.source);
    if let SourceSpec::File(p) = &source {
        if args.publish.is_some() && !p.is_file() {
            bail!("no FLV file at {}", p.display());
        }
    }
    let stdin_is_media = args.publish.is_some() && matches!(source, SourceSpec::Stdin);
    let out = Out {
        quiet: args.json,
        stderr: args.record.as_deref() == Some("-"),
    };
    let (h, mut events) = GroupMember::spawn(cfg, Some(sock))?;
    out.line(&format!("peer ID {}", h.peer_id));
    out.line(&format!("group address {}", h.group_address));
    out.line(&format!("groupspec {spec}"));
    if let Some(name) = &args.publish {
        h.send(GroupCommand::Publish {
            name: name.clone(),
            source,
        })
        .await?;
    }
    if let Some(name) = &args.play {
        h.send(GroupCommand::Play {
            name: name.clone(),
            sink: args
                .record
                .as_deref()
                .map(SinkSpec::parse)
                .unwrap_or_default(),
        })
        .await?;
    }
    if args.seconds.is_none() && !stdin_is_media && !args.json {
        out.line(HELP);
    }
    let deadline = args
        .seconds
        .map(|s| tokio::time::Instant::now() + seconds(s));
    // commands from standard input (unless it carries media), read on a
    // detached thread: a pending read never holds up the exit
    let mut stdin = (!stdin_is_media).then(|| {
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(STDIN_LINES);
        let _ = std::thread::Builder::new()
            .name("group-stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(l) = line else { break };
                    if tx.blocking_send(l).is_err() {
                        break;
                    }
                }
            });
        rx
    });
    let mut to_post = args.post.clone();
    let mut posts: Vec<String> = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = events.recv() => match e {
                None => break,
                Some(e) => {
                    if !on_event(&h, e, &out, &mut to_post, &mut posts).await {
                        break;
                    }
                }
            },
            l = async { stdin.as_mut().expect("guarded").recv().await }, if stdin.is_some() => match l {
                Some(line) => {
                    if !command(&h, &line, &out).await {
                        break;
                    }
                }
                // end of input: quit, unless a duration was given
                None => {
                    stdin = None;
                    if deadline.is_none() {
                        break;
                    }
                }
            },
            () = sleep => break,
            _ = &mut ctrl_c => break,
        }
    }
    // the final status, then leave
    let status = h.quit().await?;
    while let Ok(e) = events.try_recv() {
        if let MemberEvent::Group(GroupEvent::PostingNotify { message, .. }) = e {
            posts.push(decode_post_text(&message));
        }
    }
    print_status(&status, &out, false);
    Ok((status, posts))
}

/// Prints an event and answers it where needed; `false` when the member
/// has ended.
async fn on_event(
    h: &GroupHandle,
    e: MemberEvent,
    out: &Out,
    to_post: &mut Vec<String>,
    posts: &mut Vec<String>,
) -> bool {
    match e {
        MemberEvent::Connected => out.line("NetConnection.Connect.Success"),
        MemberEvent::ConnectFailed(s) => {
            eprintln!("NetConnection.Connect.Failed {s}")
        }
        MemberEvent::Disconnected => out.line("NetConnection.Connect.Closed"),
        MemberEvent::Joined => {}
        MemberEvent::Error(s) => eprintln!("error: {s}"),
        MemberEvent::Notice(s) => out.line(&s),
        MemberEvent::Group(g) => {
            let code = g.code().unwrap_or("");
            match g {
                GroupEvent::NeighborConnect { peer, .. } => {
                    out.line(&format!("{code} {peer}"));
                    // --post: once someone is there to receive it
                    for t in std::mem::take(to_post) {
                        if h.send(MemberCommand::Post(encode_post_text(&t)))
                            .await
                            .is_err()
                        {
                            return false;
                        }
                        out.line(&format!("posted {t}"));
                    }
                }
                GroupEvent::NeighborDisconnect { peer, .. } => out.line(&format!("{code} {peer}")),
                GroupEvent::PublishNotify { name } | GroupEvent::UnpublishNotify { name } => {
                    out.line(&format!("{code} {name}"))
                }
                GroupEvent::PostingNotify { message, .. } => {
                    let text = decode_post_text(&message);
                    out.line(&format!("{code} {text}"));
                    posts.push(text);
                }
                GroupEvent::SendToNotify {
                    message,
                    from,
                    from_local,
                } => out.line(&format!(
                    "{code} {} from {}{}",
                    decode_post_text(&message),
                    PeerId(from),
                    if from_local { " (local)" } else { "" }
                )),
                GroupEvent::ReplicationRequest { index, request } => {
                    // serve a small AMF0 string per object index
                    out.line(&format!("{code} {index}"));
                    let object = encode_post_text(&format!("object {index}"));
                    let answer = MemberCommand::WriteRequestedObject { request, object };
                    if h.send(answer).await.is_err() {
                        return false;
                    }
                }
                GroupEvent::ReplicationFetchResult { index, object } => {
                    out.line(&format!("{code} {index} {}", decode_post_text(&object)))
                }
                GroupEvent::ConnectSuccess => out.line(code),
                GroupEvent::Media { .. } => {}
            }
        }
        other => out.line(&format!("{other:?}")),
    }
    true
}
