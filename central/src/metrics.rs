//! Prometheus metrics of the central server: HTTP requests by route and
//! status, refused API requests by reason, HTTP limits that fired, hub call
//! latency, and hub errors by reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of [`HttpMetrics::requests`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    /// HTTP method.
    pub method: String,
    /// Route template (`/api/v1/regions/{region}`), or `unmatched`, so
    /// arbitrary URLs cannot blow up the label space.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// HTTP server metrics.
#[derive(Clone, Debug, Default)]
pub struct HttpMetrics {
    /// Requests served, by method, route and status.
    pub requests: Family<HttpLabel, Counter>,
}

impl HttpMetrics {
    /// Creates the metrics and registers them as `strata_central_http_*`.
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics::default();
        registry.register(
            "strata_central_http_requests",
            "HTTP requests served, by method, route and status",
            m.requests.clone(),
        );
        m
    }
}

/// Label of [`AuthMetrics::failures`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `missing` (no token), `malformed` (not `Bearer <token>`), `repeated`
    /// (several Authorization headers), `bad-token`, `forbidden`.
    pub reason: &'static str,
}

/// Refused API requests.
#[derive(Clone, Debug, Default)]
pub struct AuthMetrics {
    /// Requests refused by authentication or authorization, by reason.
    pub failures: Family<ReasonLabel, Counter>,
}

impl AuthMetrics {
    /// Creates the metrics and registers them as `strata_central_auth_*`.
    pub fn register(registry: &mut Registry) -> AuthMetrics {
        let m = AuthMetrics::default();
        registry.register(
            "strata_central_auth_failures",
            "API requests refused before their handler: no, malformed or invalid token, or not allowed",
            m.failures.clone(),
        );
        m
    }

    /// Counts one refusal.
    pub fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// An HTTP limit of `[http]` (the `limit` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Limit {
    /// A request head not complete within `http.header-read-timeout`.
    HeaderReadTimeout,
    /// A connection idle for `http.idle-timeout`.
    IdleTimeout,
    /// A request not answered within `http.request-timeout` (408).
    RequestTimeout,
    /// A connection beyond `http.max-connections`, closed at once.
    MaxConnections,
    /// A request head over `http.max-header-bytes` or with too many
    /// header lines (431).
    MaxHeaderBytes,
    /// A body over the route's limit (413).
    MaxBodyBytes,
}

impl Limit {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::HeaderReadTimeout => "header-read-timeout",
            Limit::IdleTimeout => "idle-timeout",
            Limit::RequestTimeout => "request-timeout",
            Limit::MaxConnections => "max-connections",
            Limit::MaxHeaderBytes => "max-header-bytes",
            Limit::MaxBodyBytes => "max-body-bytes",
        }
    }
}

/// Label of [`LimitMetrics::fired`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// [`Limit::as_str`].
    pub limit: &'static str,
}

/// HTTP connection and request limits that fired.
#[derive(Clone, Debug, Default)]
pub struct LimitMetrics {
    /// Times each limit closed a connection or refused a request.
    pub fired: Family<LimitLabel, Counter>,
}

impl LimitMetrics {
    /// Creates the metrics and registers them as
    /// `strata_central_http_limits_total`.
    pub fn register(registry: &mut Registry) -> LimitMetrics {
        let m = LimitMetrics::default();
        registry.register(
            "strata_central_http_limits",
            "HTTP limits that closed a connection or refused a request, by limit",
            m.fired.clone(),
        );
        m
    }

    /// Counts one firing of `limit`.
    pub fn fired(&self, limit: Limit) {
        self.fired
            .get_or_create(&LimitLabel {
                limit: limit.as_str(),
            })
            .inc();
    }
}

/// Label of [`HubMetrics::latency`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubCallLabel {
    /// Region name.
    pub region: String,
    /// Request kind (`status`, `edges`, `devices`, `query`, …).
    pub request: String,
}

/// Label of [`HubMetrics::errors`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubErrorLabel {
    /// Region name.
    pub region: String,
    /// `connect` (dial or handshake), `call` (stream or connection failed
    /// mid-request), `timeout`, `hub-error` (the hub said `Error`),
    /// `protocol` (a response that does not fit the request).
    pub reason: String,
}

type HistogramCtor = fn() -> Histogram;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~8 s: a local status call up to a slow large query.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Metrics of calls from central to hubs.
#[derive(Clone, Debug)]
pub struct HubMetrics {
    /// Latency of successful hub calls, seconds.
    pub latency: Family<HubCallLabel, Histogram, HistogramCtor>,
    /// Failed hub calls by reason.
    pub errors: Family<HubErrorLabel, Counter>,
}

impl Default for HubMetrics {
    fn default() -> Self {
        HubMetrics {
            latency: Family::new_with_constructor(latency_histogram as HistogramCtor),
            errors: Family::default(),
        }
    }
}

impl HubMetrics {
    /// Creates the metrics and registers them as `strata_central_hub_*`.
    pub fn register(registry: &mut Registry) -> HubMetrics {
        let m = HubMetrics::default();
        registry.register(
            "strata_central_hub_call_seconds",
            "Latency of successful calls from central to hubs",
            m.latency.clone(),
        );
        registry.register(
            "strata_central_hub_errors",
            "Failed calls from central to hubs, by reason",
            m.errors.clone(),
        );
        m
    }

