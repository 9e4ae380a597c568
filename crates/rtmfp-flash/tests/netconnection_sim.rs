//! End-to-end in the simulator: a [`NetConnection`] client against a minimal
//! in-test server built from the message-layer codecs (flow metadata, framing,
//! commands) answering connect / createStream / publish / play and relaying
//! media from publishers to players.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::{Command, Object, Value};
use nimbus_testkit::identity;
use nimbus_testkit::sim::{self, Engine, SimNode};
use rtmfp::{Endpoint, Event, Priority, SessionId};
use rtmfp_flash::message::{
    parse_connect_url, Body, FlowMetadata, NcEvent, NcState, NetConnection, RtmpMessage, Status,
    UserControl,
};
use rtmfp_flash::{FlashProfile, FlashProfileBuilder};
use rtmfp_sim::{LinkConfig, Sim};

/// The minimal server: one NetConnection per session.
#[derive(Default)]
struct MiniServer {
    /// (session, client recv flow) -> stream id
    recv: HashMap<(SessionId, u64), u32>,
    /// session -> client's control flow (recv)
    client_control: HashMap<SessionId, u64>,
    /// (session, stream) -> our sending flow
    send: HashMap<(SessionId, u32), u64>,
    /// session -> next stream id
    next_stream: HashMap<SessionId, u32>,
    /// name -> players
    players: HashMap<String, Vec<(SessionId, u32)>>,
    /// (session, stream) -> published name
    publishing: HashMap<(SessionId, u32), String>,
    apps: Vec<String>,
}

impl MiniServer {
    fn flow(&mut self, ep: &mut Endpoint, now: Instant, s: SessionId, stream: u32) -> u64 {
        if let Some(&f) = self.send.get(&(s, stream)) {
            return f;
        }
        let assoc = self.client_control[&s];
        let md = FlowMetadata::new(stream).encode();
        let f = ep
            .open_flow(now, s, &md, Some(assoc), Priority::PRIORITY)
            .unwrap();
        self.send.insert((s, stream), f);
        f
    }

    fn write(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        s: SessionId,
        stream: u32,
        ts: u32,
        body: &Body,
    ) {
        let f = self.flow(ep, now, s, stream);
        let m = RtmpMessage::from_body(ts, body).unwrap();
        ep.send(now, s, f, m.encode(), None).unwrap();
    }

    fn reply(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        s: SessionId,
        name: &str,
        tid: f64,
        arg: Value,
    ) {
        let c = Command::new(name, tid, Value::Null).with_arg(arg);
        self.write(ep, now, s, 0, 0, &Body::command(c));
    }

    fn status(&mut self, ep: &mut Endpoint, now: Instant, s: SessionId, stream: u32, code: &str) {
        let c = Command::new("onStatus", 0.0, Value::Null)
            .with_arg(Value::Object(Status::object(code, "status", code)));
        self.write(ep, now, s, stream, 0, &Body::command(c));
    }

    fn on_event(&mut self, ep: &mut Endpoint, now: Instant, e: &Event) {
        match *e {
            Event::IncomingFlow {
                session,
                flow,
                ref metadata,
                association,
            } => match FlowMetadata::decode(metadata) {
                Ok(md) => {
                    if md.stream_id == 0 && association.is_none() {
                        self.client_control.entry(session).or_insert(flow);
                    }
                    self.recv.insert((session, flow), md.stream_id);
                }
                Err(_) => ep.reject_flow(now, session, flow, 0).unwrap(),
            },
            Event::Readable { session, flow } => {
                while let Some(m) = ep.read(now, session, flow) {
                    let Some(&stream) = self.recv.get(&(session, flow)) else {
                        continue;
                    };
                    let msg = RtmpMessage::decode(&m.data).unwrap();
                    let body = msg.body().unwrap();
                    self.on_message(ep, now, session, stream, msg.timestamp, body);
                }
            }
            _ => {}
        }
    }

