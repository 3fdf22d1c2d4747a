//! Unit tests of the spool through its public handle, mostly on [`MemFs`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{segment_name, HEADER_LEN, META_NAME};
use super::*;

fn cfg(segment_bytes: u64, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: PathBuf::from("/spool"),
        segment_bytes,
        max_bytes,
        max_batch_records: 65536,
    }
}

fn recs(tag: u8, n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| vec![tag.wrapping_add(i as u8); len])
        .collect()
}

async fn open(fs: &Arc<MemFs>, cfg: SpoolConfig) -> Spool {
    Spool::open(cfg, fs.clone()).await.unwrap()
}

fn seg_files(fs: &MemFs, dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

fn seqs(r: &[(u64, bytes::Bytes)]) -> Vec<u64> {
    r.iter().map(|(s, _)| *s).collect()
}

#[tokio::test]
async fn append_read_trim_round_trip() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(1 << 20, 4 << 20)).await;
    assert_eq!(spool.append(recs(1, 3, 10)).await.unwrap(), 1..4);
    assert_eq!(spool.append(recs(9, 2, 0)).await.unwrap(), 4..6);
    assert_eq!(spool.append(vec![]).await.unwrap(), 6..6);
    let all = spool.read(1, 100, usize::MAX).unwrap();
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    assert_eq!(&all[1].1[..], &[2u8; 10][..]);
    assert!(all[4].1.is_empty());
    // Limits: records, then bytes (but always at least one record).
    assert_eq!(seqs(&spool.read(2, 2, usize::MAX).unwrap()), vec![2, 3]);
    assert_eq!(seqs(&spool.read(1, 100, 15).unwrap()), vec![1]);
    assert_eq!(seqs(&spool.read(1, 100, 1).unwrap()), vec![1]);
    assert!(spool.read(6, 100, usize::MAX).unwrap().is_empty());
    assert!(spool.read(1, 0, usize::MAX).unwrap().is_empty());

    spool.trim(3).unwrap();
    spool.trim(2).unwrap(); // an older ack does not move the point back
    let st = spool.stats();
    assert_eq!((st.first_unacked_seq, st.next_seq, st.records), (3, 6, 3));
    assert_eq!(st.appended_total, 5);
    assert_eq!(
        seqs(&spool.read(1, 100, usize::MAX).unwrap()),
        vec![3, 4, 5]
    );
    assert!(matches!(
        spool.trim(7),
        Err(SpoolError::TrimBeyondEnd {
            upto: 7,
            next_seq: 6,
            ..
        })
    ));
    spool.close().await;
    assert!(matches!(
        spool.append(recs(0, 1, 1)).await,
        Err(SpoolError::Closed { .. })
    ));
}

#[tokio::test]
async fn segments_roll_and_trim_deletes_whole_segments_only() {
    let fs = Arc::new(MemFs::new());
    let dir = PathBuf::from("/spool");
    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    // 1016-byte frames: four per 4096-byte segment.
    for i in 0..3 {
        spool.append(recs(i, 5, 1000)).await.unwrap();
    }
    assert_eq!(
        seg_files(&fs, &dir),
        [1, 5, 9, 13].map(segment_name).to_vec(),
        "segments are named by their first seq"
    );
    let all = spool.read(1, 100, usize::MAX).unwrap();
    assert_eq!(seqs(&all), (1..16).collect::<Vec<_>>());
    assert_eq!(spool.stats().segments, 4);
    assert_eq!(spool.stats().bytes_on_disk, 15 * 1016);

    spool.trim(8).unwrap(); // segment 1 fully acked, segment 5 not
    spool.close().await; // housekeeping runs before the writer stops
    assert_eq!(seg_files(&fs, &dir), [5, 9, 13].map(segment_name).to_vec());
    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    assert_eq!(spool.stats().first_unacked_seq, 8, "ack point persisted");
    assert_eq!(
        seqs(&spool.read(1, 100, usize::MAX).unwrap()),
        (8..16).collect::<Vec<_>>()
    );
    // Acking everything keeps the active segment (it carries the seqs).
    spool.trim(16).unwrap();
    spool.close().await;
    assert_eq!(seg_files(&fs, &dir), vec![segment_name(13)]);
}

