//! Model test: random appends, trims, reads, clean reopens and crashes at
//! random points against [`MemFs`], checked against a simple model.
//!
//! Invariants: every append that resolved `Ok` before a crash is readable
//! after recovery unless trimmed; sequence numbers are consecutive with no
//! gaps or duplicates; nothing is ever returned that was not appended (at
//! that sequence number); appends continue right after what survived.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        n: usize,
        len: usize,
    },
    Trim {
        pct: u64,
    },
    Read {
        offset: u64,
        max: usize,
        max_bytes: usize,
    },
    Reopen,
    Crash {
        after_ops: u64,
        seed: u64,
        n: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..20, 4usize..300).prop_map(|(n, len)| Op::Append { n, len }),
        2 => (0u64..=100).prop_map(|pct| Op::Trim { pct }),
        2 => (any::<u64>(), 1usize..40, 1usize..4000).prop_map(|(offset, max, max_bytes)| Op::Read { offset, max, max_bytes }),
        1 => Just(Op::Reopen),
        1 => (0u64..12, any::<u64>(), 1usize..20).prop_map(|(after_ops, seed, n)| Op::Crash { after_ops, seed, n }),
    ]
}

fn cfg() -> SpoolConfig {
    SpoolConfig {
        dir: PathBuf::from("/p"),
        segment_bytes: 4096,
        max_bytes: 16 << 20,
        max_batch_records: 7,
    }
}

/// What the test knows.
struct Model {
    /// Every payload ever written at each seq (durable or possibly so).
    history: BTreeMap<u64, Vec<u8>>,
    /// Records below this were trimmed by the test.
    acked: u64,
    /// One past the last record known durable.
    next: u64,
    /// Unique id for the next payload.
    counter: u32,
}

impl Model {
    fn payloads(&mut self, n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                self.counter += 1;
                let mut p = self.counter.to_le_bytes().to_vec();
                p.resize(len, self.counter as u8);
                p
            })
            .collect()
    }
}

async fn check_all(spool: &Spool, m: &Model) -> Result<(), TestCaseError> {
    let st = spool.stats();
    prop_assert_eq!(st.next_seq, m.next);
    let got = spool
        .read(1, usize::MAX, usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let want: Vec<u64> = (st.first_unacked_seq..m.next).collect();
    prop_assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), want);
    for (seq, p) in &got {
        prop_assert_eq!(
            Some(&p[..]),
            m.history.get(seq).map(|v| &v[..]),
            "seq {}",
            seq
        );
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut fs = Arc::new(MemFs::new());
    let mut spool = Spool::open(cfg(), fs.clone())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut m = Model {
        history: BTreeMap::new(),
        acked: 1,
        next: 1,
        counter: 0,
    };
    for op in ops {
        match op {
            Op::Append { n, len } => {
                let p = m.payloads(n, len);
                let r = spool
                    .append(p.clone())
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(r.clone(), m.next..m.next + n as u64, "consecutive seqs");
                for (seq, p) in r.zip(p) {
                    m.history.insert(seq, p);
                }
                m.next += n as u64;
            }
            Op::Trim { pct } => {
                let upto = m.acked + (m.next - m.acked) * pct / 100;
                spool
                    .trim(upto)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.acked = m.acked.max(upto);
                prop_assert_eq!(spool.stats().first_unacked_seq, m.acked);
            }
            Op::Read {
                offset,
                max,
                max_bytes,
            } => {
                let from = offset % (m.next + 2);
                let got = spool
                    .read(from, max, max_bytes)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let start = from.max(m.acked);
                let mut bytes = 0;
                for (i, (seq, p)) in got.iter().enumerate() {
                    prop_assert_eq!(*seq, start + i as u64);
                    prop_assert_eq!(Some(&p[..]), m.history.get(seq).map(|v| &v[..]));
                    bytes += p.len();
                    prop_assert!(i == 0 || bytes <= max_bytes, "byte limit");
                }
                let avail = m.next.saturating_sub(start) as usize;
                prop_assert!(got.len() <= max);
                if got.len() < max.min(avail) {
                    // Stopped early: only allowed because of the byte limit.
                    let next_len = m.history[&(start + got.len() as u64)].len();
                    prop_assert!(bytes + next_len > max_bytes, "read stopped early");
                }
            }
            Op::Reopen => {
                spool.close().await;
                spool = Spool::open(cfg(), fs.clone())
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(spool.stats().first_unacked_seq <= m.acked);
                spool
                    .trim(m.acked)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                check_all(&spool, &m).await?;
            }
            Op::Crash { after_ops, seed, n } => {
                fs.crash_after_ops(after_ops);
                let p = m.payloads(n, 50);
                match spool.append(p.clone()).await {
                    Ok(r) => {
                        prop_assert_eq!(r.clone(), m.next..m.next + n as u64);
                        for (seq, p) in r.zip(p) {
                            m.history.insert(seq, p);
                        }
                        m.next += n as u64;
                    }
                    Err(_) => {
                        // Maybe durable, maybe not: recovery decides.
                        for (i, p) in p.into_iter().enumerate() {
                            m.history.insert(m.next + i as u64, p);
                        }
                    }
                }
                fs = Arc::new(fs.crash(seed));
                drop(spool);
                spool = Spool::open(cfg(), fs.clone())
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let st = spool.stats();
                prop_assert!(st.first_unacked_seq <= m.acked, "acked records lost");
                prop_assert!(
                    st.next_seq >= m.next,
                    "durable records lost: next {} < {}",
                    st.next_seq,
                    m.next
                );
                // Whatever survived of the failed append is a prefix of it.
                prop_assert!(st.next_seq <= m.next + n as u64);
                m.history.retain(|&seq, _| seq < st.next_seq);
                m.next = st.next_seq;
                spool
                    .trim(m.acked)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                check_all(&spool, &m).await?;
            }
        }
    }
    spool.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn spool_matches_model_across_crashes(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
