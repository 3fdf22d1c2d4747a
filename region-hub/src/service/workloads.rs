//! Monitor, artifact and alert requests: central's writes (artifact upload,
//! monitor submit and delete, leader only) and reads (monitors, alerts),
//! and the edge's fetches (assignments, artifacts).
//!
//! Reads of the region state run as short closures on the Raft thread
//! ([`NodeHandle::with_state`](crate::raft::driver::NodeHandle::with_state)):
//! they copy out only what the answer needs. Module validation and hashing
//! (up to 8 MiB) run on the blocking pool, never on the Raft thread.

use rand::rngs::StdRng;
use rand::SeedableRng;
use strata_protocol::monitoring::{AlertQuery, InstanceStatus, MonitorInfo};
use strata_protocol::workload::{FieldError, MonitorSpec, SpecErrors, MAX_ARTIFACT_BYTES};
use strata_protocol::{EdgeResponse, HubResponse, LeaderHint};

use super::Service;
use crate::admission;
use crate::artifact;
use crate::fsm::{Command, Outcome, Refusal};
use crate::liveness;
use crate::raft::driver::now_ms;
use crate::raft::ProposeError;

/// What the leader decided for a submitted spec, on the Raft thread.
enum Admission {
    NotLeader(Option<LeaderHint>),
    Invalid(SpecErrors),
    Place {
        spec: Box<MonitorSpec>,
        edge: String,
        status: Option<InstanceStatus>,
    },
}

fn field_error(field: &str, message: impl Into<String>) -> HubResponse {
    HubResponse::Invalid(SpecErrors(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }]))
}

fn propose_failure(e: ProposeError) -> HubResponse {
    match e {
        ProposeError::NotLeader { leader, .. } => HubResponse::NotLeader { leader },
        e => HubResponse::Error {
            message: e.to_string(),
        },
    }
}

impl Service {
    /// `FetchAssignments`: every monitor assigned to `edge`, with the
    /// version they reflect (one consistent read).
    pub(super) async fn fetch_assignments(&self, edge: String) -> EdgeResponse {
        self.metrics.request("fetch_assignments");
        let read = self
            .node
            .with_state(move |v| {
                let w = v.state.workloads();
                (w.assignments_version(), w.assignments(&edge))
            })
            .await;
        match read {
            Ok((version, monitors)) => EdgeResponse::Assignments { version, monitors },
            Err(e) => {
                self.metrics.request_error("fetch_assignments");
                EdgeResponse::Unavailable {
                    reason: e.to_string(),
                }
            }
        }
    }

    /// `FetchArtifact`: a stored module's bytes, or `Rejected` when unknown.
    pub(super) async fn fetch_artifact(&self, sha256: String) -> EdgeResponse {
        self.metrics.request("fetch_artifact");
        let key = sha256.clone();
        match self
            .node
            .with_state(move |v| v.state.workloads().artifact(&key))
            .await
        {
            // The copy into the response happens here, off the Raft thread.
            Ok(Some(bytes)) => EdgeResponse::Artifact {
                sha256,
                bytes: bytes.as_ref().clone(),
            },
            Ok(None) => {
                self.metrics.request_error("fetch_artifact");
                tracing::info!(%sha256, "edge asked for an unknown artifact");
                EdgeResponse::Rejected {
                    reason: format!(
                        "no artifact {sha256} is stored in region {}",
                        self.me.region
                    ),
                }
            }
            Err(e) => {
                self.metrics.request_error("fetch_artifact");
                EdgeResponse::Unavailable {
                    reason: e.to_string(),
                }
            }
        }
    }

