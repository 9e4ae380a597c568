//! ffmpeg and ffprobe as test oracles: a test that needs them prints
//! `SKIPPED:` and passes where they are not installed (CI installs them).

use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `tool -version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
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
///
/// # Panics
/// When ffmpeg cannot run, fails, or reports an error.
pub fn assert_decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
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
