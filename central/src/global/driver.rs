//! The global tier's driver on central's leader: the only part that talks
//! to regions. Each round (while this replica leads): fetch the regions'
//! summaries (every `summary-interval`), propose what changed, propose the
//! plans [`evaluate`](super::evaluate) finds, then carry out what
//! [`reconcile`](super::reconcile) says the regions lack.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_sched::global::{HealthAsOf, RegionHealth, RegionSummary};
use strata_sched::scale::{Autoscaler, Forecast, ScaleSpec};
use strata_sched::{Timestamp, WorkloadId};
use tokio_util::sync::CancellationToken;

use super::prescale::{NoForecast, Predictor, PredictorSettings};
use super::sample::{running_by_workload, sample, NoSample, Reading, StepMean};
use super::{evaluate, reconcile, Action, RegionMonitors};
use crate::http::Clock;
use crate::metrics::GlobalMetrics;
use crate::region::{RegionApi, RegionError};
use crate::replica::Cluster;
use crate::state::{CentralState, Command, ScaleRecord};

/// `[global]` settings the driver needs.
#[derive(Debug, Clone)]
pub struct GlobalSettings {
    /// Time between rounds.
    pub interval: Duration,
    /// Time between fetches of a region's summary.
    pub summary_interval: Duration,
    /// A summary older than this makes its region `unknown`.
    pub stale_after: Duration,
    /// Seed of the splitter's tie-breaking (logged at start, so a run's
    /// decisions can be replayed).
    pub seed: u64,
    /// Forecast-driven pre-scaling; `None` when `[global.forecast]` is off.
    pub forecast: Option<PredictorSettings>,
}

/// See the module docs.
pub struct GlobalDriver {
    cluster: Cluster,
    regions: Vec<Arc<dyn RegionApi>>,
    settings: GlobalSettings,
    clock: Clock,
    metrics: GlobalMetrics,
    round: u64,
    last_summary: Option<Instant>,
    /// One autoscaler per autoscaled workload, on the leader only (soft
    /// state: a new leader starts its windows afresh).
    scalers: BTreeMap<WorkloadId, Scaler>,
}

/// An autoscaler, what its next sample is measured from, and its
/// forecasting state.
struct Scaler {
    generation: u64,
    auto: Autoscaler,
    /// The last cumulative counter reading (`records-per-second`).
    last: Option<Reading>,
    /// The open forecast step's samples (`None`: forecasting off).
    steps: Option<StepMean>,
    /// The workload's forecaster (`None`: forecasting off).
    predictor: Option<Predictor>,
    /// The newest step's forecast, passed to every decision until the next.
    forecast: Option<Forecast>,
}

impl GlobalDriver {
    /// A driver over `regions` (central's clients, by name).
    pub fn new(
        cluster: Cluster,
        regions: Vec<Arc<dyn RegionApi>>,
        settings: GlobalSettings,
        clock: Clock,
        metrics: GlobalMetrics,
    ) -> Self {
        GlobalDriver {
            cluster,
            regions,
            settings,
            clock,
            metrics,
            round: 0,
            last_summary: None,
            scalers: BTreeMap::new(),
        }
    }

