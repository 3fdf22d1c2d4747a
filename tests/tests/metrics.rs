//! Every process's `/metrics` and `/health`, scraped from the real binaries
//! after some traffic: well-formed Prometheus (OpenMetrics) text with the
//! metrics operators need, and values that match what happened.

use std::time::Duration;

use anyhow::{ensure, Context};
use strata_tests::cluster::{http_get_text, login, metric_value, serial};
use strata_tests::{wait_until, Cluster, ClusterOpts};
use tokio_util::sync::CancellationToken;

/// Checks the exposition format line by line: `# HELP/TYPE/UNIT` comments,
/// samples `name{labels} value` whose family has a `# TYPE`, and the final
/// `# EOF`. Returns the number of samples.
fn check_exposition(who: &str, text: &str) -> anyhow::Result<usize> {
    ensure!(
        text.trim_end().ends_with("# EOF"),
        "{who}: no `# EOF` at the end"
    );
    let mut families: Vec<&str> = Vec::new();
    let mut samples = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap_or_default());
            continue;
        }
        if line.starts_with("# ") {
            continue;
        }
        let name_end = line
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'))
            .with_context(|| format!("{who}: sample without a value: {line:?}"))?;
        let name = &line[..name_end];
        ensure!(
            !name.is_empty() && !name.starts_with(|ch: char| ch.is_ascii_digit()),
            "{who}: bad metric name in {line:?}"
        );
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            // Label values are quoted and may hold braces (route templates).
            let mut quoted = false;
            let mut escaped = false;
            let close = rest
                .char_indices()
                .find(|&(_, ch)| {
                    let end = ch == '}' && !quoted;
                    if escaped {
                        escaped = false;
                    } else if ch == '\\' {
                        escaped = true;
                    } else if ch == '"' {
                        quoted = !quoted;
                    }
                    end
                })
                .with_context(|| format!("{who}: unclosed labels in {line:?}"))?
                .0;
            rest = &rest[close + 1..];
        }
        let value = rest
            .strip_prefix(' ')
            .and_then(|v| v.split(' ').next())
            .with_context(|| format!("{who}: no value in {line:?}"))?;
        ensure!(
            value.parse::<f64>().is_ok(),
            "{who}: value {value:?} is not a number in {line:?}"
        );
        ensure!(
            families.iter().any(|f| name.starts_with(f)),
            "{who}: sample {name} has no # TYPE line"
        );
        samples += 1;
    }
    Ok(samples)
}

/// `series` of `text`, failing when absent.
fn value(who: &str, text: &str, series: &str) -> anyhow::Result<f64> {
    metric_value(text, series).with_context(|| format!("{who}: no sample {series}"))
}

/// Fetches `/metrics` (200, a Prometheus content type, valid text) and
/// `/health` (200) of one process.
async fn scrape_checked(who: &str, addr: &str) -> anyhow::Result<String> {
    let (status, ctype, text) = http_get_text(addr, "/metrics").await?;
    ensure!(status == 200, "{who} /metrics: {status}");
    ensure!(
        ctype.contains("openmetrics-text") || ctype.contains("text/plain"),
        "{who} /metrics content type {ctype:?}"
    );
    let n = check_exposition(who, &text)?;
    ensure!(n > 0, "{who}: no samples");
    let (status, _, body) = http_get_text(addr, "/health").await?;
    ensure!(status == 200, "{who} /health: {status} {body}");
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_its_metrics_and_health() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        hubs: 3,
        edges: 1,
        ..Default::default()
    })
    .await?;
    let r = metrics(&c).await;
    c.finish(r)
}

