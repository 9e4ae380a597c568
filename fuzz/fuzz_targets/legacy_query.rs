//! Fuzzes the registry's legacy reg.cgi query-string parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = nimbus_registry::parse_legacy_query(s);
    }
});