    /// Runs rounds until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(seed = self.settings.seed, "global scheduler driver started");
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.cluster.published().borrow().leader {
                self.last_summary = None;
                self.scalers.clear();
                continue;
            }
            self.round().await;
        }
    }

    async fn round(&mut self) {
        self.round += 1;
        let summaries_due = self
            .last_summary
            .is_none_or(|t| t.elapsed() >= self.settings.summary_interval);
        if summaries_due {
            self.last_summary = Some(Instant::now());
            self.fetch_summaries().await;
        }
        self.autoscale().await;
        self.propose_plans().await;
        self.reconcile().await;
    }

    /// Feeds each autoscaled workload's metric (from the regions' live
    /// instance statuses, see [`sample`]) to its autoscaler, records each
    /// forecast step's mean in the replicated load history, forecasts from
    /// that history, and proposes what the autoscaler decides.
    async fn autoscale(&mut self) {
        type Scaled = (WorkloadId, u64, ScaleSpec, u32);
        let scaled: Vec<Scaled> = self
            .cluster
            .read(true, |s| {
                s.global()
                    .values()
                    .filter(|r| !r.deleting)
                    .filter_map(|r| Some((r.id(), r.generation, r.scale.clone()?, r.scaled?)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
        self.scalers
            .retain(|id, _| scaled.iter().any(|(w, ..)| w == id));
        if scaled.is_empty() {
            return;
        }
        let mut statuses = Vec::new();
        for region in &self.regions {
            let Ok(served) = region.edges().await else {
                // A missing region would look like a drop in load.
                self.metrics.scale_sample("region-unreachable");
                return;
            };
            statuses.extend(served.value.into_iter().flat_map(|e| e.status.instances));
        }
        let running = running_by_workload(&statuses);
        let now = (self.clock)();
        for (id, generation, spec, current) in scaled {
            let fresh = self
                .scalers
                .get(&id)
                .is_none_or(|s| s.generation != generation);
            if fresh {
                match Autoscaler::new(id.clone(), spec.clone(), current) {
                    Ok(auto) => {
                        let forecast = self.settings.forecast.as_ref();
                        self.scalers.insert(
                            id.clone(),
                            Scaler {
                                generation,
                                auto,
                                last: None,
                                steps: forecast.map(|f| StepMean::new(f.step_ms)),
                                // Made below, with the same settings.
                                predictor: None,
                                forecast: None,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(workload = %id, error = %e, "autoscaler not started");
                        continue;
                    }
                }
            }
            let Some(s) = self.scalers.get_mut(&id) else {
                continue;
            };
            if s.predictor.is_none() {
                // A new scaler, or one whose fit panicked; stays None
                // without `[global.forecast]`.
                s.predictor = self.settings.forecast.clone().map(Predictor::new);
            }
            let mine = running.get(&id).map_or(&[][..], |v| v.as_slice());
            let sampled = sample(&spec.metric, now, mine, s.last);
            s.last = sampled.reading;
            let mut step_done = None;
            match sampled.sample {
                Ok(o) => {
                    self.metrics.scale_observed(spec.metric.as_str());
                    if let Err(e) = s.auto.observe(Timestamp::from_millis(now), o) {
                        tracing::debug!(workload = %id, error = %e, "sample refused");
                    }
                    step_done = s.steps.as_mut().and_then(|m| m.add(now, o.total));
                }
                Err(NoSample::FirstReading) => {}
                Err(why) => self.metrics.scale_sample(why.as_str()),
            }
            if let (Some((step, value)), Some(f)) = (step_done, &self.settings.forecast) {
                // At most one write per workload per step.
                let cmd = Command::RecordLoad {
                    id: id.clone(),
                    metric: spec.metric.as_str().to_owned(),
                    step_ms: f.step_ms,
                    step,
                    value,
                };
                if let Err(e) = self.cluster.propose(&cmd).await {
                    tracing::debug!(workload = %id, error = %e, "load point not recorded");
                }
                s.forecast = match forecast_for(&self.cluster, &id, &mut s.predictor).await {
                    Ok(f) => {
                        self.metrics.forecast("made");
                        Some(f)
                    }
                    Err(why) => {
                        self.metrics.forecast(why.as_str());
                        tracing::debug!(workload = %id, reason = %why, "no forecast");
                        None
                    }
                };
            }
            // The step's forecast stands for every decision until the next
            // one (the autoscaler keeps its peak over the scale-down window).
            let d = s.auto.decide(Timestamp::from_millis(now), s.forecast);
            if !d.changed() {
                continue;
            }
            let record = ScaleRecord {
                index: 0,
                at_ms: now,
                generation,
                current: d.current,
                desired: d.desired,
                reason: d.reason.as_str().to_owned(),
                total: d.inputs.total,
                per_instance: d.inputs.per_instance,
                target: d.inputs.target,
                recommended: d.inputs.recommended,
                metric: d.inputs.metric.as_str().to_owned(),
                forecast: d.inputs.forecast.map(|f| f.value),
                forecast_horizon_ms: d
                    .inputs
                    .forecast
                    .map(|f| u64::try_from(f.horizon.as_millis()).unwrap_or(u64::MAX)),
                forecast_recommended: d.inputs.forecast_recommended,
            };
            self.metrics.scale_decision(d.reason.as_str());
            let cmd = Command::ScaleGlobal {
                id: id.clone(),
                record,
            };
            match self.cluster.propose(&cmd).await {
                Ok(o) => tracing::info!(workload = %id, from = d.current, to = d.desired,
                    reason = d.reason.as_str(), forecast = ?d.inputs.forecast.map(|f| f.value),
                    outcome = ?o, "autoscaled"),
                Err(e) => {
                    tracing::warn!(workload = %id, error = %e, "scale decision not applied");
                    s.auto.set_current(current);
                }
            }
        }
    }

    /// Global workload ids (a stale read: this replica leads).
    async fn global_ids(&self) -> Vec<WorkloadId> {
        self.cluster
            .read(true, |s| s.global().keys().cloned().collect::<Vec<_>>())
            .await
            .unwrap_or_default()
    }

    async fn fetch_summaries(&mut self) {
        let ids = self.global_ids().await;
        let now = (self.clock)();
        let (stored, registered) = self
            .cluster
            .read(true, |s| {
                (
                    s.reports().clone(),
                    s.regions().keys().cloned().collect::<Vec<_>>(),
                )
            })
            .await
            .unwrap_or_default();
        for region in &self.regions {
            let name = region.name().to_owned();
            if !registered.contains(&name) {
                continue;
            }
            let mut summary = match region.summary(ids.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    self.metrics.summary(&name, false);
                    tracing::debug!(region = %name, error = %e, "no region summary");
                    continue;
                }
            };
            self.metrics.summary(&name, true);
            summary.region = name.clone();
            summary.reported_at = Timestamp::from_millis(now);
            summary.health = HealthAsOf {
                state: RegionHealth::Ok,
                as_of: summary.reported_at,
            };
            if !worth_reporting(stored.get(&name), &summary, self.settings.stale_after) {
                continue;
            }
            let cmd = Command::ReportRegion {
                summary: Box::new(summary),
            };
            if let Err(e) = self.cluster.propose(&cmd).await {
                tracing::warn!(region = %name, error = %e, "region summary not recorded");
            }
        }
    }

    async fn propose_plans(&mut self) {
        let now = (self.clock)();
        let (seed, first) = (self.settings.seed ^ self.round, self.round << 20);
        let plans = self
            .cluster
            .read(true, move |s: &CentralState| {
                evaluate(s, now, first, &mut ChaCha8Rng::seed_from_u64(seed))
            })
            .await
            .unwrap_or_default();
        for plan in plans {
            let workload = plan.workload.to_string();
            self.metrics.plan(plan.failed.is_some(), plan.moves());
            let cmd = Command::ApplyGlobalPlan {
                plan: Box::new(plan),
                now_ms: now,
            };
            match self.cluster.propose(&cmd).await {
                Ok(o) => tracing::info!(%workload, outcome = ?o, "global plan applied"),
                Err(e) => tracing::warn!(%workload, error = %e, "global plan not applied"),
            }
        }
    }

    async fn reconcile(&mut self) {
        let ids = self.global_ids().await;
        if ids.is_empty() {
            return;
        }
        let mut actual: RegionMonitors = BTreeMap::new();
        for region in &self.regions {
            let running = match region.monitors(None).await {
                Ok(served) if !served.stale => Some(
                    served
                        .value
                        .into_iter()
                        .map(|m| (WorkloadId::new(&m.spec.tenant, &m.spec.name), m.spec))
                        .filter(|(id, _)| ids.contains(id))
                        .collect(),
                ),
                // A follower's answer may miss the latest writes: decide
                // nothing for that region this round.
                Ok(_) | Err(_) => None,
            };
            actual.insert(region.name().to_owned(), running);
        }
        let actions = self
            .cluster
            .read(true, move |s| reconcile(s, &actual))
            .await
            .unwrap_or_default();
        for action in actions {
            self.carry_out(action).await;
        }
    }

    fn region(&self, name: &str) -> Option<&Arc<dyn RegionApi>> {
        self.regions.iter().find(|r| r.name() == name)
    }

    async fn carry_out(&self, action: Action) {
        let result: Result<(), String> = match &action {
            Action::Submit { region, spec } => match self.region(region) {
                Some(r) => r
                    .submit_monitor((**spec).clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err(format!("region {region} has no client")),
            },
            Action::Delete { region, id } => match self.region(region) {
                Some(r) => match r.delete_monitor(id.tenant.clone(), id.name.clone()).await {
                    Ok(()) | Err(RegionError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
                None => Err(format!("region {region} has no client")),
            },
            Action::Forget { id } => self
                .cluster
                .propose(&Command::ForgetGlobal { id: id.clone() })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        self.metrics.action(&action, result.is_ok());
        match result {
            Ok(()) => tracing::info!(?action, "global reconcile step done"),
            Err(e) => {
                tracing::warn!(?action, error = %e, "global reconcile step failed; retried next round")
            }
        }
    }
}

/// The forecast for `id` from its replicated load history (a stale read:
/// this replica leads and has applied what it proposed).
async fn forecast_for(
    cluster: &Cluster,
    id: &WorkloadId,
    slot: &mut Option<Predictor>,
) -> Result<Forecast, NoForecast> {
    let Some(mut predictor) = slot.take() else {
        return Err(NoForecast::ShortHistory { have: 0, need: 0 });
    };
    let want = id.clone();
    let history = cluster
        .read(true, move |st| {
            st.global().get(&want).and_then(|r| r.load_history.clone())
        })
        .await
        .ok()
        .flatten();
    let result = match history {
        // A refit is a numeric optimisation over up to 4096 points: off the
        // async workers, so the API and the other rounds do not wait on it.
        Some(h) => match tokio::task::spawn_blocking(move || {
            let f = predictor.forecast(&h);
            (predictor, f)
        })
        .await
        {
            Ok((p, f)) => {
                *slot = Some(p);
                return f;
            }
            // The fit panicked: the predictor is gone with it; the next
            // step starts a fresh one from the replicated history.
            Err(_) => return Err(NoForecast::Panicked),
        },
        None => Err(NoForecast::ShortHistory {
            have: 0,
            need: predictor.settings().min_points(),
        }),
    };
    *slot = Some(predictor);
    result
}

/// Whether `new` is worth a Raft write: it differs from what is stored in
/// anything but its times, or the stored one is getting old (a third of
/// `stale-after`, so a live region never looks stale).
fn worth_reporting(
    stored: Option<&RegionSummary>,
    new: &RegionSummary,
    stale_after: Duration,
) -> bool {
    let Some(old) = stored else { return true };
    let mut same = old.clone();
    same.reported_at = new.reported_at;
    same.health.as_of = new.health.as_of;
    same != *new || new.reported_at.since(old.reported_at) >= stale_after / 3
}