async fn metrics(c: &Cluster) -> anyhow::Result<()> {
    let (devices, count) = (5u32, 40u64);
    let total = u64::from(devices) * count;
    let s = firmware_sim::run(
        firmware_sim::FleetConfig {
            tenant: "metrics".into(),
            devices,
            count: Some(count),
            rate_per_device: 0.0,
            endpoints: c.mqtt_addrs(),
            username: Some(login("metrics").0),
            password: Some(login("metrics").1),
            ..Default::default()
        },
        CancellationToken::new(),
        None,
    )
    .await?;
    ensure!(s.complete && s.acked == total, "{s:?}");
    // One bad publish, so a reject counter has moved.
    let rejected = {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let (host, port) = c.mqtt_addrs()[0]
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.parse::<u16>()))
            .context("mqtt address")?;
        let mut opts = MqttOptions::new("metrics-bad", host, port?);
        let (user, password) = login("metrics");
        opts.set_credentials(user, password);
        let (client, mut el) = AsyncClient::new(opts, 4);
        client
            .publish(
                "strata/metrics/bad/telemetry",
                QoS::AtLeastOnce,
                false,
                "nope",
            )
            .await?;
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Event::Incoming(Packet::PubAck(_)) = el.poll().await? {
                    return anyhow::Ok(());
                }
            }
        })
        .await??;
        1.0
    };

    // Edge: ingest, rejects by reason, spool depth and bytes, batches in flight.
    let edge = c.edge_metrics_addr(0)?;
    let text = wait_until("edge gauges refreshed", Duration::from_secs(10), || async {
        let t = scrape_checked("edge-1", &edge).await.ok()?;
        // The spool gauges refresh every second.
        (metric_value(&t, "strata_spool_bytes")? > 0.0
            && metric_value(&t, "strata_uplink_records_committed_total")? >= total as f64)
            .then_some(t)
    })
    .await?;
    let accepted = value("edge", &text, "strata_ingress_publishes_accepted_total")?;
    ensure!(
        accepted == total as f64,
        "edge accepted {accepted}, want {total}"
    );
    for reason in [
        "invalid_json",
        "unknown_topic",
        "oversize",
        "non_finite_metric",
        "malformed_packet",
        "packet_too_large",
    ] {
        value(
            "edge",
            &text,
            &format!("strata_ingress_rejects_total{{reason=\"{reason}\"}}"),
        )?;
    }
    let bad = value(
        "edge",
        &text,
        "strata_ingress_rejects_total{reason=\"invalid_json\"}",
    )?;
    ensure!(bad == rejected, "invalid_json rejects {bad}");
    for series in [
        "strata_spool_records",
        "strata_spool_bytes",
        "strata_spool_fsyncs",
        "strata_uplink_inflight_batches",
        "strata_uplink_connected",
        "strata_uplink_batches_committed_total",
        "strata_uplink_commit_latency_seconds_count",
        "strata_ingress_connections",
        "strata_ingress_submit_latency_seconds_count",
    ] {
        value("edge", &text, series)?;
    }
    ensure!(value("edge", &text, "strata_uplink_connected")? == 1.0);

    // Hubs: Raft term, commit and applied index, commit latency, storage.
    let mut leaders = 0.0;
    let mut latency_samples = 0.0;
    for h in &c.hub_addrs {
        let who = format!("hub-{}", h.id);
        let addr = c.hub_metrics_addr(h.id)?;
        let text = wait_until(
            &format!("{who} stored all"),
            Duration::from_secs(10),
            || async {
                let t = scrape_checked(&who, &addr).await.ok()?;
                (metric_value(&t, "strata_hub_records_stored_total")? >= total as f64).then_some(t)
            },
        )
        .await?;
        let term = value(&who, &text, "strata_hub_raft_term")?;
        let commit = value(&who, &text, "strata_hub_raft_commit_index")?;
        let applied = value(&who, &text, "strata_hub_raft_applied_index")?;
        let last = value(&who, &text, "strata_hub_raft_last_index")?;
        ensure!(term >= 1.0, "{who}: term {term}");
        ensure!(
            applied > 0.0 && applied <= last && commit <= last,
            "{who}: commit {commit}, applied {applied}, last {last}"
        );
        ensure!(
            text.contains("strata_hub_commit_latency_seconds_bucket{le=\""),
            "{who}: no commit latency histogram buckets"
        );
        latency_samples += value(&who, &text, "strata_hub_commit_latency_seconds_count")?;
        // What dedup drops is counted by reason; both series always exist.
        for reason in ["edge_resend", "device_retransmission"] {
            let series = format!("strata_hub_duplicate_records_total{{reason=\"{reason}\"}}");
            value(&who, &text, &series)?;
        }
        leaders += value(&who, &text, "strata_hub_raft_leader")?;
        ensure!(
            text.contains("# TYPE strata_handshake_failures counter"),
            "{who}: no handshake failure counter"
        );
        ensure!(value(&who, &text, "strata_handshake_accepted_total")? >= 1.0);
    }
    ensure!(leaders == 1.0, "{leaders} hubs say they lead");
    ensure!(
        latency_samples > 0.0,
        "no commit latency observed on any hub"
    );

    // Central: HTTP requests by route and status, hub call latency.
    let _ = c.api.device_counts("metrics").await?;
    let central = c.central_metrics_addr()?;
    let text = scrape_checked("central", &central).await?;
    ensure!(
        text.contains("strata_central_http_requests_total{")
            && text.contains("route=\"/api/v1/devices\""),
        "central: no per-route request counter"
    );
    ensure!(
        text.contains("strata_central_hub_call_seconds_bucket{"),
        "central: no hub call latency histogram"
    );
    Ok(())
}

#[test]
fn exposition_checker_rejects_what_it_should() {
    let ok = "# HELP a_total A.\n# TYPE a counter\na_total{route=\"/x/{y}\"} 3\n# EOF\n";
    assert_eq!(check_exposition("t", ok).unwrap(), 1);
    for bad in [
        "# TYPE a counter\na_total 3\n",                // no EOF
        "# TYPE a counter\na_total three\n# EOF\n",     // not a number
        "# TYPE a counter\nb_total 3\n# EOF\n",         // no TYPE for b
        "# TYPE a counter\na_total{x=\"1\" 3\n# EOF\n", // unclosed labels
    ] {
        assert!(check_exposition("t", bad).is_err(), "{bad:?}");
    }
}
