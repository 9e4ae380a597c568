//! The web phone in a real browser (headless Chromium with its fake camera
//! and microphone, driven over WebDriver), through `nimbus server`:
//!
//! * two web phones call each other: each page decodes the other's video
//!   (≥ 20 pictures a second over 5 s from a 30 fps camera), hears its
//!   audio, chat goes both ways, hang-up ends the call on both pages; a
//!   screenshot of a page in the call is written under `target/`; the
//!   figures (frame rate and loss per direction, the latency the bridges
//!   add) are printed;
//! * a web phone and a command-line phone call each other both ways; the
//!   page shows the test pattern's colour bars;
//! * rejected, busy and unanswered calls, from and to the page;
//! * a page reloaded in the middle of a call.
//!
//! Where chromium or chromedriver is missing, each test prints `SKIPPED:`
//! and passes.

mod common;

use std::time::Duration;

use common::{Browser, Driver, T};
use nimbus_phone::call::Event as CallEvent;
use nimbus_phone::driver::Command;
use nimbus_phone::phone::PhoneEvent;
use serde_json::Value;

/// Waits until the page's call is in `state`.
async fn call_state(b: &Browser, state: &str) -> Value {
    b.wait_state(&format!("call {state}"), |s| s["call"]["state"] == state)
        .await
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_web_phones_call_each_other_through_the_server() {
    let _one = common::serial().await;
    let Some((chromium, chromedriver)) = common::chromium("two web phones") else {
        return;
    };
    let srv = common::server().await;
    let alice = common::web_phone(&srv, 1, |_| {}).await;
    let bob = common::web_phone(&srv, 2, |_| {}).await;
    let driver = Driver::start(chromium, chromedriver).await;
    let (pa, pb) = (driver.browser().await, driver.browser().await);
    pa.open(alice.url()).await;
    pb.open(bob.url()).await;
    pa.login("alice").await;
    pb.login("bob").await;

    // alice calls bob by name; bob's page rings and he accepts
    pa.type_into("callee", "bob").await;
    pa.click("call").await;
    call_state(&pa, "calling").await;
    let ringing = call_state(&pb, "ringing").await;
    assert_eq!(ringing["call"]["peer"], "alice");
    pb.wait_enabled("accept").await;
    pb.click("accept").await;
    let a = call_state(&pa, "incall").await;
    let b = call_state(&pb, "incall").await;
    assert_eq!(a["call"]["peer"], "bob");
    assert_eq!(b["call"]["peer"], "alice");

    // each page decodes the other's camera: at least 20 pictures a second
    // over 5 s (the fake camera gives 30)
    let (fa, fb) = tokio::join!(pa.remote_fps(5), pb.remote_fps(5));
    println!("FIGURES: pictures shown per second: alice's page {fa:.1}, bob's page {fb:.1}");
    assert!(fa >= 20.0, "alice's page shows {fa:.1} pictures per second");
    assert!(fb >= 20.0, "bob's page shows {fb:.1} pictures per second");
    let sa = pa
        .wait_state("a direct path", |s| s["call"]["path"] == "direct")
        .await;
    assert!(
        sa["call"]["videoFramesReceived"].as_u64().unwrap_or(0) > 100,
        "{sa}"
    );
    assert!(
        sa["call"]["audioPacketsReceived"].as_u64().unwrap_or(0) > 100,
        "{sa}"
    );
    assert!(sa["call"]["rttMs"].is_number(), "{sa}");

    // the remote audio is not silent (the fake microphone beeps)
    for (name, p) in [("alice", &pa), ("bob", &pb)] {
        let lvl = p.audio_level().await;
        assert!(
            f(&lvl["maxRms"]) > 0.02 && lvl["loud"].as_u64().unwrap_or(0) > 0,
            "{name}'s page hears nothing: {lvl}"
        );
    }

    // chat both ways, with the sender's name
    pa.type_into("chat-input", "hello bob").await;
    pa.click("chat-send").await;
    let log = pb.wait_text("chat-log", "hello bob").await;
    assert!(log.contains("alice"), "{log}");
    pb.type_into("chat-input", "hi alice").await;
    pb.click("chat-send").await;
    let log = pa.wait_text("chat-log", "hi alice").await;
    assert!(log.contains("bob"), "{log}");

    // a picture of the call
    let shot = common::target_dir().join("nimbus-web/call.png");
    pa.screenshot(&shot).await;
    println!("screenshot: {}", shot.display());

    // the figures: frames and loss per direction, the bridges' latency
    let (xa, xb) = (
        alice.snapshot().await.unwrap(),
        bob.snapshot().await.unwrap(),
    );
    for (from, to, x, y) in [("alice", "bob", &xa, &xb), ("bob", "alice", &xb, &xa)] {
        let (px, py) = (x.phone.as_ref().unwrap(), y.phone.as_ref().unwrap());
        let sent = px.sent.video_frames;
        let got = py.received.video_frames;
        println!(
            "FIGURES: {from} → {to}: page frames in {} → RTMFP video frames sent {sent}, received {got} \
             (loss {:.2} %), audio {} → {} ; frames to {to}'s page {} (dropped {})",
            x.bridge.video_in,
            100.0 * (1.0 - got as f64 / sent.max(1) as f64).max(0.0),
            px.sent.audio_packets,
            py.received.audio_packets,
            y.media.down_video,
            y.media.down_dropped,
        );
        println!(
            "FIGURES: {from}'s bridge: RTP in → RTMFP out p50 {:.3} ms p99 {:.3} ms ({} samples); \
             {to}'s bridge: RTMFP in → RTP out p50 {:.3} ms p99 {:.3} ms ({} samples)",
            px.send_latency.p50_ms,
            px.send_latency.p99_ms,
            px.send_latency.samples,
            y.bridge.to_page.p50_ms,
            y.bridge.to_page.p99_ms,
            y.bridge.to_page.samples,
        );
        assert!(got > 0 && y.media.down_video > 0);
    }

    // hang-up ends the call on both pages
    pa.click("hangup").await;
    call_state(&pa, "ended").await;
    call_state(&pb, "ended").await;
    pb.wait_text("log", "hung up").await;

    pa.close().await;
    pb.close().await;
    alice.shutdown().await;
    bob.shutdown().await;
    srv.shutdown().await;
}

/// The test pattern's 75 % colour bars, left to right, as (R, G, B) high or
/// low: white, yellow, cyan, green, magenta, red, blue.
const BARS: [(bool, bool, bool); 7] = [
    (true, true, true),
    (true, true, false),
    (false, true, true),
    (false, true, false),
    (true, false, true),
    (true, false, false),
    (false, false, true),
];

/// Reads the colours of the 7 bars of `#remote` through a canvas.
async fn bar_colours(b: &Browser) -> Value {
    b.js(r#"
        const v = document.getElementById('remote');
        if (!v.videoWidth) return null;
        const c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d');
        g.drawImage(v, 0, 0);
        // bar centres of the 320x240 pattern (in 16-pixel macroblocks: 0,3,6,9,11,14,17,20)
        const xs = [24, 72, 120, 160, 200, 248, 296].map(x => Math.round(x * c.width / 320));
        const y = Math.round(40 * c.height / 240);
        return { w: c.width, h: c.height, px: xs.map(x => Array.from(g.getImageData(x, y, 1, 1).data.slice(0, 3))) };
    "#)
    .await
}

fn shows_bars(v: &Value) -> bool {
    let Some(px) = v["px"].as_array() else {
        return false;
    };
    px.len() == 7
        && px.iter().zip(BARS).all(|(p, (r, g, b))| {
            let c: Vec<u64> = (0..3).map(|i| p[i].as_u64().unwrap_or(0)).collect();
            [r, g, b]
                .iter()
                .zip(&c)
                .all(|(high, v)| if *high { *v > 140 } else { *v < 70 })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_phone_and_a_command_line_phone_call_each_other() {
    let _one = common::serial().await;
    let Some((chromium, chromedriver)) = common::chromium("web phone and command-line phone")
    else {
        return;
    };
    let srv = common::server().await;
    let web = common::web_phone(&srv, 3, |_| {}).await;
    let mut carol = common::cli_phone(&srv, "carol", 4);
    common::logged_in(&mut carol).await;
    let driver = Driver::start(chromium, chromedriver).await;
    let page = driver.browser().await;
    page.open(web.url()).await;
    page.login("dave").await;

    // the page calls the command-line phone, which answers
    page.type_into("callee", "carol").await;
    page.click("call").await;
    let e = carol
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    assert!(e.is_some(), "carol never rang");
    carol.send(Command::Accept);
    call_state(&page, "incall").await;
    // the page shows the test pattern's colour bars
    let end = tokio::time::Instant::now() + T;
    let mut last = Value::Null;
    while !shows_bars(&last) {
        assert!(
            tokio::time::Instant::now() < end,
            "no colour bars in #remote: {last}; log {}",
            page.text("log").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        last = bar_colours(&page).await;
    }
    println!("colour bars seen: {last}");
    page.screenshot(&common::target_dir().join("nimbus-web/test-pattern.png"))
        .await;
    // and the command-line phone gets the page's camera
    let end = tokio::time::Instant::now() + T;
    loop {
        let s = carol.status().await.unwrap();
        if s.received.video_frames >= 30 && s.received.audio_packets >= 50 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "carol gets no media: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    carol.send(Command::Hangup);
    call_state(&page, "ended").await;

    // the other way round: the command-line phone calls, the page accepts
    tokio::time::sleep(Duration::from_millis(500)).await;
    carol.send(Command::Call("dave".into()));
    call_state(&page, "ringing").await;
    page.wait_enabled("accept").await;
    page.click("accept").await;
    call_state(&page, "incall").await;
    let fps = page.remote_fps(3).await;
    assert!(
        fps >= 8.0,
        "the test pattern (15 fps) shows at {fps:.1} fps"
    );
    let e = carol
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Accepted)))
        .await;
    assert!(e.is_some());
    page.click("hangup").await;
    call_state(&page, "ended").await;
    let e = carol
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Ended)))
        .await;
    assert!(e.is_some());

    page.close().await;
    let _ = carol.quit().await;
    web.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_busy_and_unanswered_calls_from_and_to_the_page() {
    let _one = common::serial().await;
    let Some((chromium, chromedriver)) = common::chromium("rejected, busy, no answer") else {
        return;
    };
    let srv = common::server().await;
    // the page gives up on unanswered calls after 3 s
    let web = common::web_phone(&srv, 5, |c| {
        c.ring_timeout = Duration::from_secs(3);
        c.fallback = None;
    })
    .await;
    let mut bob = common::cli_phone(&srv, "bob", 6);
    let mut carol = common::cli_phone(&srv, "carol", 7);
    let mut dave = common::cli_phone(&srv, "dave", 8);
    for p in [&mut bob, &mut carol, &mut dave] {
        common::logged_in(p).await;
    }
    let driver = Driver::start(chromium, chromedriver).await;
    let page = driver.browser().await;
    page.open(web.url()).await;
    page.login("erin").await;

    // rejected: bob declines the page's call
    page.type_into("callee", "bob").await;
    page.click("call").await;
    let e = bob
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    assert!(e.is_some());
    bob.send(Command::Reject);
    page.wait_text("log", "bob rejected the call").await;
    call_state(&page, "ended").await;

    // busy: carol is in a call with dave
    carol.send(Command::Call("dave".into()));
    let e = dave
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    assert!(e.is_some());
    dave.send(Command::Accept);
    let e = carol
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Accepted)))
        .await;
    assert!(e.is_some());
    page.wait_enabled("call").await;
    page.type_into("callee", "carol").await;
    page.click("call").await;
    page.wait_text("log", "carol is busy").await;
    call_state(&page, "ended").await;
    let e = carol
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Busy { .. })))
        .await;
    assert!(e.is_some(), "carol is told of the missed call");

    // no answer: bob lets it ring
    page.wait_enabled("call").await;
    page.type_into("callee", "bob").await;
    page.click("call").await;
    page.wait_text("log", "no answer").await;
    call_state(&page, "ended").await;

    // offline: nobody by that name
    page.wait_enabled("call").await;
    page.type_into("callee", "zoe").await;
    page.click("call").await;
    page.wait_text("log", "offline").await;

    // and to the page: bob calls, the page rejects
    tokio::time::sleep(Duration::from_millis(500)).await;
    bob.send(Command::Call("erin".into()));
    call_state(&page, "ringing").await;
    page.wait_enabled("reject").await;
    page.click("reject").await;
    let e = bob
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Rejected { by_peer: true }))
        })
        .await;
    assert!(e.is_some(), "bob hears the page's refusal");
    page.wait_text("log", "you rejected the call").await;

    // and the page is busy while in a call: dave (free again) calls it
    // while it talks to bob
    carol.send(Command::Hangup);
    page.wait_enabled("call").await;
    page.type_into("callee", "bob").await;
    page.click("call").await;
    let e = bob
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    assert!(e.is_some());
    bob.send(Command::Accept);
    call_state(&page, "incall").await;
    let _ = dave
        .wait_for(Duration::from_secs(5), |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Ended))
        })
        .await;
    dave.send(Command::Call("erin".into()));
    let e = dave
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::PeerBusy)))
        .await;
    assert!(e.is_some(), "dave hears that the page is busy");
    page.wait_text("log", "dave called while you were busy")
        .await;
    page.click("hangup").await;
    call_state(&page, "ended").await;

    page.close().await;
    for p in [bob, carol, dave] {
        let _ = p.quit().await;
    }
    web.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reloaded_in_a_call_takes_the_call_back() {
    let _one = common::serial().await;
    let Some((chromium, chromedriver)) = common::chromium("page reload") else {
        return;
    };
    let srv = common::server().await;
    let web = common::web_phone(&srv, 9, |_| {}).await;
    let mut frank = common::cli_phone(&srv, "frank", 10);
    common::logged_in(&mut frank).await;
    let driver = Driver::start(chromium, chromedriver).await;
    let page = driver.browser().await;
    page.open(web.url()).await;
    page.login("gina").await;
    page.type_into("callee", "frank").await;
    page.click("call").await;
    let e = frank
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    assert!(e.is_some());
    frank.send(Command::Accept);
    call_state(&page, "incall").await;
    assert!(page.remote_fps(2).await > 5.0);

    // reload in the middle of the call
    page.client.refresh().await.expect("reload");
    // the new page finds the call going on, and its pictures come back
    let s = call_state(&page, "incall").await;
    assert_eq!(s["call"]["peer"], "frank");
    let fps = page.remote_fps(3).await;
    assert!(fps >= 8.0, "after the reload: {fps:.1} fps");
    // the old connection is gone, the new one carries the media
    let snap = web.snapshot().await.unwrap();
    assert!(
        snap.page && snap.page_media && !snap.test_source,
        "{snap:?}"
    );
    assert!(snap.bridge.connections >= 2);
    // frank saw pictures all along: the page's camera, then for a moment
    // the test source, then the new page's camera
    let before = frank.status().await.unwrap().received.video_frames;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = frank.status().await.unwrap().received.video_frames;
    assert!(
        after > before + 20,
        "frank's video stalled: {before} → {after}"
    );
    // and the call still hangs up cleanly
    page.click("hangup").await;
    call_state(&page, "ended").await;
    let e = frank
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Ended)))
        .await;
    assert!(e.is_some());

    page.close().await;
    let _ = frank.quit().await;
    web.shutdown().await;
    srv.shutdown().await;
}
