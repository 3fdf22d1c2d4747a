//! Query-string parsing for the API, as pure functions of the raw pairs and
//! `now`: unknown or repeated parameters are rejected (a typo such as
//! `?form=` must not silently fall back to a default), and every error names
//! its parameter.

use strata_protocol::monitoring::AlertQuery;
use strata_protocol::Severity;

use super::error::AppError;

/// Window of a telemetry read when `from` is not given, ms.
pub const DEFAULT_WINDOW_MS: i64 = 3_600_000;
/// Records or buckets returned when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 10_000;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u32 = 100_000;

/// Alerts returned when `limit` is not given.
pub const DEFAULT_ALERT_LIMIT: u32 = 1_000;
/// Largest accepted alert `limit`.
pub const MAX_ALERT_LIMIT: u32 = 10_000;
/// How far past now the default alert window reaches, ms.
pub const ALERT_CLOCK_SLACK_MS: i64 = 60_000;

/// A parsed telemetry read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryParams {
    /// Inclusive start, ms since the Unix epoch.
    pub from_ms: i64,
    /// Exclusive end, ms since the Unix epoch.
    pub to_ms: i64,
    /// Bucket width for a downsampled read.
    pub step_ms: Option<u64>,
    /// Most records or buckets.
    pub limit: u32,
    /// Region to read from, skipping the device lookup.
    pub region: Option<String>,
}

/// Rejects parameters not in `allowed` and repeated ones; returns a lookup.
pub fn check<'a>(
    pairs: &'a [(String, String)],
    allowed: &[&str],
) -> Result<impl Fn(&str) -> Option<&'a str> + 'a, AppError> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(AppError::bad_param(
                k,
                format!("unknown parameter (allowed: {})", allowed.join(", ")),
            ));
        }
        if pairs[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(AppError::bad_param(k, "given more than once"));
        }
    }
    Ok(move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    })
}

/// Parses the telemetry read parameters.
pub fn telemetry(pairs: &[(String, String)], now_ms: i64) -> Result<TelemetryParams, AppError> {
    let get = check(pairs, &["from", "to", "step", "limit", "region"])?;
    let to_ms = match get("to") {
        Some(v) => parse_time(v).map_err(|e| AppError::bad_param("to", e))?,
        None => now_ms,
    };
    let from_ms = match get("from") {
        Some(v) => parse_time(v).map_err(|e| AppError::bad_param("from", e))?,
        None => to_ms.saturating_sub(DEFAULT_WINDOW_MS),
    };
    if from_ms >= to_ms {
        return Err(AppError::bad_param(
            "from",
            format!("must be before `to` (from = {from_ms} ms, to = {to_ms} ms)"),
        ));
    }
    let step_ms = match get("step") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(0) => return Err(AppError::bad_param("step", "must be at least 1 ms")),
            Ok(s) => Some(s),
            Err(_) => {
                return Err(AppError::bad_param(
                    "step",
                    format!("{v:?} is not a whole number of milliseconds"),
                ))
            }
        },
    };
    let limit = parse_limit(get("limit"), DEFAULT_LIMIT, MAX_LIMIT)?;
    Ok(TelemetryParams {
        from_ms,
        to_ms,
        step_ms,
        limit,
        region: get("region").map(str::to_owned),
    })
}

/// `limit`: 1..=`max`, `default` when absent.
/// A `limit` parameter: `default` when absent, 1..=`max`.
pub(super) fn parse_limit(v: Option<&str>, default: u32, max: u32) -> Result<u32, AppError> {
    let Some(v) = v else {
        return Ok(default);
    };
    match v.parse::<u64>() {
        Ok(0) => Err(AppError::bad_param("limit", "must be at least 1")),
        Ok(n) if n > u64::from(max) => Err(AppError::bad_param(
            "limit",
            format!("{n} is too large (at most {max})"),
        )),
        // In range, so it fits in u32.
        Ok(n) => Ok(n as u32),
        Err(_) => Err(AppError::bad_param(
            "limit",
            format!("{v:?} is not a whole number"),
        )),
    }
}

/// Most devices one page of `GET /api/v1/devices` holds.
pub const MAX_DEVICE_PAGE: u32 = 100_000;

/// A parsed device list read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceParams {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this region.
    pub region: Option<String>,
    /// Only devices whose tenant, id or edge contains this, ignoring case.
    pub search: Option<String>,
    /// Most devices returned; `None`: every match.
    pub limit: Option<u32>,
    /// Matches skipped before the first returned.
    pub offset: u32,
}

