//! Fuzzes the parser of the messages nodes exchange over Redis pub/sub
//! (`nimbus_cluster::Envelope::decode`): anyone who can publish on the
//! cluster's channels controls these bytes.
//!
//! Besides "never panics", checks that what parses passes its own bounds
//! check and is read back the same after being written again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_cluster::{message::MAX_MESSAGE, Envelope};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::decode(data) else {
        return;
    };
    assert!(env.check().is_ok());
    let again = env.encode();
    if again.len() <= MAX_MESSAGE {
        assert_eq!(Envelope::decode(&again).as_ref(), Ok(&env));
    }
});
