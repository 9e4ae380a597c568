//! Fuzzes the `G:` groupspec parser.
//!
//! Besides "never panics", checks that whatever parses is written back as the
//! same text, that its pieces are prefixes of one another, and that a
//! canonical groupspec rebuilds to the same text and group ID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtmfp_netgroup::GroupSpec;

fuzz_target!(|data: &[u8]| {
    // Raw input, and (to get past the text checks more often) "G:" + its hex.
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    check(&format!("G:{hex}"));
});

fn check(text: &str) {
    let Ok(spec) = GroupSpec::parse(text) else {
        return;
    };
    assert_eq!(spec.encode(), text);
    assert_eq!(spec.group_spec_with_authorizations(), text);
    let without = spec.group_spec_without_authorizations();
    assert!(text.starts_with(without));
    assert!(without.starts_with(spec.hashed_text()));
    assert_eq!(format!("{without}{}", spec.authorizations_hex()), text);
    let id = spec.group_id();
    for o in spec.options() {
        assert!(o.value.len() < 255);
    }
    if let Ok(builder) = spec.to_specifier() {
        assert_eq!(builder.to_string(), text);
        assert_eq!(builder.group_id(), id);
    }
}