    fn on_message(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        s: SessionId,
        stream: u32,
        ts: u32,
        body: Body,
    ) {
        match body {
            Body::Command { command, .. } => self.on_command(ep, now, s, stream, command),
            Body::Audio(_) | Body::Video(_) | Body::Data { .. } => {
                let Some(name) = self.publishing.get(&(s, stream)).cloned() else {
                    return;
                };
                let body = match body {
                    Body::Data { message, amf3 } => Body::Data {
                        message: message.strip_set_data_frame(),
                        amf3,
                    },
                    b => b,
                };
                for (ps, pstream) in self.players.get(&name).cloned().unwrap_or_default() {
                    self.write(ep, now, ps, pstream, ts, &body);
                }
            }
            _ => {}
        }
    }

    fn on_command(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        s: SessionId,
        stream: u32,
        c: Command,
    ) {
        let tid = c.transaction_id;
        let arg0 = c.arguments.first().cloned().map(Value::into_unwrapped);
        match (stream, c.name.as_str()) {
            (0, "connect") => {
                let url = match c.command_object.get("tcUrl") {
                    Some(Value::String(u)) => u.clone(),
                    _ => String::new(),
                };
                let app = parse_connect_url(&url).app;
                if app == "app" {
                    self.apps.push(app);
                    let ok = Status::object("NetConnection.Connect.Success", "status", "welcome");
                    self.reply(ep, now, s, "_result", tid, Value::Object(ok));
                } else {
                    let no =
                        Status::object("NetConnection.Connect.Rejected", "error", "no such app");
                    self.reply(ep, now, s, "_error", tid, Value::Object(no));
                }
            }
            (0, "createStream") => {
                let n = self.next_stream.entry(s).or_insert(0);
                *n += 1;
                let id = *n;
                self.reply(ep, now, s, "_result", tid, Value::Number(f64::from(id)));
            }
            (0, "echo") => {
                self.reply(ep, now, s, "_result", tid, arg0.unwrap_or(Value::Null));
            }
            (0, _) => {}
            (_, "publish") => {
                if let Some(Value::String(name)) = arg0 {
                    self.publishing.insert((s, stream), name);
                    self.status(ep, now, s, stream, "NetStream.Publish.Start");
                }
            }
            (_, "play") => {
                if let Some(Value::String(name)) = arg0 {
                    self.players.entry(name).or_default().push((s, stream));
                    let begin = Body::UserControl(UserControl::StreamBegin(stream));
                    self.write(ep, now, s, 0, 0, &begin);
                    self.status(ep, now, s, stream, "NetStream.Play.Start");
                }
            }
            _ => {}
        }
    }
}

/// The client script: connect, call echo, two streams, play + publish, send
/// frames.
#[derive(Default)]
struct Script {
    events: Vec<NcEvent>,
    echo_tid: Option<f64>,
    pub_tid: Option<f64>,
    play_tid: Option<f64>,
    pub_stream: Option<u32>,
    play_stream: Option<u32>,
    sent: bool,
}

/// The test's side of each engine: a NetConnection client running the
/// script, or the minimal server.
#[derive(Default)]
struct Parts {
    nc: Option<NetConnection>,
    script: Script,
    server: Option<MiniServer>,
}

type Peer = SimNode<Engine<Parts>>;

fn peer(addr: SocketAddr, builder: FlashProfileBuilder, seed: u64, now: Instant) -> Peer {
    SimNode::new(
        addr,
        Engine::new(identity::flash(builder, seed, now), Parts::default()),
    )
}

impl sim::Script for Parts {
    fn process(&mut self, ep: &mut Endpoint, now: Instant) {
        self.pump(ep, now);
    }
}

