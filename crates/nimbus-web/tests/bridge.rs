//! The bridge machine against a WebRTC peer in memory (a str0m `Rtc`
//! standing in for the browser), in virtual time: the offer and answer,
//! ICE and DTLS, frames both ways untouched, key-frame requests both ways,
//! a reloaded page replacing the old connection, and bad input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_media::g711::Law;
use nimbus_web::bridge::{Bridge, BridgeCommand, BridgeConfig, BridgeEvent, FrameOut};
use rtmfp::Machine;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const BRIDGE: &str = "127.0.0.1:40000";

/// A browser-like peer: full ICE, H.264 pm1 + PCMU/PCMA, sendrecv audio and
/// video.
struct Page {
    rtc: Rtc,
    addr: SocketAddr,
    audio: Mid,
    video: Mid,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    video_in: Vec<(u64, Vec<u8>)>,
    audio_in: Vec<(u64, Vec<u8>)>,
    keyframe_requests: u32,
}

impl Page {
    fn new(now: Instant, port: u16) -> (Page, String) {
        let mut cfg = RtcConfig::new()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .clear_codecs()
            .enable_pcmu(true, false)
            .enable_pcma(true, false);
        cfg.codec_config()
            .add_h264(102.into(), Some(103.into()), true, 0x42e01f);
        // a variant the bridge must not pick
        cfg.codec_config()
            .add_h264(104.into(), Some(105.into()), false, 0x42001f);
        let mut rtc = cfg.build(now);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let sdp = offer.to_sdp_string();
        (
            Page {
                rtc,
                addr,
                audio,
                video,
                pending: Some(pending),
                connected: false,
                video_in: Vec::new(),
                audio_in: Vec::new(),
                keyframe_requests: 0,
            },
            sdp,
        )
    }

    fn accept(&mut self, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }
}

/// Two parties on one virtual network: the bridge and some pages.
struct Net {
    now: Instant,
    bridge: Bridge,
    pages: Vec<Page>,
    events: Vec<BridgeEvent>,
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        Net {
            now,
            bridge: Bridge::new(BRIDGE.parse().unwrap(), BridgeConfig::default()),
            pages: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Moves every datagram and event until nothing is left, then advances
    /// virtual time to the next deadline (at most `step`).
    fn run(&mut self, step: Duration) {
        let bridge_addr: SocketAddr = BRIDGE.parse().unwrap();
        for _ in 0..10_000 {
            let mut moved = false;
            // the pages' output
            for i in 0..self.pages.len() {
                loop {
                    let p = &mut self.pages[i];
                    match p.rtc.poll_output().unwrap() {
                        Output::Timeout(_) => break,
                        Output::Transmit(t) => {
                            moved = true;
                            assert_eq!(t.destination, bridge_addr);
                            let from = p.addr;
                            let data = t.contents.to_vec();
                            self.bridge.handle_datagram(self.now, from, &data);
                        }
                        Output::Event(e) => {
                            moved = true;
                            match e {
                                Event::Connected => p.connected = true,
                                Event::MediaData(d) if d.mid == p.video => {
                                    p.video_in.push((d.time.numer(), d.data.to_vec()))
                                }
                                Event::MediaData(d) if d.mid == p.audio => {
                                    p.audio_in.push((d.time.numer(), d.data.to_vec()))
                                }
                                Event::KeyframeRequest(_) => p.keyframe_requests += 1,
                                _ => {}
                            }
                        }
                    }
                }
            }
            // the bridge's output
            let mut buf = Vec::new();
            while let Some(to) = self.bridge.poll_transmit(self.now, &mut buf) {
                moved = true;
                if let Some(p) = self.pages.iter_mut().find(|p| p.addr == to) {
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: Protocol::Udp,
                            source: bridge_addr,
                            destination: p.addr,
                            contents: DatagramRecv::try_from(&buf[..]).unwrap(),
                        },
                    );
                    if p.rtc.accepts(&input) {
                        p.rtc.handle_input(input).unwrap();
                    }
                }
            }
            while let Some(e) = self.bridge.poll_event() {
                moved = true;
                self.events.push(e);
            }
            if !moved {
                break;
            }
        }
        // time moves on
        let mut next = self.now + step;
        if let Some(t) = self.bridge.poll_timeout() {
            next = next.min(t.max(self.now));
        }
        self.now = next.max(self.now + Duration::from_micros(100));
        for p in &mut self.pages {
            p.rtc.handle_input(Input::Timeout(self.now)).unwrap();
        }
        self.bridge.handle_timeout(self.now);
    }

    fn run_until(&mut self, what: &str, mut f: impl FnMut(&Net) -> bool) {
        let end = self.now + Duration::from_secs(30);
        while !f(self) {
            assert!(self.now < end, "never: {what}; events {:?}", self.events);
            self.run(Duration::from_millis(10));
        }
    }

    fn offer(&mut self, port: u16, request: u64) -> usize {
        let (page, sdp) = Page::new(self.now, port);
        self.pages.push(page);
        self.bridge
            .handle_command(self.now, BridgeCommand::Offer { request, sdp });
        self.run(Duration::ZERO);
        let answer = self
            .events
            .iter()
            .find_map(|e| match e {
                BridgeEvent::Answer {
                    request: r, sdp, ..
                } if *r == request => Some(sdp.clone()),
                _ => None,
            })
            .expect("an answer");
        let i = self.pages.len() - 1;
        self.pages[i].accept(&answer);
        i
    }
}