/// Parses `GET /api/v1/devices` parameters: `tenant`, `region`, `search`
/// (a non-empty substring, at most 128 bytes), `limit` (1..=100000;
/// default: all) and `offset` (0..=2^32-1, default 0).
pub fn devices(pairs: &[(String, String)]) -> Result<DeviceParams, AppError> {
    let get = check(pairs, &["tenant", "region", "search", "limit", "offset"])?;
    let search = match get("search") {
        Some("") => return Err(AppError::bad_param("search", "must not be empty")),
        Some(s) if s.len() > 128 => {
            return Err(AppError::bad_param("search", "longer than 128 bytes"))
        }
        s => s.map(str::to_lowercase),
    };
    let limit = match get("limit") {
        None => None,
        v => Some(parse_limit(v, MAX_DEVICE_PAGE, MAX_DEVICE_PAGE)?),
    };
    let offset = match get("offset") {
        None => 0,
        Some(v) => v.parse::<u32>().map_err(|_| {
            AppError::bad_param(
                "offset",
                format!("{v:?} is not a whole number from 0 to {}", u32::MAX),
            )
        })?,
    };
    Ok(DeviceParams {
        tenant: get("tenant").map(str::to_owned),
        region: get("region").map(str::to_owned),
        search,
        limit,
        offset,
    })
}

/// A parsed alert read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertParams {
    /// The query sent to every selected region.
    pub query: AlertQuery,
    /// Only this region.
    pub region: Option<String>,
}

/// Parses `GET /api/v1/alerts` parameters: `tenant`, `device`, `monitor`
/// (exact, non-empty), `severity` (minimum), `from` / `to` (ms or RFC 3339;
/// default the last hour up to one minute ahead, so alerts stamped by an
/// edge whose clock runs slightly fast are not missed), `limit`, `region`.
pub fn alerts(pairs: &[(String, String)], now_ms: i64) -> Result<AlertParams, AppError> {
    let get = check(
        pairs,
        &[
            "tenant", "device", "monitor", "severity", "from", "to", "limit", "region",
        ],
    )?;
    let text = |name: &str| -> Result<Option<String>, AppError> {
        match get(name) {
            Some("") => Err(AppError::bad_param(name, "must not be empty")),
            v => Ok(v.map(str::to_owned)),
        }
    };
    let (tenant, device, monitor, region) = (
        text("tenant")?,
        text("device")?,
        text("monitor")?,
        text("region")?,
    );
    let min_severity = match get("severity") {
        None => None,
        Some(v) => Some(
            v.parse::<Severity>()
                .map_err(|e| AppError::bad_param("severity", e))?,
        ),
    };
    let to_ms = match get("to") {
        Some(v) => parse_time(v).map_err(|e| AppError::bad_param("to", e))?,
        None => now_ms.saturating_add(ALERT_CLOCK_SLACK_MS),
    };
    let from_ms = match (get("from"), get("to")) {
        (Some(v), _) => parse_time(v).map_err(|e| AppError::bad_param("from", e))?,
        (None, Some(_)) => to_ms.saturating_sub(DEFAULT_WINDOW_MS),
        (None, None) => now_ms.saturating_sub(DEFAULT_WINDOW_MS),
    };
    if from_ms >= to_ms {
        return Err(AppError::bad_param(
            "from",
            format!("must be before `to` (from = {from_ms} ms, to = {to_ms} ms)"),
        ));
    }
    let limit = parse_limit(get("limit"), DEFAULT_ALERT_LIMIT, MAX_ALERT_LIMIT)?;
    Ok(AlertParams {
        query: AlertQuery {
            tenant,
            device,
            monitor,
            min_severity,
            from_ms,
            to_ms,
            limit,
        },
        region,
    })
}

/// A timestamp: integer ms since the Unix epoch, or RFC 3339
/// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| format!("{s:?} is out of range"));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is neither milliseconds since the epoch nor an RFC 3339 time")
    })
}