impl Parts {
    fn pump(&mut self, ep: &mut Endpoint, now: Instant) {
        while let Some(e) = ep.poll_event() {
            if let Some(nc) = self.nc.as_mut() {
                nc.on_event(ep, now, &e);
            }
            if let Some(s) = self.server.as_mut() {
                s.on_event(ep, now, &e);
            }
        }
        if let Some(nc) = self.nc.as_mut() {
            let sc = &mut self.script;
            while let Some(e) = nc.poll_event() {
                match &e {
                    NcEvent::Connected(_) => {
                        sc.echo_tid = Some(nc.call(ep, now, "echo", vec!["hi".into()]).unwrap());
                        sc.pub_tid = Some(nc.create_stream(ep, now).unwrap());
                        sc.play_tid = Some(nc.create_stream(ep, now).unwrap());
                    }
                    NcEvent::StreamCreated {
                        transaction_id,
                        stream,
                    } => {
                        if Some(*transaction_id) == sc.play_tid {
                            sc.play_stream = Some(*stream);
                            nc.play(ep, now, *stream, "cam").unwrap();
                        } else {
                            sc.pub_stream = Some(*stream);
                            nc.publish(ep, now, *stream, "cam").unwrap();
                        }
                    }
                    _ => {}
                }
                sc.events.push(e);
            }
            let started = |code: &str| {
                sc.events
                    .iter()
                    .any(|e| matches!(e, NcEvent::Status { status, .. } if status.code == code))
            };
            if !sc.sent && started("NetStream.Play.Start") && started("NetStream.Publish.Start") {
                sc.sent = true;
                let s = sc.pub_stream.unwrap();
                let meta = flash_amf::DataMessage::set_data_frame(Value::Object(
                    Object::new().with("width", 2.0),
                ));
                nc.send_data(ep, now, s, 0, meta).unwrap();
                nc.send_video(ep, now, s, 33, Bytes::from_static(b"\x17\x01frame"))
                    .unwrap();
                nc.send_audio(ep, now, s, 34, Bytes::from_static(b"\xaf\x01sound"))
                    .unwrap();
            }
        }
    }
}

fn setup(seed: u64, link: LinkConfig, url: &str) -> Sim<Peer> {
    let mut sim: Sim<Peer> = Sim::new(seed);
    sim.net.set_default_link(link);
    let now = sim.now();
    let a: SocketAddr = "198.18.0.1:1000".parse().unwrap();
    let b: SocketAddr = "198.18.0.2:1935".parse().unwrap();
    let mut client = peer(a, FlashProfile::client(), seed ^ 1, now);
    let mut server = peer(b, FlashProfile::server(None), seed ^ 2, now);
    server.server = Some(MiniServer::default());
    let nc = client.call(now, |ep, now| {
        NetConnection::connect(ep, now, url, &[b], Object::new()).unwrap()
    });
    client.nc = Some(nc);
    client.call(now, |_, _| ());
    sim.add_node(client, &[a]);
    sim.add_node(server, &[b]);
    sim
}

fn run(seed: u64, link: LinkConfig) {
    let mut sim = setup(seed, link, "rtmfp://server.example/app/room");
    let ok = sim.run_until(Duration::from_secs(60), |s| {
        let ev = &s.node(0).script.events;
        ev.iter().any(|e| matches!(e, NcEvent::Video { .. }))
            && ev.iter().any(|e| matches!(e, NcEvent::Audio { .. }))
            && ev.iter().any(|e| matches!(e, NcEvent::Data { .. }))
    });
    let c = sim.node(0);
    let ev = &c.script.events;
    assert!(ok, "media did not come back: {ev:#?}");
    assert_eq!(c.nc.as_ref().unwrap().state(), NcState::Connected);
    assert!(
        matches!(&ev[0], NcEvent::Status { stream: 0, status } if status.code == "NetConnection.Connect.Success")
    );
    assert!(matches!(&ev[1], NcEvent::Connected(s) if s.level == "status"));
    let echo = c.script.echo_tid.unwrap();
    assert!(ev.iter().any(|e| matches!(e,
        NcEvent::CallResult { transaction_id, ok: true, values } if *transaction_id == echo && values[1] == Value::from("hi"))));
    let play = c.script.play_stream.unwrap();
    assert_ne!(Some(play), c.script.pub_stream);
    assert!(ev.iter().any(|e| matches!(e, NcEvent::UserControl { stream: 0, event: UserControl::StreamBegin(s) } if *s == play)));
    assert!(ev.iter().any(|e| matches!(e,
        NcEvent::Video { stream, timestamp: 33, payload } if *stream == play && &payload[..] == b"\x17\x01frame")));
    assert!(ev.iter().any(|e| matches!(e,
        NcEvent::Audio { stream, timestamp: 34, payload } if *stream == play && &payload[..] == b"\xaf\x01sound")));
    assert!(ev.iter().any(|e| matches!(e,
        NcEvent::Data { stream, message, .. } if *stream == play && message.handler == "onMetaData")));
    assert_eq!(sim.node(1).server.as_ref().unwrap().apps, ["app"]);
}

