//! Introduction across two real NATs: each client in its own network
//! namespace behind its own iptables MASQUERADE router, the server in a
//! third namespace that routes between the two routers' public sides.
//!
//! ```text
//!  ca 198.18.11.2 ─ nata (lan .11.1 | wan .1.2, MASQUERADE) ─┐
//!                                                             srv 198.18.1.1 / 198.18.2.1
//!  cb 198.18.12.2 ─ natb (lan .12.1 | wan .2.2, MASQUERADE) ─┘
//! ```
//!
//! Needs root, `ip` and `iptables`; prints `SKIPPED:` and passes otherwise.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{pump, runtime, Client};
use nimbus_server::{Server, ServerConfig};
use rtmfp::Event;
use rtmfp_flash::Epd;

const T: Duration = Duration::from_secs(15);

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ns(name: &str, cmd: &[&str]) -> Result<(), String> {
    let mut a = vec!["ip", "netns", "exec", name];
    a.extend_from_slice(cmd);
    sh(&a)
}

/// Builds the topology; names are unique per process.
fn topology() -> Result<(Netns, [String; 5]), String> {
    let p = std::process::id() % 100_000;
    let n = |s: &str| format!("nb{s}{p}");
    let (srv, nata, natb, ca, cb) = (n("s"), n("ra"), n("rb"), n("ca"), n("cb"));
    let guard = Netns {
        names: vec![
            srv.clone(),
            nata.clone(),
            natb.clone(),
            ca.clone(),
            cb.clone(),
        ],
    };
    for name in &guard.names {
        sh(&["ip", "netns", "add", name])?;
        ns(name, &["ip", "link", "set", "lo", "up"])?;
    }
    // veth pairs: (ns1, if1, addr1, ns2, if2, addr2)
    let links = [
        (&srv, "sa", "198.18.1.1/24", &nata, "wan", "198.18.1.2/24"),
        (&srv, "sb", "198.18.2.1/24", &natb, "wan", "198.18.2.2/24"),
        (
            &nata,
            "lan",
            "198.18.11.1/24",
            &ca,
            "eth0",
            "198.18.11.2/24",
        ),
        (
            &natb,
            "lan",
            "198.18.12.1/24",
            &cb,
            "eth0",
            "198.18.12.2/24",
        ),
    ];
    for (i, (n1, i1, a1, n2, i2, a2)) in links.iter().enumerate() {
        let t1 = format!("v{p}a{i}");
        let t2 = format!("v{p}b{i}");
        sh(&[
            "ip", "link", "add", &t1, "type", "veth", "peer", "name", &t2,
        ])?;
        sh(&["ip", "link", "set", &t1, "netns", n1])?;
        sh(&["ip", "link", "set", &t2, "netns", n2])?;
        ns(n1, &["ip", "link", "set", &t1, "name", i1])?;
        ns(n2, &["ip", "link", "set", &t2, "name", i2])?;
        ns(n1, &["ip", "addr", "add", a1, "dev", i1])?;
        ns(n2, &["ip", "addr", "add", a2, "dev", i2])?;
        ns(n1, &["ip", "link", "set", i1, "up"])?;
        ns(n2, &["ip", "link", "set", i2, "up"])?;
    }
    ns(&srv, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    for (r, gw) in [(&nata, "198.18.1.1"), (&natb, "198.18.2.1")] {
        ns(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ns(r, &["ip", "route", "add", "default", "via", gw])?;
        ns(
            r,
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan",
                "-j",
                "MASQUERADE",
            ],
        )?;
        // a NAT: nothing unsolicited from outside reaches the inside
        ns(
            r,
            &[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-m",
                "state",
                "--state",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        )?;
        ns(r, &["iptables", "-A", "FORWARD", "-i", "wan", "-j", "DROP"])?;
        // and unsolicited datagrams to the router itself are dropped before
        // their conntrack entry is confirmed, as home routers do (otherwise
        // an early IHello from the other peer claims the mapped port and
        // the NAT picks another one for the answer)
        ns(
            r,
            &[
                "iptables", "-A", "INPUT", "-i", "wan", "-p", "udp", "-j", "DROP",
            ],
        )?;
    }
    ns(
        &ca,
        &["ip", "route", "add", "default", "via", "198.18.11.1"],
    )?;
    ns(
        &cb,
        &["ip", "route", "add", "default", "via", "198.18.12.1"],
    )?;
    Ok((guard, [srv, nata, natb, ca, cb]))
}

/// Runs `f` on a thread that has entered network namespace `name`: sockets
/// it creates live in that namespace.
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

#[test]
fn clients_behind_two_nats_are_introduced_and_talk_directly() {
    let is_root = nix::unistd::Uid::effective().is_root();
    let topo = if is_root {
        topology()
    } else {
        Err(String::from("not root"))
    };
    let (_guard, [srv, _nata, _natb, ca, cb]) = match topo {
        Ok(t) => t,
        Err(e) => {
            println!("SKIPPED: network namespaces with NAT are not available here ({e})");
            return;
        }
    };
    if std::env::var_os("NIMBUS_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
    let rt = runtime();
    let handle = rt.handle().clone();
    let server = in_netns(&srv, move || {
        let mut c = ServerConfig {
            listen: vec!["198.18.1.1:0".parse().unwrap()],
            shards: 2,
            dh_groups: vec![2],
            ..ServerConfig::default()
        };
        c.shutdown_grace_secs = 1;
        handle.block_on(Server::start(c)).unwrap()
    });
    let addr = server.local_addrs()[0];
    let mut a = in_netns(&ca, || Client::bind("198.18.11.2:0".parse().unwrap(), 51));
    let mut b = in_netns(&cb, || Client::bind("198.18.12.2:0".parse().unwrap(), 52));
    a.connect(&format!("rtmfp://{addr}/p2p"), addr, vec![]);
    b.connect(&format!("rtmfp://{addr}/p2p"), addr, vec![]);
    assert!(
        pump(&mut [&mut a, &mut b], T, |c| c
            .iter()
            .all(|c| c.connected())),
        "connect through the NATs failed: {:?} {:?}",
        a.connect_failed(),
        b.connect_failed()
    );

    // b opens a session to a's peer ID with only the server as candidate
    let epd = Epd::peer(a.peer_id).encode();
    let sid = b.ep.connect(Instant::now(), &epd, &[addr]).unwrap();
    assert!(
        pump(&mut [&mut a, &mut b], T, |c| c[1].events.iter().any(
            |e| matches!(e, Event::SessionOpened { session, .. } if *session == sid)
        )),
        "no direct session: a {:?} / b {:?}\na {:?}\nb {:?}",
        a.events,
        b.events,
        a.ep.stats(),
        b.ep.stats(),
    );
    let peer = b.ep.session_info(sid).unwrap().peer;
    // the direct session goes to a's NAT (its public side), not via the server
    assert_eq!(peer.ip().to_string(), "198.18.1.2", "direct path: {peer}");

    let flow =
        b.ep.open_flow(Instant::now(), sid, b"direct", None, Default::default())
            .unwrap();
    let payload = Bytes::from(vec![7u8; 50_000]);
    b.ep.send(Instant::now(), sid, flow, payload.clone(), None)
        .unwrap();
    let mut got = Vec::new();
    assert!(pump(&mut [&mut a, &mut b], T, |c| {
        let readable: Vec<(rtmfp::SessionId, u64)> = c[0]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Readable { session, flow } => Some((*session, *flow)),
                _ => None,
            })
            .collect();
        for (s, f) in readable {
            while let Some(m) = c[0].ep.read(Instant::now(), s, f) {
                got.extend_from_slice(&m.data);
            }
        }
        got.len() >= payload.len()
    }));
    assert_eq!(got, payload);
    // the server relayed no media: the data went direct
    assert_eq!(
        server
            .metrics()
            .media_bytes_relayed_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    rt.block_on(server.shutdown());
}