    /// `PutArtifact`: validate (blocking pool), then replicate.
    pub(super) async fn put_artifact(&self, bytes: Vec<u8>) -> HubResponse {
        let size_bytes = bytes.len() as u64;
        if size_bytes == 0 || size_bytes > MAX_ARTIFACT_BYTES {
            return field_error(
                "artifact",
                format!("module is {size_bytes} bytes; it must be 1 to {MAX_ARTIFACT_BYTES}"),
            );
        }
        let checked = tokio::task::spawn_blocking(move || {
            artifact::validate_module(&bytes).map(|()| (artifact::sha256_hex(&bytes), bytes))
        })
        .await;
        let (sha256, bytes) = match checked {
            Ok(Ok(x)) => x,
            Ok(Err(errs)) => return HubResponse::Invalid(errs),
            Err(e) => {
                return HubResponse::Error {
                    message: format!("module validation failed: {e}"),
                }
            }
        };
        let key = sha256.clone();
        let known = self
            .node
            .with_state(move |v| {
                if v.is_leader {
                    Ok(v.state.workloads().has_artifact(&key))
                } else {
                    Err(v.leader.cloned())
                }
            })
            .await;
        match known {
            Err(e) => return propose_failure(e),
            Ok(Err(leader)) => return HubResponse::NotLeader { leader },
            Ok(Ok(true)) => {
                return HubResponse::ArtifactStored {
                    sha256,
                    size_bytes,
                    created: false,
                }
            }
            Ok(Ok(false)) => {}
        }
        let cmd = Command::PutArtifact {
            sha256: sha256.clone(),
            bytes,
        };
        match self.propose(&cmd).await {
            Ok(Outcome::ArtifactStored { created }) => HubResponse::ArtifactStored {
                sha256,
                size_bytes,
                created,
            },
            Ok(Outcome::Refused(r)) => HubResponse::Error {
                message: format!("artifact {sha256} not stored: {r}"),
            },
            Ok(other) => HubResponse::Error {
                message: format!("unexpected outcome {other:?}"),
            },
            Err(e) => propose_failure(e),
        }
    }

    /// `SubmitMonitor`: on the leader, validate and place over the applied
    /// state, then replicate a `PutMonitor` stamped with the leader's clock.
    pub(super) async fn submit_monitor(&self, spec: MonitorSpec) -> HubResponse {
        let _serial = self.submit_lock.lock().await;
        let now = now_ms();
        let seed: u64 = rand::random();
        let soft = self.liveness.view().await;
        let admitted = self
            .node
            .with_state(move |v| {
                if !v.is_leader {
                    return Admission::NotLeader(v.leader.cloned());
                }
                let mut rng = StdRng::seed_from_u64(seed);
                let edges = liveness::views(v.state, &soft);
                match admission::admit(v.state, &edges, &spec, &mut rng) {
                    Err(errs) => Admission::Invalid(errs),
                    Ok(plan) => {
                        let status = edges.iter().find(|e| e.edge == plan.edge).and_then(|e| {
                            e.status
                                .instances
                                .iter()
                                .find(|i| i.tenant == spec.tenant && i.name == spec.name)
                                .cloned()
                        });
                        Admission::Place {
                            spec: Box::new(spec),
                            edge: plan.edge,
                            status,
                        }
                    }
                }
            })
            .await;
        let (spec, edge, status) = match admitted {
            Err(e) => return propose_failure(e),
            Ok(Admission::NotLeader(leader)) => return HubResponse::NotLeader { leader },
            Ok(Admission::Invalid(errs)) => return HubResponse::Invalid(errs),
            Ok(Admission::Place { spec, edge, status }) => (spec, edge, status),
        };
        let cmd = Command::PutMonitor {
            spec,
            edge,
            now_ms: now,
        };
        let outcome = self.propose(&cmd).await;
        let Command::PutMonitor { mut spec, edge, .. } = cmd else {
            unreachable!("built just above")
        };
        match outcome {
            Ok(Outcome::MonitorPut {
                generation,
                changed,
                created,
                created_ms,
                updated_ms,
            }) => {
                tracing::info!(
                    tenant = %spec.tenant, monitor = %spec.name, %edge, generation, changed, created,
                    "monitor submitted"
                );
                spec.generation = generation;
                HubResponse::Monitor(MonitorInfo {
                    spec: *spec,
                    region: self.me.region.clone(),
                    edge,
                    created_ms,
                    updated_ms,
                    status,
                })
            }
            Ok(Outcome::Refused(r @ Refusal::ArtifactMissing)) => {
                field_error("artifact.sha256", r.to_string())
            }
            Ok(other) => HubResponse::Error {
                message: format!("unexpected outcome {other:?}"),
            },
            Err(e) => propose_failure(e),
        }
    }