#[tokio::test]
async fn seqs_and_epoch_survive_reopen_even_after_full_trim() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    let epoch = spool.epoch();
    spool.append(recs(0, 10, 500)).await.unwrap();
    spool.close().await;

    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    assert_eq!(spool.epoch(), epoch);
    assert_eq!(spool.append(recs(0, 1, 5)).await.unwrap(), 11..12);
    spool.trim(12).unwrap();
    spool.close().await;

    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    let st = spool.stats();
    assert_eq!((st.first_unacked_seq, st.next_seq, st.records), (12, 12, 0));
    assert!(spool.read(1, 10, usize::MAX).unwrap().is_empty());
    assert_eq!(spool.append(recs(0, 2, 5)).await.unwrap(), 12..14);
    assert_eq!(spool.epoch(), epoch);
    spool.close().await;

    // A different directory is a different incarnation.
    let other = open(
        &fs,
        SpoolConfig {
            dir: "/other".into(),
            ..cfg(4096, 1 << 20)
        },
    )
    .await;
    assert_ne!(other.epoch(), epoch);
}

#[tokio::test]
async fn full_spool_applies_backpressure_until_trim() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 8192)).await;
    // Two segments of four 1016-byte frames fill 8128 of 8192 bytes.
    assert_eq!(spool.append(recs(0, 8, 1000)).await.unwrap(), 1..9);
    assert!(!spool.stats().full);
    let blocked = tokio::spawn({
        let spool = spool.clone();
        async move { spool.append(recs(1, 1, 1000)).await }
    });
    spool.wait_full(true).await;
    assert!(spool.stats().full);
    assert!(!blocked.is_finished());
    assert_eq!(spool.stats().next_seq, 9, "nothing was written or dropped");

    // Acking into segment 1 frees nothing yet; acking all of it does.
    spool.trim(4).unwrap();
    spool.trim(5).unwrap();
    assert_eq!(blocked.await.unwrap().unwrap(), 9..10);
    assert!(!spool.stats().full);
    spool.wait_full(false).await;
    assert_eq!(
        seqs(&spool.read(1, 100, usize::MAX).unwrap()),
        (5..10).collect::<Vec<_>>()
    );
    assert_eq!(
        spool.stats().segments,
        2,
        "segment 1 deleted, 5 and 9 remain"
    );
}

#[tokio::test]
async fn close_while_full_fails_the_waiting_append_without_writing_it() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 8192)).await;
    spool.append(recs(0, 8, 1000)).await.unwrap();
    let blocked = tokio::spawn({
        let spool = spool.clone();
        async move { spool.append(recs(1, 1, 1000)).await }
    });
    spool.wait_full(true).await;
    spool.close().await;
    assert!(matches!(
        blocked.await.unwrap(),
        Err(SpoolError::Closed { .. })
    ));
    let spool = open(&fs, cfg(4096, 8192)).await;
    assert_eq!(spool.stats().next_seq, 9);
}

#[tokio::test]
async fn reread_from_an_older_seq_after_reading_ahead() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    let payloads: Vec<Vec<u8>> = (0..300u32)
        .map(|i| i.to_le_bytes().repeat(1 + i as usize % 7))
        .collect();
    spool.append(payloads.clone()).await.unwrap();
    let mut got = Vec::new();
    let mut from = 1;
    loop {
        let batch = spool.read(from, 7, 200).unwrap();
        let Some(&(last, _)) = batch.last() else {
            break;
        };
        got.extend(batch);
        from = last + 1;
    }
    assert_eq!(seqs(&got), (1..=300).collect::<Vec<_>>());
    for (seq, p) in &got {
        assert_eq!(&p[..], &payloads[*seq as usize - 1][..]);
    }
    // Reconnect: resend from 123, then jump around.
    for from in [123u64, 2, 299, 57, 250, 1] {
        let r = spool.read(from, 3, usize::MAX).unwrap();
        assert_eq!(
            seqs(&r),
            (from..(from + 3).min(301)).collect::<Vec<_>>(),
            "from {from}"
        );
        assert_eq!(&r[0].1[..], &payloads[from as usize - 1][..]);
    }
}

