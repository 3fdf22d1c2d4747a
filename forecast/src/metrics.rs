//! Forecast accuracy: MAPE and sMAPE, both in percent.
//!
//! MAPE is the figure operators read ("off by 4 %"), but it is undefined at
//! zero actuals, which rates do hit (an idle workload); those points are
//! skipped, and a series of only zeros cannot be scored. sMAPE is bounded
//! (0..=200 %) and defined everywhere except 0 vs 0, which counts as a
//! perfect point.

use crate::ForecastError;

fn same_len(actual: &[f64], predicted: &[f64]) -> Result<(), ForecastError> {
    if actual.len() == predicted.len() {
        Ok(())
    } else {
        Err(ForecastError::LengthMismatch {
            actual: actual.len(),
            predicted: predicted.len(),
        })
    }
}

/// Mean absolute percentage error, in percent: mean of
/// `|a − p| / |a| · 100` over the points whose actual `a` is non-zero
/// (zeros are skipped, see the module docs). Fails on different lengths or
/// when no actual is non-zero.
pub fn mape(actual: &[f64], predicted: &[f64]) -> Result<f64, ForecastError> {
    same_len(actual, predicted)?;
    let (sum, n) = actual
        .iter()
        .zip(predicted)
        .filter(|(a, _)| **a != 0.0)
        .fold((0.0, 0usize), |(s, n), (a, p)| {
            (s + ((a - p) / a).abs(), n + 1)
        });
    if n == 0 {
        return Err(ForecastError::NothingToScore(
            "MAPE skips zero actuals and every actual is zero",
        ));
    }
    Ok(100.0 * sum / n as f64)
}

/// Symmetric MAPE, in percent (0..=200): mean of
/// `2 |a − p| / (|a| + |p|) · 100`; a point where both are 0 scores 0.
/// Fails on different lengths or empty input.
pub fn smape(actual: &[f64], predicted: &[f64]) -> Result<f64, ForecastError> {
    same_len(actual, predicted)?;
    if actual.is_empty() {
        return Err(ForecastError::NothingToScore("sMAPE of no points"));
    }
    let sum: f64 = actual
        .iter()
        .zip(predicted)
        .map(|(a, p)| {
            let d = a.abs() + p.abs();
            if d == 0.0 {
                0.0
            } else {
                2.0 * (a - p).abs() / d
            }
        })
        .sum();
    Ok(100.0 * sum / actual.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mape_skips_zeros() {
        let m = mape(&[100.0, 0.0, 50.0], &[110.0, 7.0, 45.0]).unwrap();
        assert!((m - 10.0).abs() < 1e-12, "{m}");
        assert!(matches!(
            mape(&[0.0, 0.0], &[1.0, 2.0]),
            Err(ForecastError::NothingToScore(_))
        ));
        assert!(matches!(
            mape(&[1.0], &[]),
            Err(ForecastError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn smape_is_bounded_and_zero_safe() {
        assert_eq!(smape(&[0.0, 10.0], &[0.0, 10.0]).unwrap(), 0.0);
        assert!((smape(&[0.0], &[5.0]).unwrap() - 200.0).abs() < 1e-12);
        let s = smape(&[100.0], &[50.0]).unwrap();
        assert!((s - 100.0 * 50.0 / 75.0).abs() < 1e-9, "{s}");
        assert!(smape(&[], &[]).is_err());
    }
}
