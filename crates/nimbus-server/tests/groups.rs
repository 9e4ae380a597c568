//! NetGroup rendezvous end to end over loopback UDP: Flash-profile clients
//! join groups on `"GC"` flows and read the server's `0B` introductions.
//! Every wait is bounded.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{connect_all, loopback_config as config, pump, start, Client};
use nimbus_server::{AppConfig, GroupJoin, Metrics};
use rtmfp_netgroup::wire::group_address;
use rtmfp_netgroup::GroupSpec;

const T: Duration = Duration::from_secs(15);
const SPEC: &str = "G:027f0201010103010c050e74657374011b00";

fn gauge(m: &Metrics, f: impl Fn(&Metrics) -> &std::sync::atomic::AtomicI64) -> i64 {
    f(m).load(Ordering::Relaxed)
}

fn counter(m: &Metrics, f: impl Fn(&Metrics) -> &std::sync::atomic::AtomicU64) -> u64 {
    f(m).load(Ordering::Relaxed)
}

/// `n` clients connected to `rtmfp://server/app`.
fn members(n: usize, server: SocketAddr, app: &str, seed: u64) -> Vec<Client> {
    let mut cs: Vec<Client> = (0..n as u64).map(|i| Client::new(seed + i)).collect();
    for c in &mut cs {
        c.connect(&format!("rtmfp://{server}/{app}"), server, vec![]);
    }
    connect_all(&mut cs.iter_mut().collect::<Vec<_>>(), T);
    cs
}

/// Every client joins `group`; their join flows.
fn join_all(cs: &mut [Client], group: &[u8; 32]) -> Vec<u64> {
    cs.iter_mut().map(|c| c.join_group(group)).collect()
}

fn pump_all(
    cs: &mut [Client],
    timeout: Duration,
    done: impl FnMut(&mut [&mut Client]) -> bool,
) -> bool {
    let mut refs: Vec<&mut Client> = cs.iter_mut().collect();
    pump(&mut refs, timeout, done)
}

/// Keeps everyone's traffic going for a while (to see that nothing more arrives).
fn settle(cs: &mut [Client], d: Duration) {
    pump_all(cs, d, |_| false);
}

fn id(c: &Client) -> [u8; 32] {
    c.peer_id.0
}

/// Whether the undirected graph of introductions connects every client.
fn introductions_connect(cs: &[Client]) -> bool {
    let ids: Vec<[u8; 32]> = cs.iter().map(id).collect();
    let mut adj: HashMap<[u8; 32], HashSet<[u8; 32]>> = HashMap::new();
    for c in cs {
        for p in c.introduced() {
            adj.entry(id(c)).or_default().insert(p);
            adj.entry(p).or_default().insert(id(c));
        }
    }
    let mut seen = HashSet::from([ids[0]]);
    let mut stack = vec![ids[0]];
    while let Some(n) = stack.pop() {
        for m in adj.get(&n).into_iter().flatten() {
            if seen.insert(*m) {
                stack.push(*m);
            }
        }
    }
    ids.iter().all(|i| seen.contains(i))
}

/// How many introductions each client has had so far.
fn marks(cs: &[Client]) -> Vec<usize> {
    cs.iter().map(|c| c.introductions.len()).collect()
}

/// Whether `l` and `r` were introduced to each other since `marks`.
fn reintroduced(c: &[&mut Client], marks: &[usize], l: usize, r: usize) -> bool {
    let since = |i: usize, peer: &Client| {
        c[i].introductions[marks[i]..]
            .iter()
            .any(|(_, p)| *p == id(peer))
    };
    since(l, c[r]) && since(r, c[l])
}

/// Member `order[k]` leaves through `leave`; waits until the server counts
/// `members` members and has introduced its ring neighbours `order[k - 1]`
/// and `order[k + 1]` to each other (`how` names the leave in the failure).
/// The introduction counts from before the leave.
fn leave_heals(
    cs: &mut [Client],
    m: &Metrics,
    order: &[usize],
    k: usize,
    members: i64,
    how: &str,
    leave: impl FnOnce(&mut Client),
) -> Vec<usize> {
    let (l, r) = (order[k - 1], order[k + 1]);
    let mark = marks(cs);
    leave(&mut cs[order[k]]);
    assert!(
        pump_all(cs, T, |c| {
            gauge(m, |m| &m.group_members) == members && reintroduced(c, &mark, l, r)
        }),
        "{how}: members {}",
        gauge(m, |m| &m.group_members)
    );
    mark
}

