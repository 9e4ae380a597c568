//! Real networks in Linux network namespaces, for end-to-end tests (root
//! only; a test prints `SKIPPED:` and passes where this is unavailable).
//!
//! Unlike the rest of this crate, nothing here is simulated: the kernel
//! routes, filters and translates real UDP datagrams between namespaces
//! joined by veth pairs, with `ip`, `iptables` (and, for tests that flush
//! NAT state, `conntrack`) doing the configuration.
//!
//! * [`Netns`]: a guard that creates namespaces and veth links and deletes
//!   the namespaces (and so their links) when dropped.
//! * [`sh`] / [`ns`]: run a command (in a namespace), with its stderr in the
//!   error.
//! * [`in_netns`]: run a closure on a thread that entered a namespace, so
//!   that the sockets it creates live there.
//! * [`TwoNat`]: the topology of two clients, each behind its own iptables
//!   MASQUERADE router, with a middle namespace (where a server runs) that
//!   routes between the routers' public (wan) sides:
//!
//! ```text
//!  client_a 198.18.11.2 ─ nat_a (lan .11.1 | wan .1.2, MASQUERADE) ─┐
//!                                                                   server 198.18.1.1 / 198.18.2.1
//!  client_b 198.18.12.2 ─ nat_b (lan .12.1 | wan .2.2, MASQUERADE) ─┘
//! ```
//!
//! Only 198.18.0.0/15 (benchmarking) addresses are used, and every name is
//! unique per process and per topology, so tests may run in parallel.
//!
//! ```no_run
//! use nimbus_testkit::netns::{in_netns, TwoNat};
//!
//! let topo = match TwoNat::builder("ex")
//!     // extra configuration, run before `build` returns
//!     .hook(|t| t.iptables(&t.server, &["-A", "FORWARD", "-i", "sa", "-o", "sb", "-j", "DROP"]))
//!     .build()
//! {
//!     Ok(t) => t,
//!     Err(e) => {
//!         println!("SKIPPED: network namespaces with NAT are not available here ({e})");
//!         return;
//!     }
//! };
//! let sock = in_netns(&topo.client_a, || std::net::UdpSocket::bind("198.18.11.2:0").unwrap());
//! # drop(sock);
//! ```

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A distinct number per call in this process (for unique names).
fn next_seq() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The process ID, short (names of interfaces are at most 15 bytes).
fn short_pid() -> u32 {
    std::process::id() % 100_000
}

/// Whether this process runs as root (namespaces and iptables need it).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Runs a command; `Err` holds the command line and its stderr (or why it
/// could not start). `Ok` holds its stdout.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let (prog, rest) = args
        .split_first()
        .ok_or_else(|| String::from("empty command"))?;
    let out = Command::new(prog)
        .args(rest)
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command in namespace `name` (`ip netns exec`).
pub fn ns(name: &str, cmd: &[&str]) -> Result<String, String> {
    let mut a = vec!["ip", "netns", "exec", name];
    a.extend_from_slice(cmd);
    sh(&a)
}

/// Runs `f` on a thread that has entered network namespace `name`: sockets
/// it creates live in that namespace (and stay there when handed to other
/// threads). Panics if the namespace cannot be entered.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// One end of a veth link: namespace, interface name in it, and address
/// with prefix length (`"198.18.1.1/24"`).
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    /// The namespace.
    pub ns: &'a str,
    /// The interface's name in it.
    pub dev: &'a str,
    /// Its address, `a.b.c.d/len`.
    pub addr: &'a str,
}

fn end<'a>(ns: &'a str, dev: &'a str, addr: &'a str) -> End<'a> {
    End { ns, dev, addr }
}