    /// `DeleteMonitor`, leader only.
    pub(super) async fn delete_monitor(&self, tenant: String, name: String) -> HubResponse {
        let _serial = self.submit_lock.lock().await;
        let (t, n) = (tenant.clone(), name.clone());
        let found = self
            .node
            .with_state(move |v| {
                if v.is_leader {
                    Ok(v.state.workloads().monitor(&t, &n).is_some())
                } else {
                    Err(v.leader.cloned())
                }
            })
            .await;
        let not_found = |tenant: &str, name: &str| HubResponse::NotFound {
            what: format!("monitor {tenant}/{name} in region {}", self.me.region),
        };
        match found {
            Err(e) => return propose_failure(e),
            Ok(Err(leader)) => return HubResponse::NotLeader { leader },
            Ok(Ok(false)) => return not_found(&tenant, &name),
            Ok(Ok(true)) => {}
        }
        let cmd = Command::DeleteMonitor {
            tenant: tenant.clone(),
            name: name.clone(),
        };
        match self.propose(&cmd).await {
            Ok(Outcome::MonitorDeleted { existed: true }) => {
                tracing::info!(%tenant, monitor = %name, "monitor deleted");
                HubResponse::MonitorDeleted
            }
            Ok(Outcome::MonitorDeleted { existed: false }) => not_found(&tenant, &name),
            Ok(other) => HubResponse::Error {
                message: format!("unexpected outcome {other:?}"),
            },
            Err(e) => propose_failure(e),
        }
    }

    /// `ListMonitors`, from this replica's applied state (instance reports
    /// from the leader's soft state).
    pub(super) async fn list_monitors(&self, tenant: Option<String>) -> HubResponse {
        let soft = self.liveness.view().await;
        let read = self
            .node
            .with_state(move |v| {
                v.state
                    .workloads()
                    .monitors(tenant.as_deref())
                    .map(|m| v.state.monitor_info(v.region, m, soft.status(&m.edge)))
                    .collect()
            })
            .await;
        match read {
            Ok(list) => HubResponse::Monitors(list),
            Err(e) => propose_failure(e),
        }
    }

    /// `GetMonitor`, from this replica's applied state (the instance report
    /// from the leader's soft state).
    pub(super) async fn get_monitor(&self, tenant: String, name: String) -> HubResponse {
        let (t, n) = (tenant.clone(), name.clone());
        let soft = self.liveness.view().await;
        let read = self
            .node
            .with_state(move |v| {
                v.state
                    .workloads()
                    .monitor(&t, &n)
                    .map(|m| v.state.monitor_info(v.region, m, soft.status(&m.edge)))
            })
            .await;
        match read {
            Ok(Some(info)) => HubResponse::Monitor(info),
            Ok(None) => HubResponse::NotFound {
                what: format!("monitor {tenant}/{name} in region {}", self.me.region),
            },
            Err(e) => propose_failure(e),
        }
    }

    /// `QueryAlerts`, newest first, from this replica's applied state.
    pub(super) async fn query_alerts(&self, q: AlertQuery) -> HubResponse {
        match self
            .node
            .with_state(move |v| v.state.alerts().query(&q))
            .await
        {
            Ok(alerts) => HubResponse::Alerts(alerts),
            Err(e) => propose_failure(e),
        }
    }
}
