//! `nimbus demo`: until the phone exists, a real RTMFP session between two
//! local endpoints over UDP carrying several flows.

use anyhow::Result;
use serde_json::json;

use crate::bench::tokio_transfer;

pub(crate) fn run(json_out: bool, megabytes: usize, flows: usize) -> Result<()> {
    let flows = flows.max(1);
    let total = megabytes.max(1) * 1_000_000 * flows;
    if !json_out {
        println!("nimbus demo: two RTMFP endpoints (rtmfp-tokio driver) on 127.0.0.1 (UDP), {flows} flows, {megabytes} MB each");
    }
    let r = tokio_transfer(total, flows, 32 * 1024)?;
    if json_out {
        println!(
            "{}",
            json!({
                "flows": flows,
                "bytes": r.bytes,
                "seconds": r.seconds,
                "mb_per_s": (r.mb_per_s() * 100.0).round() / 100.0,
                "datagrams": r.packets,
                "fragments_retransmitted": r.retransmitted,
            })
        );
    } else {
        println!("session opened (plain crypto profile), flows opened, data sent, flows closed");
        println!(
            "moved {} bytes on {flows} flows in {:.3} s: {:.1} MB/s, {} datagrams, {} fragments retransmitted",
            r.bytes,
            r.seconds,
            r.mb_per_s(),
            r.packets,
            r.retransmitted
        );
        println!("every byte was received and every flow completed");
    }
    Ok(())
}