/// Indices of `cs` in ring order (by group address).
fn ring_order(cs: &[Client]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..cs.len()).collect();
    idx.sort_by_key(|i| group_address(&id(&cs[*i])));
    idx
}

#[test]
fn two_members_learn_each_other() {
    let (rt, server, addr) = start(config(1));
    let m = server.metrics().clone();
    let group = [0x42; 32];
    let mut cs = members(2, addr, "app", 10);
    join_all(&mut cs, &group);
    let (a, b) = (id(&cs[0]), id(&cs[1]));
    assert!(
        pump_all(&mut cs, T, |c| c[0].introduced().contains(&b)
            && c[1].introduced().contains(&a)),
        "introductions: {:?} / {:?}",
        cs[0].introductions.len(),
        cs[1].introductions.len()
    );
    settle(&mut cs, Duration::from_millis(200));
    assert_eq!(cs[0].introduced(), BTreeSet::from([b]));
    assert_eq!(cs[1].introduced(), BTreeSet::from([a]));
    assert_eq!(gauge(&m, |m| &m.groups), 1);
    assert_eq!(gauge(&m, |m| &m.group_members), 2);
    assert_eq!(counter(&m, |m| &m.group_joins_total), 2);
    assert_eq!(counter(&m, |m| &m.group_introductions_total), 2);
    assert_eq!(counter(&m, |m| &m.group_join_refusals_total), 0);
    let text = m.render();
    for name in [
        "nimbus_groups 1",
        "nimbus_group_members 2",
        "nimbus_group_joins_total 2",
        "nimbus_group_leaves_total 0",
        "nimbus_group_join_refusals_total 0",
        "nimbus_group_introductions_total 2",
    ] {
        assert!(text.contains(&format!("{name}\n")), "{name} missing");
    }
    rt.block_on(server.shutdown());
}

#[test]
fn twenty_members_get_few_introductions_and_a_connected_graph() {
    let (rt, server, addr) = start(config(1));
    let m = server.metrics().clone();
    let group = [0x17; 32];
    let mut cs = members(20, addr, "app", 100);
    for n in 0..cs.len() {
        let before = marks(&cs);
        cs[n].join_group(&group);
        let want = n.min(6);
        // the newcomer hears about its ring neighbours; wait until every
        // introduction the server sent has arrived
        assert!(
            pump_all(&mut cs, T, |c| {
                let got: usize = c.iter().map(|c| c.introductions.len()).sum::<usize>()
                    - before.iter().sum::<usize>();
                c[n].introductions.len() - before[n] >= want
                    && counter(&m, |m| &m.group_joins_total) == n as u64 + 1
                    && got as u64
                        == counter(&m, |m| &m.group_introductions_total)
                            - before.iter().sum::<usize>() as u64
            }),
            "join {n}: introductions did not arrive"
        );
        let delta: Vec<usize> = cs
            .iter()
            .zip(&before)
            .map(|(c, b)| c.introductions.len() - b)
            .collect();
        // O(1) per join: the newcomer gets at most 6 neighbours + 2
        // long-range hints, every other member at most the newcomer
        assert!(delta[n] <= 8, "join {n}: newcomer got {}", delta[n]);
        for (i, d) in delta.iter().enumerate().filter(|(i, _)| *i != n) {
            assert!(*d <= 1, "join {n}: member {i} got {d}");
        }
        let total: usize = delta.iter().sum();
        assert!(total <= 14, "join {n}: {total} introductions");
        if n >= 7 {
            assert!(delta[n] >= 6, "join {n}: newcomer got {}", delta[n]);
        }
    }
    for c in &cs {
        assert!(!c.introduced().is_empty());
        assert!(!c.introduced().contains(&id(c)), "introduced to itself");
    }
    assert!(introductions_connect(&cs));
    assert_eq!(gauge(&m, |m| &m.group_members), 20);
    assert_eq!(gauge(&m, |m| &m.groups), 1);
    rt.block_on(server.shutdown());
}

