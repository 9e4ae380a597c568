//! A plain-crypto RTMFP peer for interoperability runs against other
//! implementations (e.g. rtmfp-cpp's `server`, `testclient`, `t2`).
//!
//! ```text
//! plain_peer listen NAME PORT [SECONDS]
//! plain_peer send NAME EPD HOST:PORT FLOWS MEGABYTES
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{EndpointConfig, PlainProfile, Priority};
use rtmfp_tokio::Endpoint;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("listen") if args.len() >= 4 => {
            let secs: u64 = args.get(4).map_or(Ok(30), |s| s.parse())?;
            listen(&args[2], args[3].parse()?, Duration::from_secs(secs)).await
        }
        Some("send") if args.len() >= 7 => {
            send(
                &args[2],
                &args[3],
                args[4].parse()?,
                args[5].parse()?,
                args[6].parse()?,
            )
            .await
        }
        _ => {
            eprintln!("usage: plain_peer listen NAME PORT [SECONDS] | send NAME EPD HOST:PORT FLOWS MEGABYTES");
            std::process::exit(2);
        }
    }
}

async fn listen(name: &str, port: u16, secs: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ep = Endpoint::bind(
        addr,
        EndpointConfig::default(),
        Box::new(PlainProfile::new(name)),
    )?;
    println!("listening on {addr} as {name:?}");
    let deadline = tokio::time::sleep(secs);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            s = ep.accept() => {
                let Some(session) = s else { break };
                println!("session opened with {} (role {:?})", session.peer_addr(), session.role());
                tokio::spawn(async move {
                    while let Some(mut flow) = session.accept_flow().await {
                        let meta = String::from_utf8_lossy(flow.metadata()).into_owned();
                        println!("incoming flow {} metadata {meta:?}", flow.id());
                        tokio::spawn(async move {
                            let start = Instant::now();
                            let (mut n, mut bytes) = (0u64, 0u64);
                            while let Some(m) = flow.recv().await {
                                n += 1;
                                bytes += m.data.len() as u64;
                            }
                            let secs = start.elapsed().as_secs_f64();
                            println!(
                                "flow {} done: {n} messages, {bytes} bytes, {:.1} MB/s, finished={}",
                                flow.id(),
                                bytes as f64 / 1e6 / secs.max(1e-9),
                                flow.is_finished()
                            );
                        });
                    }
                    println!("session closed: {:?}", session.closed().await);
                });
            }
        }
    }
    ep.shutdown().await;
    Ok(())
}

async fn send(
    name: &str,
    epd: &str,
    to: SocketAddr,
    flows: usize,
    mb: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let ep = Endpoint::bind(
        "127.0.0.1:0".parse()?,
        EndpointConfig::default(),
        Box::new(PlainProfile::new(name)),
    )?;
    let start = Instant::now();
    let session = ep.connect(epd.as_bytes(), &[to]).await?;
    println!("session opened with {to} in {:?}", start.elapsed());
    let per = mb * 1_000_000 / flows.max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..flows.max(1) {
        let mut f = session
            .open_flow(format!("nimbus{i}").as_bytes(), None, Priority::ROUTINE)
            .await?;
        tasks.push(tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'n'; 16 * 1024]);
            let mut sent = 0;
            while sent < per {
                let n = chunk.len().min(per - sent);
                f.send(chunk.slice(..n)).await?;
                sent += n;
            }
            f.close().await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let info = session.info().await?;
    println!(
        "sent and acknowledged {} bytes on {flows} flows in {secs:.2} s: {:.1} MB/s (retransmitted {}, srtt {:?})",
        per * flows,
        (per * flows) as f64 / 1e6 / secs,
        info.stats.fragments_retransmitted,
        info.srtt
    );
    println!("close: {:?}", session.close().await);
    ep.shutdown().await;
    Ok(())
}
