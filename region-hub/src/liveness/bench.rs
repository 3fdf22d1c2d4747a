//! A micro-measurement of the failure detector's core, run by hand:
//! `cargo test -p region-hub --lib liveness::bench -- --ignored --nocapture`
//! (add `--release` for representative numbers). It prints the cost per
//! heartbeat for 1,000 edges heartbeating (each with a report of five
//! monitor instances, fingerprinted every time) and ticking at 40 Hz; it
//! asserts only that nothing was declared down, never speed. What it leaves
//! out: the QUIC stream and decode of each heartbeat, and the channel hop
//! into the driver.

use std::sync::Arc;
use std::time::Instant;

use strata_protocol::monitoring::InstanceStatus;
use strata_protocol::EdgeStatus;

use super::core::{Command, CoreConfig, LivenessCore, Now};

#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn heartbeats_of_a_thousand_edges() {
    let (edges, seconds, rate_hz) = (1_000u64, 60u64, 4u64);
    let mut core = LivenessCore::new(CoreConfig::default());
    let t = |ms: u64| Now {
        mono_ms: ms,
        wall_ms: 1_700_000_000_000 + ms as i64,
    };
    core.handle_leadership_gained(vec![], t(0));
    let reports: Vec<Arc<EdgeStatus>> = (0..edges)
        .map(|e| {
            Arc::new(EdgeStatus {
                edge: format!("edge-{e:04}"),
                instances: (0..5)
                    .map(|i| InstanceStatus {
                        tenant: "acme".into(),
                        name: format!("m{i}"),
                        state: "running".into(),
                        ..InstanceStatus::default()
                    })
                    .collect(),
                ..EdgeStatus::default()
            })
        })
        .collect();
    let period = 1000 / rate_hz;
    let (mut beats, mut downs) = (0u64, 0u64);
    let started = Instant::now();
    let mut ms = 0;
    while ms < seconds * 1000 {
        // Each edge heartbeats once per period, spread over it.
        for (e, report) in reports.iter().enumerate() {
            let at = ms + (e as u64 * period) / edges;
            core.handle_heartbeat(&report.edge, e as u64 + 1, report.clone(), t(at));
            beats += 1;
        }
        for tick in (0..period).step_by(25) {
            core.handle_tick(t(ms + tick));
        }
        while let Some(c) = core.poll_command() {
            if let Command::Replicate(tr) = c {
                if tr.kind == strata_protocol::liveness::EventKind::EdgeDown {
                    downs += 1;
                }
                let mut l = tr.liveness;
                l.event_seq = beats;
                core.handle_applied(&tr.edge, l, t(ms));
            }
        }
        ms += period;
    }
    let spent = started.elapsed();
    let per_beat = spent.as_nanos() as f64 / beats as f64;
    eprintln!(
        "{beats} heartbeats of {edges} edges ({rate_hz}/s each, {seconds} s simulated) in {:.1} ms: \
         {per_beat:.0} ns per heartbeat (ticks included); 1,000 edges at 1 heartbeat/s cost \
         {:.3}% of one core in the core",
        spent.as_secs_f64() * 1000.0,
        per_beat * 1000.0 / 1e9 * 100.0
    );
    assert_eq!(downs, 0, "steady heartbeats never make an edge down");
}
