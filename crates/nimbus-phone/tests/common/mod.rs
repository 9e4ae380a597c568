//! Shared by the phone test files: logging in and setting up a call.

#![allow(dead_code, unreachable_pub)]

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

#[allow(unused_imports)]
pub use nimbus_testkit::ffmpeg::{assert_decodes_cleanly, tools_present};