const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn access_unit(units: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for u in units {
        v.extend_from_slice(&[0, 0, 0, 1]);
        v.extend_from_slice(u);
    }
    v
}

fn big_idr() -> Vec<u8> {
    let mut idr = vec![0x65, 0x88];
    idr.extend((0..5000u32).map(|i| (i % 251) as u8 | 1));
    idr
}

#[test]
fn a_page_connects_and_frames_cross_both_ways_untouched() {
    let mut net = Net::new();
    let i = net.offer(50_000, 1);
    // the answer offers exactly one H.264 (pm1) and the two G.711 laws
    net.run_until("connected", |n| {
        n.pages[i].connected
            && n.events
                .iter()
                .any(|e| matches!(e, BridgeEvent::Connected { .. }))
    });
    let connected = net
        .events
        .iter()
        .find(|e| matches!(e, BridgeEvent::Connected { .. }))
        .cloned()
        .unwrap();
    assert_eq!(
        connected,
        BridgeEvent::Connected {
            conn: 1,
            video: true,
            audio: Some(Law::Mu)
        }
    );
    let pt = |p: &mut Page, mid, codec| {
        p.rtc
            .writer(mid)
            .unwrap()
            .payload_params()
            .find(|x| x.spec().codec == codec)
            .unwrap()
            .pt()
    };
    let p = &mut net.pages[i];
    let vpt = pt(p, p.video, Codec::H264);
    let apt = pt(p, p.audio, Codec::PCMU);
    let idr = big_idr();
    let key = access_unit(&[SPS, PPS, &idr]);
    let now = net.now;
    let (video, audio) = (p.video, p.audio);
    p.rtc
        .writer(video)
        .unwrap()
        .write(
            vpt,
            now,
            MediaTime::new(90_000, Frequency::NINETY_KHZ),
            key.clone(),
        )
        .unwrap();
    p.rtc
        .writer(audio)
        .unwrap()
        .write(
            apt,
            now,
            MediaTime::new(8000, Frequency::EIGHT_KHZ),
            vec![0x55u8; 160],
        )
        .unwrap();
    net.run_until("the page's frames", |n| {
        n.events
            .iter()
            .any(|e| matches!(e, BridgeEvent::Video { .. }))
            && n.events
                .iter()
                .any(|e| matches!(e, BridgeEvent::Audio { .. }))
    });
    for e in &net.events {
        match e {
            BridgeEvent::Video { conn, frame } => {
                assert_eq!(*conn, 1);
                assert_eq!(&frame.data[..], &key[..], "the access unit arrives as sent");
                assert_eq!(frame.rtp_time % (1 << 32), 90_000);
            }
            BridgeEvent::Audio { law, frame, .. } => {
                assert_eq!(*law, Law::Mu);
                assert_eq!(&frame.data[..], &[0x55u8; 160][..]);
            }
            _ => {}
        }
    }
    // and towards the page
    let now = net.now;
    for (k, data) in [key.clone(), access_unit(&[&[0x41, 0x9a, 0x02, 0x80]])]
        .into_iter()
        .enumerate()
    {
        net.bridge.handle_command(
            now,
            BridgeCommand::Video(FrameOut {
                rtp_time: 3000 * k as u64,
                wallclock: now,
                received: now,
                data,
            }),
        );
    }
    net.bridge.handle_command(
        now,
        BridgeCommand::Audio(FrameOut {
            rtp_time: 160,
            wallclock: now,
            received: now,
            data: vec![0x2a; 160],
        }),
    );
    net.run_until("our frames at the page", |n| {
        n.pages[i].video_in.len() == 2 && !n.pages[i].audio_in.is_empty()
    });
    assert_eq!(net.pages[i].video_in[0].1, key);
    assert_eq!(net.pages[i].audio_in[0].1, vec![0x2a; 160]);
    let st = net.bridge.stats();
    assert_eq!((st.video_in, st.audio_in), (1, 1));
    assert_eq!((st.video_out, st.audio_out), (2, 1));
    assert!(st.to_page.samples >= 1, "{st:?}");
    assert_eq!(st.out_dropped, 0);
}