#[tokio::test]
async fn a_read_costs_its_batch_not_its_position() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(1 << 20, 4 << 20)).await;
    spool.append(recs(0, 3000, 100)).await.unwrap(); // one 348 KB segment
    let cost = |from: u64| {
        let before = fs.bytes_read();
        let r = spool.read(from, 10, usize::MAX).unwrap();
        assert_eq!(seqs(&r), (from..from + 10).collect::<Vec<_>>());
        fs.bytes_read() - before
    };
    // Sequential: continues at the cursor.
    let mut from = 1;
    while from < 2990 {
        assert!(cost(from) <= 4096, "sequential read at {from}");
        from += 10;
    }
    // Random access: seeks from the nearest sample, not the segment start.
    for from in [2985, 3, 1777, 2500, 64] {
        let c = cost(from);
        assert!(
            c <= index::SAMPLE_STRIDE + 8192,
            "read at {from} cost {c} bytes"
        );
    }
}

#[tokio::test]
async fn wait_for_resolves_when_the_record_is_durable() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    let waiter = tokio::spawn({
        let spool = spool.clone();
        async move { spool.wait_for(2).await }
    });
    spool.append(recs(0, 1, 1)).await.unwrap();
    assert!(!waiter.is_finished());
    spool.append(recs(0, 1, 1)).await.unwrap();
    waiter.await.unwrap();
    spool.wait_for(1).await; // already there
                             // Closing releases waiters for records that will never come.
    let waiter = tokio::spawn({
        let spool = spool.clone();
        async move { spool.wait_for(100).await }
    });
    spool.close().await;
    waiter.await.unwrap();
}

#[tokio::test]
async fn group_commit_batches_concurrent_appends() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(1 << 20, 64 << 20)).await;
    let syncs_before = fs.sync_count();
    let tasks: Vec<_> = (0..500u32)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                (
                    i,
                    spool.append(vec![i.to_le_bytes().to_vec()]).await.unwrap(),
                )
            })
        })
        .collect();
    let mut assigned = Vec::new();
    for t in tasks {
        let (i, range) = t.await.unwrap();
        assert_eq!(range.end - range.start, 1);
        assigned.push((range.start, i));
    }
    assigned.sort();
    assert_eq!(
        assigned.iter().map(|a| a.0).collect::<Vec<_>>(),
        (1..=500).collect::<Vec<_>>()
    );
    let syncs = fs.sync_count() - syncs_before;
    assert!(
        syncs <= 50,
        "500 appends took {syncs} fsyncs: not group-committed"
    );
    assert!(spool.stats().fsyncs >= syncs);
    for (seq, i) in assigned {
        let r = spool.read(seq, 1, usize::MAX).unwrap();
        assert_eq!(&r[0].1[..], &i.to_le_bytes()[..]);
    }
}

#[tokio::test]
async fn oversize_records_and_bad_config_are_refused() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 8192)).await;
    let err = spool
        .append(vec![vec![0; 10], vec![0; 4096 - HEADER_LEN + 1]])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::RecordTooLarge {
                index: 1,
                max: 4080,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(spool.append(vec![vec![0; 4080]]).await.unwrap(), 1..2);
    let err = Spool::open(cfg(4096, 4096), fs.clone()).await.unwrap_err();
    assert!(matches!(err, SpoolError::InvalidConfig { .. }), "{err}");
}

#[tokio::test]
async fn an_io_error_fails_the_writer_loudly() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    spool.append(recs(0, 1, 1)).await.unwrap();
    fs.crash_after_ops(1); // the append succeeds, its fsync fails
    let err = spool.append(recs(0, 1, 1)).await.unwrap_err();
    assert!(
        matches!(&err, SpoolError::Failed { reason, .. } if reason.contains("fsync /spool/00000000000000000001.seg")),
        "{err}"
    );
    let err = spool.append(recs(0, 1, 1)).await.unwrap_err();
    assert!(matches!(err, SpoolError::Failed { .. }), "{err}");
    assert_eq!(
        spool.stats().next_seq,
        2,
        "the failed record never became visible"
    );
}

