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
    assert_decodes_cleanly_with(path, None);
}

/// [`assert_decodes_cleanly`], with the audio decoder `decoder`
/// (`-c:a decoder`) when given.
///
/// # Panics
/// When ffmpeg cannot run, fails, or reports an error.
pub fn assert_decodes_cleanly_with(path: &Path, decoder: Option<&str>) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error"]);
    if let Some(d) = decoder {
        cmd.args(["-c:a", d]);
    }
    let out = cmd
        .arg("-i")
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let err = String::from_utf8_lossy(&out.stderr);
    println!(
        "ffmpeg -v error {decoder:?} -i {} -f null -: status {}, stderr {:?}",
        path.display(),
        out.status,
        err
    );
    assert!(out.status.success(), "ffmpeg failed: {err}");
    assert!(err.trim().is_empty(), "ffmpeg reported errors: {err}");
}

/// Whether ffmpeg has the decoder `name`.
pub fn has_decoder(name: &str) -> bool {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-decoders"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .any(|w| w == name)
        })
}

/// Standard output of a command that must succeed.
fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `ffprobe` of one stream of `path` (`stream` as `v:0`, `a:0`), frames
/// counted: the `entries` (comma-separated, as `codec_name,width`) as
/// `key=value` lines.
///
/// # Panics
/// When ffprobe cannot run or fails.
pub fn probe(path: &Path, stream: &str, entries: &str) -> String {
    let out = stdout_of(
        Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", stream])
            .arg("-show_entries")
            .arg(format!("stream={entries}"))
            .args(["-of", "default=nw=1"])
            .arg(path),
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Probes one stream of `path` (as [`probe`]) for the keys of `wants`
/// (`codec_name=h264`, `channels=1`) and asserts each value; what ffprobe
/// said.
///
/// # Panics
/// When ffprobe cannot run or fails, or a value differs.
pub fn assert_probe(path: &Path, stream: &str, wants: &[&str]) -> String {
    let entries: Vec<&str> = wants
        .iter()
        .map(|w| w.split_once('=').map_or(*w, |(k, _)| k))
        .collect();
    let info = probe(path, stream, &entries.join(","));
    println!("ffprobe {} {stream}:\n{info}", path.display());
    for want in wants {
        assert!(info.lines().any(|l| l == *want), "{want}: {info}");
    }
    info
}

/// `ffmpeg -v error -i path OUTPUT… -`: what ffmpeg writes to its
/// standard output, with `output` its output options (`-f rawvideo …`).
///
/// # Panics
/// When ffmpeg cannot run or fails.
pub fn decode(path: &Path, output: &[&str]) -> Vec<u8> {
    stdout_of(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(output)
            .arg("-"),
    )
}
