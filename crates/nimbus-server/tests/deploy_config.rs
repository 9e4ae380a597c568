//! The example configuration shipped in `deploy/` is valid.

#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nimbus-server.toml"
    );
    let c = nimbus_server::ServerConfig::from_file(std::path::Path::new(path)).unwrap();
    assert_eq!(c.apps.len(), 3);
    assert!(c.registry.is_some());
}
