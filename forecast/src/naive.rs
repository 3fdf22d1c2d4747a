//! [`SeasonalNaive`]: tomorrow at 14:05 looks like today at 14:05.
//!
//! The baseline every model must beat: no parameters, no fitting, and hard
//! to beat on clean seasonal data, but it copies last season's noise and
//! surges into the forecast. With less than one season of history it falls
//! back to the last value (naive), which `fallback()` reports.

use crate::{check_history, Forecast, ForecastError, Forecaster};

/// Seasonal-naive forecaster with one period, in steps.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalNaive {
    period: usize,
    fitted: Option<Fitted>,
}

#[derive(Debug, Clone, PartialEq)]
struct Fitted {
    step_ms: u64,
    /// The last season (or the last value when the history is shorter).
    last: Vec<f64>,
    /// RMS of the in-sample seasonal (or lag-1) differences.
    sigma: f64,
}

impl SeasonalNaive {
    /// A seasonal-naive model of `period` (≥ 1) steps.
    pub fn new(period: usize) -> Result<SeasonalNaive, ForecastError> {
        if period == 0 {
            return Err(ForecastError::Config(vec![
                "seasonal-naive period must be at least 1 step".into(),
            ]));
        }
        Ok(SeasonalNaive {
            period,
            fitted: None,
        })
    }

    /// Why the last fit was plain naive, if it was.
    pub fn fallback(&self) -> Option<String> {
        let f = self.fitted.as_ref()?;
        (f.last.len() < self.period).then(|| {
            format!(
                "history shorter than one season ({} steps): forecasting the last value",
                self.period
            )
        })
    }
}

impl Forecaster for SeasonalNaive {
    fn fit(&mut self, history: &[f64], step_ms: u64) -> Result<(), ForecastError> {
        check_history(history, step_ms)?;
        let n = history.len();
        if n == 0 {
            return Err(ForecastError::TooShort { len: 0, need: 1 });
        }
        let lag = if n >= self.period { self.period } else { 1 };
        let diffs: Vec<f64> = (lag..n).map(|t| history[t] - history[t - lag]).collect();
        let sigma = if diffs.is_empty() {
            0.0
        } else {
            (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt()
        };
        self.fitted = Some(Fitted {
            step_ms,
            last: history[n - lag..].to_vec(),
            sigma,
        });
        Ok(())
    }

    fn forecast(&self, horizon_steps: usize) -> Result<Forecast, ForecastError> {
        let f = self.fitted.as_ref().ok_or(ForecastError::NotFitted)?;
        let m = f.last.len();
        let point = (0..horizon_steps).map(|h| f.last[h % m]).collect();
        // h steps ahead copies a value ⌈h/m⌉ seasons old: variance grows per season.
        let sd: Vec<f64> = (0..horizon_steps)
            .map(|h| f.sigma * ((h / m + 1) as f64).sqrt())
            .collect();
        Ok(Forecast::from_sd(f.step_ms, point, &sd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_last_season() {
        let mut m = SeasonalNaive::new(3).unwrap();
        m.fit(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 10).unwrap();
        let f = m.forecast(4).unwrap();
        assert_eq!(f.point, vec![4.0, 5.0, 6.0, 4.0]);
        assert_eq!(f.step_ms, 10);
        assert!(f.upper[3] - f.lower[3] > f.upper[0] - f.lower[0]);
        assert!(m.fallback().is_none());
    }

    #[test]
    fn short_history_is_naive_and_says_so() {
        let mut m = SeasonalNaive::new(5).unwrap();
        m.fit(&[1.0, 2.0], 10).unwrap();
        assert_eq!(m.forecast(2).unwrap().point, vec![2.0, 2.0]);
        assert!(m.fallback().unwrap().contains("shorter than one season"));
        assert!(SeasonalNaive::new(0).is_err());
        assert_eq!(
            SeasonalNaive::new(2).unwrap().fit(&[], 10),
            Err(ForecastError::TooShort { len: 0, need: 1 })
        );
    }
}