    /// Counts one failed call.
    pub fn error(&self, region: &str, reason: &str) {
        self.errors
            .get_or_create(&HubErrorLabel {
                region: region.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records one successful call's latency.
    pub fn observe(&self, region: &str, request: &str, seconds: f64) {
        self.latency
            .get_or_create(&HubCallLabel {
                region: region.to_owned(),
                request: request.to_owned(),
            })
            .observe(seconds);
    }
}

/// Label of [`GlobalMetrics::summaries`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SummaryLabel {
    /// The region.
    pub region: String,
    /// `ok` or `failed` (region unreachable or no leader).
    pub outcome: &'static str,
}

/// Label of [`GlobalMetrics::plans`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabel {
    /// `placed` (every instance has a region) or `short` (some fit nowhere).
    pub outcome: &'static str,
}

/// Label of [`GlobalMetrics::actions`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `submit`, `delete` or `forget`.
    pub kind: &'static str,
    /// `ok` or `failed` (retried next round).
    pub outcome: &'static str,
}

/// The global tier's decisions, on central's leader.
#[derive(Clone, Debug, Default)]
pub struct GlobalMetrics {
    /// Region summaries fetched, by region and outcome.
    pub summaries: Family<SummaryLabel, Counter>,
    /// Global plans proposed, by outcome.
    pub plans: Family<PlanLabel, Counter>,
    /// Instances added to regions by proposed plans.
    pub moves: Counter,
    /// Regional monitor changes carried out, by kind and outcome.
    pub actions: Family<ActionLabel, Counter>,
    /// Scale decisions proposed, by reason (`surge`, `scale-down`, …).
    pub scale_decisions: Family<ReasonTextLabel, Counter>,
    /// Autoscaler samples skipped, by reason (`region-unreachable`,
    /// `counter-reset`, `no-instances`, …).
    pub scale_samples_skipped: Family<ReasonTextLabel, Counter>,
    /// Autoscaler samples observed, by metric (`records-per-second`,
    /// `cpu`, `queue-depth`).
    pub scale_samples: Family<MetricTextLabel, Counter>,
    /// Forecast attempts (one per workload per forecast step), by outcome
    /// (`made`, `short-history`, `step-mismatch`, `model-error`).
    pub forecasts: Family<OutcomeTextLabel, Counter>,
}

/// A `metric` label for the global metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricTextLabel {
    /// The scale metric.
    pub metric: String,
}

/// An `outcome` label for the global metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeTextLabel {
    /// The outcome.
    pub outcome: &'static str,
}

/// A `reason` label for the global metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonTextLabel {
    /// The reason.
    pub reason: String,
}

impl GlobalMetrics {
    /// Creates the metrics and registers them as `strata_central_global_*`.
    pub fn register(registry: &mut Registry) -> GlobalMetrics {
        let m = GlobalMetrics::default();
        let r = registry.sub_registry_with_prefix("strata_central_global");
        r.register(
            "summaries",
            "Region summaries fetched, by region and outcome",
            m.summaries.clone(),
        );
        r.register(
            "plans",
            "Global plans proposed, by outcome (placed, short)",
            m.plans.clone(),
        );
        r.register(
            "moves",
            "Instances added to regions by proposed global plans",
            m.moves.clone(),
        );
        r.register(
            "actions",
            "Regional monitor changes carried out, by kind and outcome",
            m.actions.clone(),
        );
        r.register(
            "scale_decisions",
            "Scale decisions proposed, by reason",
            m.scale_decisions.clone(),
        );
        r.register(
            "scale_samples_skipped",
            "Autoscaler samples skipped, by reason",
            m.scale_samples_skipped.clone(),
        );
        r.register(
            "scale_samples",
            "Autoscaler samples observed, by metric",
            m.scale_samples.clone(),
        );
        r.register(
            "forecasts",
            "Load forecasts for pre-scaling, one per workload per step, by outcome",
            m.forecasts.clone(),
        );
        m
    }

    /// Counts one observed autoscaler sample of `metric`.
    pub fn scale_observed(&self, metric: &str) {
        self.scale_samples
            .get_or_create(&MetricTextLabel {
                metric: metric.to_owned(),
            })
            .inc();
    }

    /// Counts one forecast attempt.
    pub fn forecast(&self, outcome: &'static str) {
        self.forecasts
            .get_or_create(&OutcomeTextLabel { outcome })
            .inc();
    }

    /// Counts one proposed scale decision.
    pub fn scale_decision(&self, reason: &str) {
        self.scale_decisions
            .get_or_create(&ReasonTextLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one skipped autoscaler sample.
    pub fn scale_sample(&self, reason: &str) {
        self.scale_samples_skipped
            .get_or_create(&ReasonTextLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one summary fetch.
    pub fn summary(&self, region: &str, ok: bool) {
        self.summaries
            .get_or_create(&SummaryLabel {
                region: region.to_owned(),
                outcome: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// Counts one proposed plan.
    pub fn plan(&self, short: bool, moves: u64) {
        self.plans
            .get_or_create(&PlanLabel {
                outcome: if short { "short" } else { "placed" },
            })
            .inc();
        self.moves.inc_by(moves);
    }

    /// Counts one carried-out reconcile action.
    pub fn action(&self, action: &crate::global::Action, ok: bool) {
        let kind = match action {
            crate::global::Action::Submit { .. } => "submit",
            crate::global::Action::Delete { .. } => "delete",
            crate::global::Action::Forget { .. } => "forget",
        };
        self.actions
            .get_or_create(&ActionLabel {
                kind,
                outcome: if ok { "ok" } else { "failed" },
            })
            .inc();
    }
}
