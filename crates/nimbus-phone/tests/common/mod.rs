//! Shared by the phone test files: logging in and setting up a call.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use nimbus_phone::call::Event as CallEvent;
use nimbus_phone::driver::{Command, PhoneHandle};
use nimbus_phone::phone::PhoneEvent;

/// Longest wait of one step.
pub const T: Duration = Duration::from_secs(15);

pub async fn login(p: &mut PhoneHandle) {
    let e = p
        .wait_for(T, |e| {
            matches!(
                e,
                PhoneEvent::LoggedIn { .. } | PhoneEvent::LoginFailed { .. }
            )
        })
        .await;
    assert!(matches!(e, Some(PhoneEvent::LoggedIn { .. })), "{e:?}");
}

/// Alice calls bob by name, bob accepts.
pub async fn call(alice: &mut PhoneHandle, bob: &mut PhoneHandle) {
    login(alice).await;
    login(bob).await;
    alice.send(Command::Call("bob".into()));
    let e = bob
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    match e {
        Some(PhoneEvent::Call(CallEvent::Incoming {
            from_name,
            from_peer,
        })) => {
            assert_eq!(from_name, "alice");
            assert_eq!(from_peer, alice.peer_id);
        }
        other => panic!("no incoming call: {other:?}"),
    }
    bob.send(Command::Accept);
    let e = alice
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Accepted)))
        .await;
    assert!(e.is_some(), "alice not told of the accept");
}

pub fn have(tool: &str) -> bool {
    Process::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether ffmpeg and ffprobe are installed (prints `SKIPPED:` if not).
pub fn tools_present(test: &str) -> bool {
    if have("ffmpeg") && have("ffprobe") {
        return true;
    }
    println!("SKIPPED: {test}: ffmpeg/ffprobe not installed");
    false
}

/// `ffmpeg -v error -i file -f null -`: must succeed with nothing on stderr.
pub fn assert_decodes_cleanly(path: &Path) {
    let out = Process::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!(
        "ffmpeg -v error -i {} -f null -: status {}, stderr {:?}",
        path.display(),
        out.status,
        err
    );
    assert!(out.status.success(), "ffmpeg failed: {err}");
    assert!(err.trim().is_empty(), "ffmpeg reported errors: {err}");
}