/// Writes records 1..=6 into one segment, damages its tail with `damage`,
/// reopens and checks that exactly `survivors` records are left, the file is
/// cut at the last good record and appends continue after it.
async fn torn_tail_case(name: &str, damage: impl FnOnce(&mut Vec<u8>), survivors: u64) {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(1 << 20, 4 << 20)).await;
    let payloads: Vec<Vec<u8>> = (1..=6u8).map(|i| vec![i; 20 + i as usize]).collect();
    spool.append(payloads.clone()).await.unwrap();
    spool.close().await;
    let seg = Path::new("/spool").join(segment_name(1));
    let mut data = fs.contents(&seg).unwrap();
    damage(&mut data);
    fs.set_contents(&seg, data).unwrap();

    let spool = open(&fs, cfg(1 << 20, 4 << 20)).await;
    let got = spool.read(1, 100, usize::MAX).unwrap();
    assert_eq!(seqs(&got), (1..=survivors).collect::<Vec<_>>(), "{name}");
    for (seq, p) in &got {
        assert_eq!(&p[..], &payloads[*seq as usize - 1][..], "{name}");
    }
    let good_len: usize = payloads[..survivors as usize]
        .iter()
        .map(|p| p.len() + HEADER_LEN)
        .sum();
    let torn = spool.torn_tails();
    assert_eq!(torn.len(), 1, "{name}");
    assert_eq!(
        (&torn[0].path, torn[0].offset),
        (&seg, good_len as u64),
        "{name}"
    );
    assert_eq!(
        fs.contents(&seg).unwrap().len(),
        good_len,
        "{name}: tail cut off"
    );
    assert_eq!(
        spool.append(vec![b"next".to_vec()]).await.unwrap(),
        survivors + 1..survivors + 2,
        "{name}"
    );
    let r = spool.read(survivors + 1, 1, usize::MAX).unwrap();
    assert_eq!(&r[0].1[..], b"next", "{name}");
    spool.close().await;
    // And the repaired spool reopens cleanly.
    let spool = open(&fs, cfg(1 << 20, 4 << 20)).await;
    assert!(spool.torn_tails().is_empty(), "{name}");
    assert_eq!(spool.stats().next_seq, survivors + 2, "{name}");
}

#[tokio::test]
async fn torn_tails_are_cut_and_everything_before_survives() {
    let last = 26 + HEADER_LEN; // frame of record 6
    torn_tail_case("partial header", |d| d.truncate(d.len() - last + 7), 5).await;
    torn_tail_case("partial payload", |d| d.truncate(d.len() - 3), 5).await;
    torn_tail_case("bad crc", |d| *d.last_mut().unwrap() ^= 0xff, 5).await;
    torn_tail_case("garbage appended", |d| d.extend_from_slice(&[0xab; 37]), 6).await;
    torn_tail_case("zeros appended", |d| d.extend_from_slice(&[0; 100]), 6).await;
    torn_tail_case(
        "huge length",
        |d| d.extend_from_slice(&u32::MAX.to_le_bytes()),
        6,
    )
    .await;
    torn_tail_case(
        "wrong seq",
        |d| {
            let mut rec = Vec::new();
            format::encode_record(&mut rec, 99, b"stray");
            d.extend_from_slice(&rec);
        },
        6,
    )
    .await;
    torn_tail_case("everything torn", |d| d.truncate(5), 0).await;
}