#[test]
fn keyframe_requests_cross_both_ways() {
    let mut net = Net::new();
    let i = net.offer(50_000, 1);
    net.run_until("connected", |n| n.pages[i].connected);
    // the page must have sent something before it can be asked
    let p = &mut net.pages[i];
    let vpt = p
        .rtc
        .writer(p.video)
        .unwrap()
        .payload_params()
        .find(|x| x.spec().codec == Codec::H264)
        .unwrap()
        .pt();
    let video = p.video;
    let now = net.now;
    p.rtc
        .writer(video)
        .unwrap()
        .write(
            vpt,
            now,
            MediaTime::new(0, Frequency::NINETY_KHZ),
            access_unit(&[SPS, PPS, &big_idr()]),
        )
        .unwrap();
    net.run_until("a frame", |n| {
        n.events
            .iter()
            .any(|e| matches!(e, BridgeEvent::Video { .. }))
    });
    // we ask the page's encoder
    net.bridge
        .handle_command(net.now, BridgeCommand::RequestKeyframe);
    net.run_until("the page's keyframe request", |n| {
        n.pages[i].keyframe_requests >= 1
    });
    // asked again at once: limited to one per interval
    net.bridge
        .handle_command(net.now, BridgeCommand::RequestKeyframe);
    assert_eq!(net.bridge.stats().keyframes_asked, 1);
    // the page asks us (a PLI on what we send): we must have sent first
    let now = net.now;
    net.bridge.handle_command(
        now,
        BridgeCommand::Video(FrameOut {
            rtp_time: 0,
            wallclock: now,
            received: now,
            data: access_unit(&[SPS, PPS, &big_idr()]),
        }),
    );
    net.run_until("our frame", |n| !n.pages[i].video_in.is_empty());
    let p = &mut net.pages[i];
    let video = p.video;
    p.rtc
        .writer(video)
        .unwrap()
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    net.run_until("the bridge's keyframe event", |n| {
        n.events
            .iter()
            .any(|e| matches!(e, BridgeEvent::KeyframeRequested { conn: 1 }))
    });
}

#[test]
fn a_reloaded_page_replaces_the_old_connection() {
    let mut net = Net::new();
    let a = net.offer(50_000, 1);
    net.run_until("first page connected", |n| n.pages[a].connected);
    let b = net.offer(50_002, 2);
    net.run_until("second page connected", |n| {
        n.pages[b].connected
            && n.events
                .iter()
                .any(|e| matches!(e, BridgeEvent::Closed { conn: 1, .. }))
    });
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, BridgeEvent::Connected { conn: 2, .. })));
    assert_eq!(net.bridge.connected(), Some(2));
    // frames go to the new page only
    let now = net.now;
    net.bridge.handle_command(
        now,
        BridgeCommand::Audio(FrameOut {
            rtp_time: 0,
            wallclock: now,
            received: now,
            data: vec![1; 160],
        }),
    );
    net.run_until("audio at the new page", |n| !n.pages[b].audio_in.is_empty());
    assert!(net.pages[a].audio_in.is_empty());
    // closing the bridge closes the page's connection and finishes
    net.bridge.handle_close(net.now);
    net.run_until("done", |n| n.bridge.is_done() == Some(true));
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, BridgeEvent::Closed { conn: 2, .. })));
}

#[test]
fn an_offer_without_our_codecs_connects_without_media() {
    let mut net = Net::new();
    let now = net.now;
    let mut cfg = RtcConfig::new()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true);
    cfg = cfg.set_ice_lite(false);
    let mut rtc = cfg.build(now);
    let addr: SocketAddr = "127.0.0.1:50004".parse().unwrap();
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    let _ = (audio, video);
    net.bridge.handle_command(
        now,
        BridgeCommand::Offer {
            request: 9,
            sdp: offer.to_sdp_string(),
        },
    );
    net.run(Duration::ZERO);
    // str0m answers (the m-lines are refused inside) or refuses the offer:
    // either way the bridge reports it and nothing panics
    assert!(net.events.iter().any(|e| matches!(
        e,
        BridgeEvent::Answer { request: 9, .. } | BridgeEvent::OfferRefused { request: 9, .. }
    )));
}