#[test]
fn leaving_members_are_removed_and_their_neighbours_introduced() {
    let (rt, server, addr) = start(config(1));
    let m = server.metrics().clone();
    let group = [0x99; 32];
    let mut cs = members(10, addr, "app", 300);
    let flows = join_all(&mut cs, &group);
    assert!(pump_all(&mut cs, T, |_| gauge(&m, |m| &m.group_members) == 10));
    settle(&mut cs, Duration::from_millis(300));
    let order = ring_order(&cs);

    // 1. a member closes its join flow
    let gone = order[3];
    leave_heals(
        &mut cs,
        &m,
        &order,
        3,
        9,
        "leave by closing the flow",
        |c| {
            c.leave_group(flows[gone]);
        },
    );
    assert_eq!(counter(&m, |m| &m.group_leaves_total), 1);

    // 2. a member ends its session
    let gone2 = order[7];
    let mark = leave_heals(
        &mut cs,
        &m,
        &order,
        7,
        8,
        "leave by closing the session",
        |c| {
            c.with_nc(|nc, ep, now| nc.close(ep, now));
        },
    );
    assert_eq!(counter(&m, |m| &m.group_leaves_total), 2);

    // nobody is told about departed members afterwards; a leave costs two
    // introductions
    settle(&mut cs, Duration::from_millis(200));
    let after: usize = cs.iter().map(|c| c.introductions.len()).sum();
    assert_eq!(after - mark.iter().sum::<usize>(), 2);

    // the rest leave: the group is gone
    for i in 0..cs.len() {
        if i != gone && i != gone2 {
            cs[i].leave_group(flows[i]);
        }
    }
    assert!(pump_all(&mut cs, T, |_| gauge(&m, |m| &m.groups) == 0
        && gauge(&m, |m| &m.group_members) == 0));
    assert_eq!(counter(&m, |m| &m.group_leaves_total), 10);
    rt.block_on(server.shutdown());
}

#[test]
fn listed_groups_and_limits_refuse_joins() {
    let mut cfg = config(1);
    cfg.limits.max_group_members = 2;
    cfg.apps = vec![
        AppConfig {
            name: "mesh".into(),
            group_join: GroupJoin::Listed,
            groups: vec![SPEC.into()],
            ..AppConfig::default()
        },
        AppConfig {
            name: "nogroups".into(),
            group_join: GroupJoin::None,
            ..AppConfig::default()
        },
    ];
    let (rt, server, addr) = start(cfg);
    let m = server.metrics().clone();
    let mut cs = members(3, addr, "mesh", 500);

    // an unlisted group: refused, nobody introduced
    join_all(&mut cs, &[0x11; 32]);
    assert!(pump_all(&mut cs, T, |_| counter(&m, |m| &m
        .group_join_refusals_total)
        == 3));
    settle(&mut cs, Duration::from_millis(300));
    assert!(cs.iter().all(|c| c.introductions.is_empty()));
    assert_eq!(gauge(&m, |m| &m.groups), 0);
    assert_eq!(counter(&m, |m| &m.group_joins_total), 0);

    // the listed groupspec: accepted, up to max_group_members
    let listed = GroupSpec::parse(SPEC).unwrap().group_id();
    cs[0].join_group(&listed);
    assert!(pump_all(&mut cs, T, |_| counter(&m, |m| &m
        .group_joins_total)
        == 1));
    cs[1].join_group(&listed);
    let (a, b) = (id(&cs[0]), id(&cs[1]));
    assert!(pump_all(&mut cs, T, |c| c[0].introduced().contains(&b)
        && c[1].introduced().contains(&a)));
    cs[2].join_group(&listed);
    assert!(pump_all(&mut cs, T, |_| counter(&m, |m| &m
        .group_join_refusals_total)
        == 4));
    settle(&mut cs, Duration::from_millis(300));
    let third = id(&cs[2]);
    assert!(cs[2].introductions.is_empty(), "a refused member was told");
    assert!(cs[..2].iter().all(|c| !c.introduced().contains(&third)));
    assert_eq!(gauge(&m, |m| &m.group_members), 2);
    assert!(counter(&m, |m| &m.limit_refusals_total) >= 1);

    // an app without groups
    let mut q = members(2, addr, "nogroups", 600);
    join_all(&mut q, &listed);
    assert!(pump_all(&mut q, T, |_| counter(&m, |m| &m
        .group_join_refusals_total)
        == 6));
    settle(&mut q, Duration::from_millis(200));
    assert!(q.iter().all(|c| c.introductions.is_empty()));
    rt.block_on(server.shutdown());
}

