//! `nimbus phone` command line (the web phone with `--web`).

use std::net::SocketAddr;

use clap::Args;

/// Arguments of `nimbus phone`.
#[derive(Args, Debug, Clone)]
pub(crate) struct PhoneCli {
    /// The rendezvous server: rtmfp://HOST[:PORT]/APP.
    #[arg(long, default_value = "rtmfp://127.0.0.1:1935/phone")]
    server: String,
    /// Our user name (with --web: logs in at start; otherwise required).
    #[arg(long)]
    user: Option<String>,
    /// Password (or registry token) for servers with the `registry` policy.
    #[arg(long, env = "NIMBUS_PHONE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// reg.cgi registry URL (http://HOST:PORT/reg.cgi[?token=…]): register
    /// our name, look names up that the server does not know.
    #[arg(long)]
    registry: Option<String>,
    /// Local UDP address (default: any address, a free port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Outgoing media: `test` (built-in H.264 test pattern and tone), `none`,
    /// an FLV file, or `-` for FLV on standard input (e.g. ffmpeg reading a
    /// camera).
    #[arg(long, default_value = "test")]
    source: String,
    /// Audio codec of the test source: `pcm`, or `speex` (needs the `speex`
    /// feature).
    #[arg(long, default_value = "pcm")]
    audio_codec: String,
    /// Record the peer's media: an FLV file, or `-` for standard output
    /// (e.g. `| ffplay -`).
    #[arg(long)]
    record: Option<String>,
    /// Call this user (or peer ID) once logged in.
    #[arg(long)]
    call: Option<String>,
    /// Accept incoming calls by themselves.
    #[arg(long)]
    answer: bool,
    /// Hang up this many seconds after a call is established, then quit.
    #[arg(long)]
    seconds: Option<f64>,
    /// Chat lines to send once a call is established (repeatable).
    #[arg(long)]
    say: Vec<String>,
    /// Print a JSON summary at the end (and no event lines).
    #[arg(long)]
    json: bool,
    /// Milliseconds to wait for a direct path before using the server relay.
    #[arg(long, default_value_t = 4000)]
    direct_timeout_ms: u64,
    /// Never use the server's stream relay.
    #[arg(long)]
    no_relay: bool,
    /// Seconds to wait for an answer before giving up.
    #[arg(long, default_value_t = 30)]
    ring_seconds: u64,
    /// Quit after this many seconds whatever happens (scripted runs).
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Serve the web phone (camera, microphone and screen in the browser,
    /// bridged by WebRTC) on ADDR (default 127.0.0.1:8935); prints one line
    /// `web: URL` to open. The test source stands in while no page is open
    /// (`--source none` to send nothing then).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = nimbus_phone::cli::DEFAULT_WEB_ADDR)]
    web: Option<String>,
    /// With --web: open the page in the system browser.
    #[arg(long, requires = "web")]
    open: bool,
}

impl From<PhoneCli> for nimbus_phone::PhoneArgs {
    fn from(a: PhoneCli) -> Self {
        nimbus_phone::PhoneArgs {
            server: a.server,
            user: a.user,
            password: a.password,
            registry: a.registry,
            bind: a.bind,
            source: a.source,
            audio_codec: a.audio_codec,
            record: a.record,
            call: a.call,
            answer: a.answer,
            seconds: a.seconds,
            say: a.say,
            json: a.json,
            direct_timeout_ms: a.direct_timeout_ms,
            no_relay: a.no_relay,
            ring_seconds: a.ring_seconds,
            max_seconds: a.max_seconds,
            web: a.web,
            open: a.open,
        }
    }
}

/// Runs `nimbus phone` (the web phone with `--web`).
pub(crate) async fn run(cli: PhoneCli) -> anyhow::Result<()> {
    let args = nimbus_phone::PhoneArgs::from(cli);
    if args.web.is_some() {
        nimbus_web::run(args).await
    } else {
        nimbus_phone::run(args).await
    }
}
