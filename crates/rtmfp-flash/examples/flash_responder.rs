//! An RTMFP responder with Flash crypto (RFC 7425): answers "any server"
//! EPDs (e.g. rtmfp-cpp's `fcclient`), accepts every flow and counts what
//! it receives. The engine runs on `rtmfp-tokio`'s host inside a small
//! machine ([`Responder`]) that reads incoming messages and takes a new
//! session's details at once (the far end may close before this program
//! looks), wrapped in the examples' datagram recorder for `--record`.
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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtmfp::{Endpoint, EndpointConfig, Event, SessionId, SessionInfo};
use rtmfp_flash::{DhGroup, FlashProfile, Negotiation};
use rtmfp_tokio::{Host, HostConfig};

/// Datagrams kept for a `--record` test vector.
const RECORD_LIMIT: usize = 10;
/// Most reports waiting for this program (beyond: dropped).
const MAX_REPORTS: usize = 4096;

/// What the responder machine reports.
#[derive(Debug)]
enum Report {
    /// A session opened, with its details at that moment.
    Opened {
        session: SessionId,
        peer: SocketAddr,
        info: Option<SessionInfo>,
    },
    /// Messages read from a flow.
    Read { messages: usize, bytes: usize },
    /// Any other engine event.
    Engine(Event),
}

/// Beside the engine: reads every message as it becomes readable.
#[derive(Debug)]
struct Responder {
    reports: VecDeque<Report>,
}

impl common::EndpointApp for Responder {
    type Event = Report;

    fn pump(&mut self, ep: &mut Endpoint, now: Instant) {
        while let Some(e) = ep.poll_event() {
            let r = match e {
                Event::Readable { session, flow } => {
                    let (mut messages, mut bytes) = (0, 0);
                    while let Some(m) = ep.read(now, session, flow) {
                        messages += 1;
                        bytes += m.data.len();
                    }
                    Report::Read { messages, bytes }
                }
                Event::SessionOpened { session, peer, .. } => Report::Opened {
                    session,
                    peer,
                    info: ep.session_info(session),
                },
                e => Report::Engine(e),
            };
            if self.reports.len() < MAX_REPORTS {
                self.reports.push_back(r);
            }
        }
    }

    fn poll_event(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = common::Args::new(
        "flash_responder [--bind ADDR:PORT] [--require] [--no-hmac] [--no-sseq] [--static] [--hostname NAME] [--group N] [--record FILE] [--sessions N] [--time SECS]",
    );
    let mut bind: SocketAddr = "127.0.0.1:1935".parse()?;
    let mut hmac = Negotiation::PREFERRED;
    let mut sseq = Negotiation::PREFERRED;
    let mut static_keys = false;
    let mut hostname: Option<String> = None;
    let mut groups: Option<Vec<DhGroup>> = None;
    let mut record: Option<String> = None;
    let mut sessions_limit: Option<usize> = None;
    let mut run_for = Duration::from_secs(30);
    while let Some(a) = args.next_arg() {
        match a.as_str() {
            "--bind" => bind = args.value().parse()?,
            "--require" => {
                hmac = Negotiation::REQUIRED;
                sseq = Negotiation::REQUIRED;
            }
            "--no-hmac" => hmac = Negotiation::OFF,
            "--no-sseq" => sseq = Negotiation::OFF,
            "--static" => static_keys = true,
            "--hostname" => hostname = Some(args.value()),
            "--group" => {
                let g = DhGroup::from_id(args.value().parse()?).unwrap_or_else(|| args.usage());
                groups.get_or_insert_with(Vec::new).push(g);
            }
            "--record" => record = Some(args.value()),
            "--sessions" => sessions_limit = Some(args.value().parse()?),
            "--time" => run_for = Duration::from_secs(args.value().parse()?),
            _ => args.usage(),
        }
    }

    let (key_log, keys) = common::key_recorder();
    let mut builder = FlashProfile::server(hostname.as_deref())
        .hmac(hmac)
        .sseq(sseq);
    if static_keys {
        builder = builder.static_keys();
    }
    let key_log = record.is_some().then_some(key_log);
    let (profile, mut rng) = common::build_profile(builder, groups.as_deref(), key_log)?;
    let seed = rand_core::RngCore::next_u64(&mut rng);
    let ep = common::engine(EndpointConfig::default(), Box::new(profile), seed);
    let limit = if record.is_some() { RECORD_LIMIT } else { 0 };
    let socket = common::bind(bind)?;
    println!("listening on {}", socket.local_addr()?);
    let responder = common::Driven {
        ep,
        app: Responder {
            reports: VecDeque::new(),
        },
    };
    let (host, mut events, task) = Host::spawn(
        common::Recorder::new(responder, limit),
        vec![socket],
        HostConfig::default(),
    )?;

    let started = Instant::now();
    let end = tokio::time::Instant::from_std(started + run_for);
    let mut opened = 0usize;
    let mut closed = 0usize;
    let mut bytes = 0usize;
    let mut messages = 0usize;
    let mut recorded = false;
    let mut first_open: Option<Instant> = None;
    loop {
        // the test vector is written 2 s after the first session opened
        let write_at = match (&record, first_open) {
            (Some(_), Some(t)) if !recorded => {
                Some(tokio::time::Instant::from_std(t + Duration::from_secs(2)))
            }
            _ => None,
        };
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            () = tokio::time::sleep_until(write_at.unwrap_or(end)), if write_at.is_some() => {
                if let Some(path) = &record {
                    let datagrams = host.with(|m, _| m.recorded().to_vec()).await?;
                    common::write_vector(
                        path,
                        "rtmfp-cpp fcclient -> rtmfp-flash flash_responder",
                        &datagrams,
                        &keys,
                    )?;
                    println!("recorded the exchange to {path}");
                }
                recorded = true;
            }
            e = events.recv() => {
                let Some(e) = e else { break };
                match e {
                    Report::Opened { session, peer, info } => {
                        opened += 1;
                        first_open.get_or_insert_with(Instant::now);
                        let info = info.ok_or("no session info")?;
                        println!("SessionOpened {session:?} from {peer}");
                        common::print_session("client", &info, &keys);
                    }
                    Report::Read { messages: n, bytes: b } => {
                        messages += n;
                        bytes += b;
                    }
                    Report::Engine(Event::IncomingFlow {
                        session,
                        flow,
                        metadata,
                        ..
                    }) => {
                        println!(
                            "IncomingFlow {session:?} flow {flow} metadata {:?}",
                            String::from_utf8_lossy(&metadata)
                        );
                    }
                    Report::Engine(Event::RecvFlowComplete { session, flow }) => {
                        println!("flow {flow} of {session:?} complete; {messages} messages, {bytes} bytes so far");
                    }
                    Report::Engine(Event::SessionClosed { session, reason }) => {
                        closed += 1;
                        println!("SessionClosed {session:?}: {reason:?}");
                    }
                    _ => {}
                }
            }
        }
        if sessions_limit.is_some_and(|n| closed >= n) {
            break;
        }
    }
    drop(host);
    let _ = task.await;
    println!(
        "sessions opened {opened}, closed {closed}; received {messages} messages, {bytes} bytes"
    );
    Ok(())
}