#[test]
fn same_group_id_in_two_apps_is_two_groups() {
    let (rt, server, addr) = start(config(1));
    let m = server.metrics().clone();
    let group = [0x55; 32];
    let mut cs = members(2, addr, "one", 700);
    cs.extend(members(2, addr, "two", 710));
    join_all(&mut cs, &group);
    let ids: Vec<[u8; 32]> = cs.iter().map(id).collect();
    assert!(pump_all(&mut cs, T, |c| c[0]
        .introduced()
        .contains(&ids[1])
        && c[2].introduced().contains(&ids[3])));
    settle(&mut cs, Duration::from_millis(200));
    assert_eq!(cs[0].introduced(), BTreeSet::from([ids[1]]));
    assert_eq!(cs[3].introduced(), BTreeSet::from([ids[2]]));
    assert_eq!(gauge(&m, |m| &m.groups), 2);
    rt.block_on(server.shutdown());
}

#[test]
fn members_on_different_shards_are_introduced() {
    let (rt, server, addr) = start(config(2));
    assert_eq!(server.shards(), 2);
    let m = server.metrics().clone();
    // the kernel spreads clients over the shards by address: connect until
    // both shards hold some
    let mut cs = Vec::new();
    let deadline = Instant::now() + T;
    let shard_of = |c: &Client| c.server_session_id.map(|s| s >> 31);
    loop {
        cs.extend(members(4, addr, "app", 900 + cs.len() as u64));
        // a datagram after the handshake carries the server's session ID
        let n = cs.len();
        pump_all(&mut cs, T, |c| {
            c.iter().all(|c| c.server_session_id.is_some())
        });
        let shards: HashSet<u32> = cs.iter().filter_map(shard_of).collect();
        if shards.len() == 2 || n >= 32 || Instant::now() > deadline {
            break;
        }
    }
    let a = cs
        .iter()
        .position(|c| shard_of(c) == Some(0))
        .expect("a client on shard 0");
    let b = cs
        .iter()
        .position(|c| shard_of(c) == Some(1))
        .expect("a client on shard 1");
    let group = [0x33; 32];
    cs[a].join_group(&group);
    assert!(pump_all(&mut cs, T, |_| counter(&m, |m| &m
        .group_joins_total)
        == 1));
    cs[b].join_group(&group);
    let (ia, ib) = (id(&cs[a]), id(&cs[b]));
    assert!(
        pump_all(&mut cs, T, |c| c[a].introduced().contains(&ib)
            && c[b].introduced().contains(&ia)),
        "cross-shard introductions did not arrive"
    );
    // everyone joins: the graph spans both shards and stays connected
    for (i, c) in cs.iter_mut().enumerate() {
        if i != a && i != b {
            c.join_group(&group);
        }
    }
    let n = cs.len() as i64;
    assert!(pump_all(&mut cs, T, |c| gauge(&m, |m| &m.group_members)
        == n
        && c.iter().all(|c| !c.introductions.is_empty())));
    settle(&mut cs, Duration::from_millis(300));
    assert!(introductions_connect(&cs));
    // the departure of a member on one shard heals the ring across shards
    let order = ring_order(&cs);
    let pos = order.iter().position(|i| *i == a).unwrap();
    let (l, r) = (
        order[(pos + order.len() - 1) % order.len()],
        order[(pos + 1) % order.len()],
    );
    let mark = marks(&cs);
    cs[a].with_nc(|nc, ep, now| nc.close(ep, now));
    assert!(pump_all(&mut cs, T, |c| reintroduced(c, &mark, l, r)));
    assert_eq!(gauge(&m, |m| &m.group_members), n - 1);
    rt.block_on(server.shutdown());
}