fn num(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|v| range.contains(v))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    // ASCII only, so the byte-offset slices below cannot split a character.
    if !s.is_ascii() {
        return None;
    }
    let s = s.as_bytes();
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    if !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    let year = num(&text[0..4], 0..=9999)?;
    let month = num(&text[5..7], 1..=12)?;
    let day = num(&text[8..10], 1..=days_in_month(year, month))?;
    let hour = num(&text[11..13], 0..=23)?;
    let min = num(&text[14..16], 0..=59)?;
    // 60 admits a leap second; it lands on the next second.
    let sec = num(&text[17..19], 0..=60)?;
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let ms_digits = format!("{:0<3}", &frac[..n.min(3)]);
        millis = num(&ms_digits, 0..=999)?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            sign * (num(&rest[1..3], 0..=23)? * 60 + num(&rest[4..6], 0..=59)?)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_last_hour() {
        let p = telemetry(&[], 10_000_000).unwrap();
        assert_eq!(p.to_ms, 10_000_000);
        assert_eq!(p.from_ms, 10_000_000 - DEFAULT_WINDOW_MS);
        assert_eq!((p.step_ms, p.limit, p.region), (None, DEFAULT_LIMIT, None));
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("from", "10"), ("to", "10")], "`from`"),
            (&[("from", "yesterday")], "`from`"),
            (&[("to", "12x")], "`to`"),
            (&[("step", "0")], "`step`"),
            (&[("step", "-5")], "`step`"),
            (&[("limit", "100001")], "`limit`"),
            (&[("limit", "0")], "`limit`"),
            (&[("limit", "ten")], "`limit`"),
            (&[("form", "1")], "`form`"),
            (&[("step", "1"), ("step", "2")], "`step`"),
        ];
        for (q, name) in cases {
            let e = telemetry(&pairs(q), 5_000_000).unwrap_err();
            assert_eq!(e.status, 400, "{q:?}");
            assert!(e.message.contains(name), "{q:?}: {}", e.message);
        }
    }

    #[test]
    fn explicit_values_pass_through() {
        let p = telemetry(
            &pairs(&[
                ("from", "1000"),
                ("to", "2000"),
                ("step", "100"),
                ("limit", "100000"),
                ("region", "west"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(
            p,
            TelemetryParams {
                from_ms: 1000,
                to_ms: 2000,
                step_ms: Some(100),
                limit: MAX_LIMIT,
                region: Some("west".into()),
            }
        );
    }

    #[test]
    fn alert_defaults_and_filters() {
        let p = alerts(&[], 10_000_000).unwrap();
        assert_eq!(
            p,
            AlertParams {
                query: AlertQuery {
                    tenant: None,
                    device: None,
                    monitor: None,
                    min_severity: None,
                    from_ms: 10_000_000 - DEFAULT_WINDOW_MS,
                    to_ms: 10_000_000 + ALERT_CLOCK_SLACK_MS,
                    limit: DEFAULT_ALERT_LIMIT,
                },
                region: None,
            }
        );
        let p = alerts(
            &pairs(&[
                ("tenant", "acme"),
                ("device", "d1"),
                ("monitor", "z"),
                ("severity", "warning"),
                ("to", "5000000"),
                ("limit", "10000"),
                ("region", "west"),
            ]),
            10_000_000,
        )
        .unwrap();
        assert_eq!(p.query.tenant.as_deref(), Some("acme"));
        assert_eq!(p.query.device.as_deref(), Some("d1"));
        assert_eq!(p.query.monitor.as_deref(), Some("z"));
        assert_eq!(p.query.min_severity, Some(Severity::Warning));
        // `to` alone: the hour before it.
        assert_eq!(
            (p.query.from_ms, p.query.to_ms),
            (5_000_000 - DEFAULT_WINDOW_MS, 5_000_000)
        );
        assert_eq!(
            (p.query.limit, p.region.as_deref()),
            (MAX_ALERT_LIMIT, Some("west"))
        );
    }

    #[test]
    fn every_bad_alert_parameter_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("severity", "fatal")], "`severity`"),
            (&[("severity", "Critical")], "`severity`"),
            (&[("from", "20"), ("to", "10")], "`from`"),
            (&[("from", "soon")], "`from`"),
            (&[("limit", "10001")], "`limit`"),
            (&[("limit", "0")], "`limit`"),
            (&[("tenant", "")], "`tenant`"),
            (&[("device", "")], "`device`"),
            (&[("sevrity", "info")], "`sevrity`"),
            (&[("monitor", "a"), ("monitor", "b")], "`monitor`"),
        ];
        for (q, name) in cases {
            let e = alerts(&pairs(q), 5_000_000).unwrap_err();
            assert_eq!(e.status, 400, "{q:?}");
            assert!(e.message.contains(name), "{q:?}: {}", e.message);
        }
        let e = alerts(&pairs(&[("severity", "fatal")]), 0).unwrap_err();
        assert!(
            e.message.contains("expected info, warning or critical"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000));
        assert_eq!(
            parse_time("2024-05-01T14:00:00.25+02:00"),
            Ok(1_714_564_800_250)
        );
        assert_eq!(
            parse_time("2024-02-29t00:00:00.123456z"),
            Ok(1_709_164_800_123)
        );
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(parse_time("-5"), Ok(-5));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+2:00",
            "",
            "-",
            "2024-05-01T12:00:0é",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
