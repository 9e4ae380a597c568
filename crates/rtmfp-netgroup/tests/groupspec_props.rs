//! Property tests of the `G:` groupspec builder and parser.

use proptest::prelude::*;
use rtmfp_netgroup::{group_id, GroupSpec, GroupSpecifier, MAX_GROUPSPEC_LEN};

/// Option types that have typed setters, so cannot be raw options.
const RESERVED: [u8; 5] = [0x01, 0x02, 0x03, 0x0e, 0x7f];

fn specifier() -> impl Strategy<Value = GroupSpecifier> {
    (
        "\\PC{0,40}",
        any::<[bool; 3]>(),
        prop::collection::btree_map(
            any::<u8>().prop_filter("reserved", |k| !RESERVED.contains(k)),
            prop::collection::vec(any::<u8>(), 0..40),
            0..5,
        ),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(name, [m, o, p], raw, auth)| {
            let mut spec = GroupSpecifier::new(name)
                .unwrap()
                .multicast_enabled(m)
                .object_replication_enabled(o)
                .posting_enabled(p)
                .with_raw_authorizations(auth);
            for (kind, value) in raw {
                spec = spec.raw_option(kind, value).unwrap();
            }
            spec
        })
}

/// Lowercase hex of arbitrary bytes, so the parser gets past the text checks.
fn hex_body() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..200)
        .prop_map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
}

proptest! {
    #[test]
    fn parse_build_round_trips(spec in specifier()) {
        let text = spec.group_spec_with_authorizations();
        let parsed = GroupSpec::parse(&text).unwrap();
        prop_assert_eq!(parsed.to_specifier().unwrap(), spec.clone());
        prop_assert_eq!(parsed.encode(), text.clone());
        prop_assert_eq!(parsed.name_str(), Some(spec.name()));
        prop_assert_eq!(parsed.version(), Some(2));
        prop_assert_eq!(parsed.multicast_enabled(), spec.is_multicast_enabled());
        prop_assert_eq!(parsed.object_replication_enabled(), spec.is_object_replication_enabled());
        prop_assert_eq!(parsed.posting_enabled(), spec.is_posting_enabled());
        prop_assert!(parsed.unknown_options().eq(spec.raw_options()));
        prop_assert_eq!(parsed.authorizations_hex(), spec.authorizations());
        prop_assert_eq!(parsed.group_spec_without_authorizations(), spec.group_spec_without_authorizations());
        prop_assert_eq!(parsed.group_id(), spec.group_id());
        prop_assert_eq!(group_id(&text).unwrap(), spec.group_id());
    }

    #[test]
    fn authorizations_never_change_the_id(spec in specifier(), auth in prop::collection::vec(any::<u8>(), 0..40)) {
        let other = spec.clone().with_raw_authorizations(auth);
        prop_assert_eq!(other.group_id(), spec.group_id());
        prop_assert_eq!(group_id(&other.to_string()).unwrap(), spec.group_id());
    }

    #[test]
    fn parser_never_panics_on_text(text in "\\PC{0,300}") {
        let _ = GroupSpec::parse(&text);
    }

    #[test]
    fn parser_never_panics_on_hex(body in hex_body()) {
        let text = format!("G:{body}");
        if let Ok(spec) = GroupSpec::parse(&text) {
            prop_assert_eq!(spec.encode(), text.clone());
            prop_assert!(text.starts_with(spec.group_spec_without_authorizations()));
            prop_assert!(spec.group_spec_without_authorizations().starts_with(spec.hashed_text()));
            let _ = spec.group_id();
            if let Ok(b) = spec.to_specifier() {
                prop_assert_eq!(b.to_string(), text);
            }
        }
    }

    #[test]
    fn parser_never_panics_on_mutations(spec in specifier(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = spec.to_string().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            if let Ok(parsed) = GroupSpec::parse(&text) {
                prop_assert_eq!(parsed.encode(), text);
            }
        }
    }
}

#[test]
fn over_long_input_is_rejected() {
    let text = format!("G:{}", "0".repeat(MAX_GROUPSPEC_LEN * 2));
    assert!(GroupSpec::parse(&text).is_err());
}
