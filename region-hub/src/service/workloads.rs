//! Monitor, artifact and alert requests: central's writes (artifact upload,
//! monitor submit and delete, leader only) and reads (monitors with their
//! allocations and evaluations, alerts), and the edge's fetches
//! (allocations, leader only; artifacts).
//!
//! Reads of the region state run as short closures on the Raft thread
//! ([`NodeHandle::with_state`](crate::raft::driver::NodeHandle::with_state)):
//! they copy out only what the answer needs. Module validation and hashing
//! (up to 8 MiB) run on the blocking pool, never on the Raft thread.

use std::time::Duration;

use strata_protocol::monitoring::AlertQuery;
use strata_protocol::workload::{FieldError, MonitorSpec, SpecErrors, MAX_ARTIFACT_BYTES};
use strata_protocol::{EdgeResponse, HubResponse, LeaderHint};
use strata_sched::WorkloadId;

use super::Service;
use crate::admission;
use crate::artifact;
use crate::fsm::{Command, Outcome, Refusal};
use crate::raft::driver::now_ms;
use crate::raft::ProposeError;

/// What the leader decided for a submitted spec, on the Raft thread.
enum Admission {
    NotLeader(Option<LeaderHint>),
    Invalid(SpecErrors),
    Admit(Box<MonitorSpec>),
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

/// How often a submit looks for the workload's first evaluation.
const SUBMIT_POLL: Duration = Duration::from_millis(20);

impl Service {
    /// `FetchAssignments` (protocol version 4 and older): the specs of the
    /// allocations on `edge`. Grants nothing; kept so a tool speaking the
    /// old request still reads something true.
    pub(super) async fn fetch_assignments(&self, edge: String) -> EdgeResponse {
        self.metrics.request("fetch_assignments");
        let read = self
            .node
            .with_state(move |v| {
                let version = v.state.workloads().assignments_version();
                let monitors = v
                    .state
                    .edge_allocations(&edge)
                    .into_iter()
                    .map(|a| a.spec)
                    .collect();
                (version, monitors)
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

    /// `FetchAllocations`, leader only: every allocation placed on the edge
    /// with the version it reflects (one consistent read), and whether the
    /// set grants leases (the failure detector counts the fetch as hearing
    /// from the edge first). `peer` is the connection's edge: an edge may
    /// fetch only its own allocations.
    pub(super) async fn fetch_allocations(&self, peer: &str, edge: String) -> EdgeResponse {
        self.metrics.request("fetch_allocations");
        if edge != peer {
            self.metrics.request_error("fetch_allocations");
            return EdgeResponse::Rejected {
                reason: format!("edge {peer:?} asked for the allocations of edge {edge:?}"),
            };
        }
        let view = self.view.borrow().clone();
        if !view.is_leader {
            return EdgeResponse::NotLeader {
                leader: view.leader,
            };
        }
        let lease_granted = self.liveness.grant(&edge).await;
        let read = self
            .node
            .with_state(move |v| {
                if !v.is_leader {
                    return Err(v.leader.cloned());
                }
                Ok((
                    v.state.workloads().assignments_version(),
                    v.state.edge_allocations(&edge),
                ))
            })
            .await;
        match read {
            Ok(Ok((version, allocations))) => EdgeResponse::Allocations {
                version,
                lease_granted,
                allocations,
            },
            Ok(Err(leader)) => EdgeResponse::NotLeader { leader },
            Err(e) => {
                self.metrics.request_error("fetch_allocations");
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

    /// `SubmitMonitor`: on the leader, validate over the applied state
    /// (`crate::admission`), replicate a `PutWorkload` stamped with the
    /// leader's clock, then wait (up to `scheduler.submit-wait`) for its
    /// first evaluation so the answer shows its allocations.
    pub(super) async fn submit_monitor(&self, spec: MonitorSpec) -> HubResponse {
        let _serial = self.submit_lock.lock().await;
        let now = now_ms();
        let settings = self.sched;
        let admitted = self
            .node
            .with_state(move |v| {
                if !v.is_leader {
                    return Admission::NotLeader(v.leader.cloned());
                }
                let snap = admission::snapshot(v.state, settings.config);
                match admission::admit(v.state, &snap, &spec, settings.min_replace_after) {
                    Err(errs) => Admission::Invalid(errs),
                    Ok(_) => Admission::Admit(Box::new(spec)),
                }
            })
            .await;
        let spec = match admitted {
            Err(e) => return propose_failure(e),
            Ok(Admission::NotLeader(leader)) => return HubResponse::NotLeader { leader },
            Ok(Admission::Invalid(errs)) => return HubResponse::Invalid(errs),
            Ok(Admission::Admit(spec)) => spec,
        };
        let w = WorkloadId::new(&spec.tenant, &spec.name);
        let key = w.clone();
        let seen = self
            .node
            .with_state(move |v| v.state.sched().last_eval(&key).map_or(0, |e| e.index))
            .await
            .unwrap_or(0);
        let cmd = Command::PutWorkload { spec, now_ms: now };
        match self.propose(&cmd).await {
            Ok(Outcome::MonitorPut {
                generation,
                changed,
                created,
                ..
            }) => {
                tracing::info!(
                    tenant = %w.tenant, monitor = %w.name, generation, changed, created,
                    "monitor submitted"
                );
                if changed {
                    self.wait_for_evaluation(&w, seen).await;
                }
                self.monitor_response(w.tenant, w.name).await
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

    /// Waits until the workload has an evaluation recorded after the one
    /// at index `seen` (a changed workload always gets one: it places,
    /// updates or says why not), at most `scheduler.submit-wait`.
    async fn wait_for_evaluation(&self, w: &WorkloadId, seen: u64) {
        let deadline = tokio::time::Instant::now() + self.sched.submit_wait;
        loop {
            let key = w.clone();
            let done = self
                .node
                .with_state(move |v| {
                    v.state
                        .sched()
                        .last_eval(&key)
                        .is_some_and(|e| e.index > seen)
                })
                .await
                .unwrap_or(true);
            if done || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(SUBMIT_POLL).await;
        }
    }

    /// `DeleteMonitor`, leader only: the workload goes at once; the
    /// scheduler stops its allocations.
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
        let cmd = Command::DeleteWorkload {
            tenant: tenant.clone(),
            name: name.clone(),
            now_ms: now_ms(),
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
                    .map(|m| v.state.monitor_info(v.region, m, |e| soft.status(e)))
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
        self.monitor_response(tenant, name).await
    }

    async fn monitor_response(&self, tenant: String, name: String) -> HubResponse {
        let (t, n) = (tenant.clone(), name.clone());
        let soft = self.liveness.view().await;
        let read = self
            .node
            .with_state(move |v| {
                v.state
                    .workloads()
                    .monitor(&t, &n)
                    .map(|m| v.state.monitor_info(v.region, m, |e| soft.status(e)))
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