/// Network namespaces that are deleted when this is dropped.
#[derive(Debug, Default)]
pub struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// No namespaces yet.
    pub fn new() -> Self {
        Netns::default()
    }

    /// A namespace name unique to this process and call: `tag`, the process
    /// ID and a sequence number.
    pub fn unique_name(tag: &str) -> String {
        format!("{tag}{}n{}", short_pid(), next_seq())
    }

    /// Creates namespace `name` (loopback up); it is deleted on drop.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        sh(&["ip", "netns", "add", name])?;
        self.names.push(name.to_string());
        ns(name, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The namespaces this guard deletes.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Joins two namespaces with a veth pair: each end renamed, addressed
    /// and up.
    pub fn veth(&self, a: End<'_>, b: End<'_>) -> Result<(), String> {
        // temporary names in the root namespace, unique in this process
        let (p, s) = (short_pid(), next_seq());
        let t1 = format!("nv{p}x{s}a");
        let t2 = format!("nv{p}x{s}b");
        sh(&[
            "ip", "link", "add", &t1, "type", "veth", "peer", "name", &t2,
        ])?;
        for (t, e) in [(&t1, a), (&t2, b)] {
            if let Err(err) = sh(&["ip", "link", "set", t, "netns", e.ns]) {
                let _ = sh(&["ip", "link", "del", t]);
                return Err(err);
            }
        }
        for (t, e) in [(&t1, a), (&t2, b)] {
            ns(e.ns, &["ip", "link", "set", t, "name", e.dev])?;
            ns(e.ns, &["ip", "addr", "add", e.addr, "dev", e.dev])?;
            ns(e.ns, &["ip", "link", "set", e.dev, "up"])?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Extra configuration run by [`TwoNatBuilder::build`] once the topology is
/// up (and before it returns).
pub type Hook = Box<dyn FnOnce(&TwoNat) -> Result<(), String> + Send>;

/// Builds a [`TwoNat`]; see [`TwoNat::builder`].
pub struct TwoNatBuilder {
    tag: String,
    masquerade: bool,
    hooks: Vec<Hook>,
}

impl std::fmt::Debug for TwoNatBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoNatBuilder")
            .field("tag", &self.tag)
            .field("masquerade", &self.masquerade)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl TwoNatBuilder {
    /// Whether the routers translate (MASQUERADE on `wan`) and filter
    /// unsolicited datagrams from outside (default true). Without, they
    /// only route: the clients' own addresses are public.
    pub fn masquerade(mut self, on: bool) -> Self {
        self.masquerade = on;
        self
    }

    /// Adds configuration run, in order, once the topology is built (extra
    /// iptables rules, addresses, routes). An error deletes the topology
    /// and is returned by [`build`](Self::build).
    pub fn hook(mut self, f: impl FnOnce(&TwoNat) -> Result<(), String> + Send + 'static) -> Self {
        self.hooks.push(Box::new(f));
        self
    }

    /// Creates the namespaces and links. `Err` (with the reason) when not
    /// root, or when namespaces, `ip` or `iptables` are unavailable: the
    /// caller prints `SKIPPED:` and passes.
    pub fn build(self) -> Result<TwoNat, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let n = |role: &str| Netns::unique_name(&format!("{}{role}", self.tag));
        let mut topo = TwoNat {
            server: n("s"),
            nat_a: n("ra"),
            nat_b: n("rb"),
            client_a: n("ca"),
            client_b: n("cb"),
            guard: Netns::new(),
        };
        let names = [
            topo.server.clone(),
            topo.nat_a.clone(),
            topo.nat_b.clone(),
            topo.client_a.clone(),
            topo.client_b.clone(),
        ];
        for name in &names {
            topo.guard.add(name)?;
        }
        let [srv, nata, natb, ca, cb] = &names;
        let g = &topo.guard;
        for (a, b) in [
            (
                end(srv, TwoNat::SERVER_IF_A, "198.18.1.1/24"),
                end(nata, TwoNat::WAN_IF, "198.18.1.2/24"),
            ),
            (
                end(srv, TwoNat::SERVER_IF_B, "198.18.2.1/24"),
                end(natb, TwoNat::WAN_IF, "198.18.2.2/24"),
            ),
            (
                end(nata, TwoNat::LAN_IF, "198.18.11.1/24"),
                end(ca, TwoNat::CLIENT_IF, "198.18.11.2/24"),
            ),
            (
                end(natb, TwoNat::LAN_IF, "198.18.12.1/24"),
                end(cb, TwoNat::CLIENT_IF, "198.18.12.2/24"),
            ),
        ] {
            g.veth(a, b)?;
        }
        ns(srv, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for (r, gw) in [(nata, TwoNat::SERVER_A), (natb, TwoNat::SERVER_B)] {
            ns(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            ns(
                r,
                &["ip", "route", "add", "default", "via", &gw.to_string()],
            )?;
            if !self.masquerade {
                continue;
            }
            let ipt = |args: &[&str]| topo.iptables(r, args);
            ipt(&[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                TwoNat::WAN_IF,
                "-j",
                "MASQUERADE",
            ])?;
            // a NAT: nothing unsolicited from outside reaches the inside
            ipt(&[
                "-A",
                "FORWARD",
                "-i",
                TwoNat::WAN_IF,
                "-m",
                "state",
                "--state",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ])?;
            ipt(&["-A", "FORWARD", "-i", TwoNat::WAN_IF, "-j", "DROP"])?;
            // and unsolicited datagrams to the router itself are dropped
            // before their conntrack entry is confirmed, as home routers do
            // (otherwise an early IHello from the other peer claims the
            // mapped port and the NAT picks another one for the answer)
            ipt(&[
                "-A",
                "INPUT",
                "-i",
                TwoNat::WAN_IF,
                "-p",
                "udp",
                "-j",
                "DROP",
            ])?;
        }
        for (c, gw) in [(ca, TwoNat::GW_A), (cb, TwoNat::GW_B)] {
            ns(
                c,
                &["ip", "route", "add", "default", "via", &gw.to_string()],
            )?;
        }
        for h in self.hooks {
            h(&topo)?;
        }
        Ok(topo)
    }
}

/// Two clients behind two NATs and a server between them (see the module
/// documentation); the namespaces are deleted when this is dropped.
#[derive(Debug)]
pub struct TwoNat {
    /// The middle namespace: routes between the two wan subnets; the
    /// server's addresses are [`SERVER_A`](Self::SERVER_A) (interface
    /// [`SERVER_IF_A`](Self::SERVER_IF_A)) and [`SERVER_B`](Self::SERVER_B).
    pub server: String,
    /// Client A's router.
    pub nat_a: String,
    /// Client B's router.
    pub nat_b: String,
    /// Client A ([`CLIENT_A`](Self::CLIENT_A), behind `nat_a`).
    pub client_a: String,
    /// Client B ([`CLIENT_B`](Self::CLIENT_B), behind `nat_b`).
    pub client_b: String,
    guard: Netns,
}

impl TwoNat {
    /// The server's address on A's side.
    pub const SERVER_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    /// The server's address on B's side.
    pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
    /// Router A's public (wan) address.
    pub const WAN_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    /// Router B's public (wan) address.
    pub const WAN_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
    /// Router A's inside address (client A's gateway).
    pub const GW_A: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 1);
    /// Router B's inside address (client B's gateway).
    pub const GW_B: Ipv4Addr = Ipv4Addr::new(198, 18, 12, 1);
    /// Client A's address.
    pub const CLIENT_A: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 2);
    /// Client B's address.
    pub const CLIENT_B: Ipv4Addr = Ipv4Addr::new(198, 18, 12, 2);
    /// The server's interface towards router A.
    pub const SERVER_IF_A: &'static str = "sa";
    /// The server's interface towards router B.
    pub const SERVER_IF_B: &'static str = "sb";
    /// The routers' public interface.
    pub const WAN_IF: &'static str = "wan";
    /// The routers' inside interface.
    pub const LAN_IF: &'static str = "lan";
    /// The clients' interface.
    pub const CLIENT_IF: &'static str = "eth0";

    /// A builder; `tag` (a few letters) starts the namespaces' names, which
    /// are unique per process and topology.
    pub fn builder(tag: &str) -> TwoNatBuilder {
        TwoNatBuilder {
            tag: tag.to_string(),
            masquerade: true,
            hooks: Vec::new(),
        }
    }

    /// The default topology.
    pub fn build(tag: &str) -> Result<TwoNat, String> {
        TwoNat::builder(tag).build()
    }

    /// The guard of the namespaces (to add more with [`Netns::add`] and
    /// link them with [`Netns::veth`]; they are deleted with the rest).
    pub fn netns(&mut self) -> &mut Netns {
        &mut self.guard
    }

    /// Runs a command in namespace `name`.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Result<String, String> {
        ns(name, cmd)
    }

    /// Runs `iptables -w ARGS` in namespace `name` (to read its output,
    /// use [`exec`](Self::exec)).
    pub fn iptables(&self, name: &str, args: &[&str]) -> Result<(), String> {
        let mut a = vec!["iptables", "-w"];
        a.extend_from_slice(args);
        ns(name, &a).map(drop)
    }

    /// Adds address `cidr` (`a.b.c.d/len`) to interface `dev` of namespace
    /// `name`.
    pub fn add_address(&self, name: &str, dev: &str, cidr: &str) -> Result<(), String> {
        ns(name, &["ip", "addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Removes address `cidr` from interface `dev` of namespace `name`
    /// (routes through it may go with it: re-add them).
    pub fn del_address(&self, name: &str, dev: &str, cidr: &str) -> Result<(), String> {
        ns(name, &["ip", "addr", "del", cidr, "dev", dev]).map(drop)
    }

    /// Forgets all connection-tracking (and so NAT mapping) state of
    /// namespace `name`: needs the `conntrack` tool.
    pub fn flush_conntrack(&self, name: &str) -> Result<(), String> {
        ns(name, &["conntrack", "-F"]).map(drop)
    }

    /// Runs `f` on a thread inside namespace `name` (see [`in_netns`]).
    pub fn in_netns<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        in_netns(name, f)
    }
}