#[test]
fn connect_publish_play_perfect_link() {
    run(1, LinkConfig::perfect());
}

#[test]
fn connect_publish_play_lossy_link() {
    run(7, LinkConfig::wan(Duration::from_millis(30)).with_loss(0.1));
}

#[test]
fn connect_rejected() {
    let mut sim = setup(3, LinkConfig::lan(), "rtmfp://server.example/other");
    let ok = sim.run_until(Duration::from_secs(30), |s| {
        s.node(0).nc.as_ref().unwrap().state() == NcState::Closed
    });
    assert!(ok);
    let ev = &sim.node(0).script.events;
    assert!(ev.iter().any(|e| matches!(e,
        NcEvent::ConnectFailed(s) if s.code == "NetConnection.Connect.Rejected" && s.level == "error")));
    assert!(matches!(ev.last(), Some(NcEvent::Closed)));
}

#[test]
fn flow_synchronization_barrier_holds_messages_until_every_flow_arrives() {
    let mut sim = setup(11, LinkConfig::lan(), "rtmfp://server.example/app/room");
    assert!(sim.run_until(Duration::from_secs(30), |s| s
        .node(0)
        .script
        .events
        .iter()
        .any(|e| matches!(e, NcEvent::Video { .. }))));
    let got_after =
        |s: &Sim<Peer>| {
            s.node(0).script.events.iter().any(
                |e| matches!(e, NcEvent::Data { message, .. } if message.handler == "afterSync"),
            )
        };
    // the server puts Sync(8,2) and then a message on the play stream's flow,
    // but the second Sync(8,2) (on its control flow) only a second later
    let now = sim.now();
    let (session, play) = {
        let srv = sim.node(1).server.as_ref().unwrap();
        srv.players["cam"][0]
    };
    let sync = Body::UserControl(UserControl::FlowSync {
        sync_id: 8,
        count: 2,
    });
    let after = Body::Data {
        message: flash_amf::DataMessage::new("afterSync", vec![]),
        amf3: false,
    };
    {
        sim.node_mut(1).with(now, |m, now| {
            let Engine { ep, user } = m;
            let srv = user.server.as_mut().unwrap();
            srv.write(ep, now, session, play, 0, &sync);
            srv.write(ep, now, session, play, 0, &after);
            user.pump(ep, now);
        });
    }
    sim.run_for(Duration::from_secs(1));
    assert!(!got_after(&sim), "delivered across an incomplete barrier");
    let now = sim.now();
    {
        sim.node_mut(1).with(now, |m, now| {
            let Engine { ep, user } = m;
            let srv = user.server.as_mut().unwrap();
            srv.write(ep, now, session, 0, 0, &sync);
            user.pump(ep, now);
        });
    }
    assert!(
        sim.run_until(Duration::from_secs(2), |s| got_after(s)),
        "not delivered after the barrier completed"
    );
}