#[tokio::test]
async fn damage_before_the_tail_is_an_error_naming_file_and_offset() {
    let fs = Arc::new(MemFs::new());
    let spool = open(&fs, cfg(4096, 1 << 20)).await;
    spool.append(recs(0, 12, 1000)).await.unwrap(); // segments 1, 5, 9
    spool.close().await;
    let seg5 = Path::new("/spool").join(segment_name(5));
    let mut data = fs.contents(&seg5).unwrap();
    data[1016 + HEADER_LEN + 3] ^= 1; // payload of seq 6
    fs.set_contents(&seg5, data).unwrap();
    let err = Spool::open(cfg(4096, 1 << 20), fs.clone())
        .await
        .unwrap_err();
    match &err {
        SpoolError::Corrupt { path, offset, .. } => assert_eq!((path, *offset), (&seg5, 1016)),
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(
        err.to_string().contains("00000000000000000005.seg"),
        "{err}"
    );

    // A missing middle segment is a gap, not silently skipped.
    fs.remove(&seg5).unwrap();
    let err = Spool::open(cfg(4096, 1 << 20), fs.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::Gap {
                expected: 5,
                found: 9,
                ..
            }
        ),
        "{err}"
    );

    // Segments without the meta file (and its epoch) are refused.
    fs.remove(&Path::new("/spool").join(META_NAME)).unwrap();
    let err = Spool::open(cfg(4096, 1 << 20), fs.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SpoolError::MissingMeta { segments: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn crash_at_any_point_keeps_every_acknowledged_record() {
    // Exhaustive over crash points of a short workload, several tears each.
    for crash_after in 0..40u64 {
        for seed in 0..4u64 {
            let fs = Arc::new(MemFs::new());
            let spool = open(&fs, cfg(4096, 1 << 20)).await;
            fs.crash_after_ops(crash_after);
            let mut acked = Vec::new();
            for i in 0..10u8 {
                match spool.append(recs(i * 16, 3, 700)).await {
                    Ok(r) => acked.push((r, i)),
                    Err(_) => break,
                }
                let _ = spool.trim(spool.stats().next_seq.saturating_sub(4).max(1));
            }
            let image = Arc::new(fs.crash(seed));
            let spool2 = open(&image, cfg(4096, 1 << 20)).await;
            let first = spool2.stats().first_unacked_seq;
            let got = spool2.read(1, 1000, usize::MAX).unwrap();
            for (range, i) in &acked {
                for (k, seq) in range.clone().enumerate() {
                    if seq < first {
                        continue;
                    }
                    let rec = got.iter().find(|(s, _)| *s == seq);
                    let want = vec![(i * 16).wrapping_add(k as u8); 700];
                    assert_eq!(
                        rec.map(|r| &r.1[..]),
                        Some(&want[..]),
                        "crash_after {crash_after} seed {seed} seq {seq}"
                    );
                }
            }
            let next = spool2.stats().next_seq;
            assert_eq!(spool2.append(recs(0, 1, 1)).await.unwrap(), next..next + 1);
            drop(spool);
        }
    }
}

#[tokio::test]
async fn std_fs_round_trip_and_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        dir: tmp.path().join("nested/spool"),
        segment_bytes: 4096,
        max_bytes: 1 << 20,
        max_batch_records: 1024,
    };
    let spool = Spool::open_std(cfg.clone()).await.unwrap();
    let epoch = spool.epoch();
    assert_eq!(spool.append(recs(0, 10, 1000)).await.unwrap(), 1..11);
    spool.trim(6).unwrap();
    spool.close().await;
    let last = cfg.dir.join(segment_name(9));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, &[1, 2, 3]).unwrap();
    drop(f);

    let spool = Spool::open_std(cfg.clone()).await.unwrap();
    assert_eq!(spool.epoch(), epoch);
    assert_eq!(
        seqs(&spool.read(1, 100, usize::MAX).unwrap()),
        (6..11).collect::<Vec<_>>()
    );
    assert_eq!(std::fs::metadata(&last).unwrap().len(), 2 * 1016);
    assert_eq!(spool.append(recs(0, 1, 10)).await.unwrap(), 11..12);
    assert!(
        !cfg.dir.join(segment_name(1)).exists(),
        "fully acked segment deleted"
    );
    spool.close().await;
}

/// Segments and the meta file are 0600 and every directory the spool made
/// 0700, from creation (the test runs under the default umask, not 077).
#[tokio::test]
async fn std_fs_files_and_directories_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        dir: tmp.path().join("nested/spool"),
        segment_bytes: 4096,
        max_bytes: 1 << 20,
        max_batch_records: 1024,
    };
    let spool = Spool::open_std(cfg.clone()).await.unwrap();
    spool.append(recs(0, 20, 1000)).await.unwrap();
    spool.trim(3).unwrap();
    spool.close().await;
    let audit = strata_net::files::audit(&tmp.path().join("nested")).unwrap();
    assert!(
        audit.checked.iter().any(|p| p.ends_with(META_NAME)),
        "{audit:?}"
    );
    assert!(audit.checked.len() > 4, "{audit:?}");
    assert_eq!(audit.wrong, vec![], "{audit:?}");
}

#[test]
fn spool_handle_is_clone_send_sync() {
    fn assert_handle<T: Clone + Send + Sync + 'static>() {}
    assert_handle::<Spool>();
    fn assert_fs<T: SpoolFs>() {}
    assert_fs::<StdFs>();
    assert_fs::<MemFs>();
}
