//! The failure detector's driver: owns the [`LivenessCore`] on the hub's
//! runtime, feeds it what the client service and the Raft node observe,
//! with the clock, and executes its commands by proposing through Raft.
//!
//! Inputs come from two channels: [`LivenessHandle`] (the service:
//! heartbeats, batches, connections, reads of the soft state) and the
//! node's [`NodeSignal`]s (leadership, applied decisions, devices that
//! changed edges). Signals are taken first, so a heartbeat the service
//! accepted because the node said "leader" never reaches a core that has
//! not heard so yet. While leading, the core ticks every [`TICK`], also
//! under a steady stream of inputs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_protocol::liveness::{EventKind, LivenessState};
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::EdgeStatus;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::core::{CloseKind, Command, CoreConfig, LivenessCore, Now};
use super::view::{self, SoftEdges};
use crate::fsm::{self, EdgeTransition};
use crate::metrics::HubMetrics;
use crate::raft::driver::{now_ms, NodeHandle};
use crate::raft::NodeSignal;
use crate::scheduler::SchedSignal;

/// Inputs waiting for the driver; heartbeats beyond it are dropped and
/// counted (the edge's next one comes a heartbeat period later).
pub const INPUT_CAPACITY: usize = 4096;

/// How long a heartbeat waits for the driver before it is answered anyway.
const HEARTBEAT_WAIT: Duration = Duration::from_millis(250);

/// Longest a decision or report waits for its commit before it counts as
/// failed (and the decision is proposed again).
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Gauges are refreshed at most this often.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// How often a leading core ticks: decisions come at most this late
/// (well under the 300 ms default grace).
pub const TICK: Duration = Duration::from_millis(25);

enum Input {
    Heartbeat {
        edge: String,
        boot_id: u64,
        status: Arc<EdgeStatus>,
        facts: Option<Arc<NodeFacts>>,
        done: oneshot::Sender<bool>,
    },
    Activity(String),
    Grant {
        edge: String,
        done: oneshot::Sender<bool>,
    },
    Opened(String, u64),
    Closed(String, u64, CloseKind),
    View(oneshot::Sender<SoftEdges>),
    ProposeFailed {
        edge: String,
        state: LivenessState,
        since_ms: i64,
    },
}

/// The service's side: cheap to clone.
#[derive(Clone)]
pub struct LivenessHandle {
    tx: mpsc::Sender<Input>,
    conn_ids: Arc<AtomicU64>,
    metrics: HubMetrics,
}

impl LivenessHandle {
    fn dropped(&self) {
        self.metrics.liveness_inputs_dropped.inc();
    }

    /// Records a heartbeat (with the edge's facts, when it sent them);
    /// returns once the core has it (or after a short wait: the heartbeat
    /// is answered regardless) whether the edge's leases are renewed
    /// ([`LivenessCore::lease_renewable`]; never when the core did not get
    /// the heartbeat in time).
    pub async fn heartbeat(
        &self,
        edge: String,
        boot_id: u64,
        status: EdgeStatus,
        facts: Option<NodeFacts>,
    ) -> bool {
        self.metrics.heartbeats.inc();
        let (done, wait) = oneshot::channel();
        let input = Input::Heartbeat {
            edge,
            boot_id,
            status: Arc::new(status),
            facts: facts.map(Arc::new),
            done,
        };
        if self.tx.try_send(input).is_err() {
            self.dropped();
            return false;
        }
        matches!(
            tokio::time::timeout(HEARTBEAT_WAIT, wait).await,
            Ok(Ok(true))
        )
    }

    /// `edge` fetches its allocations: counts as hearing from it (a fetch
    /// grants leases, so the grant must be on record like a heartbeat) and
    /// answers whether the fetched set may grant leases.
    pub async fn grant(&self, edge: &str) -> bool {
        let (done, wait) = oneshot::channel();
        let input = Input::Grant {
            edge: edge.to_owned(),
            done,
        };
        if self.tx.try_send(input).is_err() {
            self.dropped();
            return false;
        }
        matches!(
            tokio::time::timeout(HEARTBEAT_WAIT, wait).await,
            Ok(Ok(true))
        )
    }

    /// A batch arrived from `edge`.
    pub fn activity(&self, edge: &str) {
        if self.tx.try_send(Input::Activity(edge.to_owned())).is_err() {
            self.dropped();
        }
    }

    /// `edge` opened a connection; returns its id for [`Self::closed`].
    pub async fn opened(&self, edge: &str) -> u64 {
        let id = self.conn_ids.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Input::Opened(edge.to_owned(), id)).await;
        id
    }

    /// `edge`'s connection `conn` ended as `how`.
    pub async fn closed(&self, edge: &str, conn: u64, how: CloseKind) {
        let _ = self
            .tx
            .send(Input::Closed(edge.to_owned(), conn, how))
            .await;
    }

    /// A snapshot of the soft state (empty unless this replica leads).
    pub async fn view(&self) -> SoftEdges {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Input::View(reply)).await.is_err() {
            return SoftEdges::default();
        }
        answer.await.unwrap_or_default()
    }
}

/// Runs the core; see the module docs.
pub struct LivenessDriver {
    core: LivenessCore,
    rx: mpsc::Receiver<Input>,
    tx: mpsc::Sender<Input>,
    signals: mpsc::UnboundedReceiver<NodeSignal>,
    node: NodeHandle,
    metrics: HubMetrics,
    start: Instant,
    gauges_at: Option<Instant>,
    /// Where each heartbeat's measured use goes (the scheduler).
    usage: Option<mpsc::UnboundedSender<SchedSignal>>,
}

impl LivenessDriver {
    /// A driver for `cfg`, fed by `signals` from the node, proposing
    /// through `node`; and the handle the service uses.
    pub fn new(
        cfg: CoreConfig,
        signals: mpsc::UnboundedReceiver<NodeSignal>,
        node: NodeHandle,
        metrics: HubMetrics,
    ) -> (LivenessDriver, LivenessHandle) {
        let (tx, rx) = mpsc::channel(INPUT_CAPACITY);
        let handle = LivenessHandle {
            tx: tx.clone(),
            conn_ids: Arc::new(AtomicU64::new(1)),
            metrics: metrics.clone(),
        };
        let driver = LivenessDriver {
            core: LivenessCore::new(cfg),
            rx,
            tx,
            signals,
            node,
            metrics,
            start: Instant::now(),
            gauges_at: None,
            usage: None,
        };
        (driver, handle)
    }

    /// Forwards each heartbeat's measured use to the scheduler while this
    /// replica leads (soft state for pressure rebalancing).
    pub fn with_usage_sink(mut self, tx: mpsc::UnboundedSender<SchedSignal>) -> Self {
        self.usage = Some(tx);
        self
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.start.elapsed().as_millis() as u64,
            wall_ms: now_ms(),
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut next_tick = Instant::now();
        loop {
            // A fixed tick while leading rather than the core's exact
            // deadline: the tick and the deadline each visit every edge,
            // and recomputing the deadline after every heartbeat would
            // cost a visit of every edge per heartbeat.
            if self.core.is_leader() && Instant::now() >= next_tick {
                self.core.handle_tick(self.now());
                next_tick = Instant::now() + TICK;
            }
            while let Some(cmd) = self.core.poll_command() {
                self.execute(cmd);
            }
            self.update_gauges();
            let wake = if self.core.is_leader() {
                next_tick.max(Instant::now())
            } else {
                Instant::now() + GAUGE_PERIOD
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                s = self.signals.recv() => match s {
                    Some(s) => self.on_signal(s),
                    None => return,
                },
                i = self.rx.recv() => match i {
                    Some(i) => self.on_input(i),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn on_signal(&mut self, s: NodeSignal) {
        let now = self.now();
        match s {
            NodeSignal::Leadership {
                leader: true,
                term,
                edges,
            } => {
                tracing::info!(
                    term,
                    edges = edges.len(),
                    "edge failure detector: leading; every edge starts unknown and none is declared down within the leader grace"
                );
                self.core.handle_leadership_gained(edges, now);
            }
            NodeSignal::Leadership { leader: false, .. } => self.core.handle_leadership_lost(),
            NodeSignal::Transition { edge, liveness } => {
                self.core.handle_applied(&edge, liveness, now)
            }
            NodeSignal::DevicesMoved(moves) => {
                for m in moves {
                    self.core
                        .handle_devices_moved(&m.from, &m.to, m.devices, now);
                }
            }
        }
    }

    fn on_input(&mut self, i: Input) {
        let now = self.now();
        match i {
            Input::Heartbeat {
                edge,
                boot_id,
                status,
                facts,
                done,
            } => {
                if let Some(f) = facts {
                    self.core.handle_facts(&edge, f, now);
                }
                if let Some(tx) = self.usage.as_ref().filter(|_| self.core.is_leader()) {
                    let _ = tx.send(SchedSignal::Usage {
                        edge: edge.clone(),
                        usage: fsm::measured(&status),
                    });
                }
                self.core.handle_heartbeat(&edge, boot_id, status, now);
                let _ = done.send(self.core.lease_renewable(&edge));
            }
            Input::Activity(edge) => self.core.handle_activity(&edge, now),
            Input::Grant { edge, done } => {
                // Renewable is checked first: hearing it must not turn a
                // suspect edge up before the decision is in the log.
                let ok = self.core.lease_renewable(&edge);
                if !ok {
                    tracing::debug!(%edge, why = %self.core.lease_refusal(&edge), "allocation fetch grants no lease");
                }
                self.core.handle_activity(&edge, now);
                let _ = done.send(ok);
            }
            Input::Opened(edge, conn) => self.core.handle_connection_opened(&edge, conn),
            Input::Closed(edge, conn, how) => {
                self.core.handle_connection_closed(&edge, conn, how, now)
            }
            Input::View(reply) => {
                let _ = reply.send(SoftEdges::of(&self.core));
            }
            Input::ProposeFailed {
                edge,
                state,
                since_ms,
            } => self
                .core
                .handle_replicate_failed(&edge, state, since_ms, now),
        }
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::Replicate(t) => {
                self.observe(&t);
                let (edge, state, since_ms) =
                    (t.edge.clone(), t.liveness.state, t.liveness.since_ms);
                let data = fsm::encode_command(&fsm::Command::EdgeTransition(t));
                let (node, tx) = (self.node.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let r = tokio::time::timeout(PROPOSE_TIMEOUT, node.propose(data)).await;
                    if !matches!(r, Ok(Ok(_))) {
                        tracing::debug!(%edge, ?r, "liveness decision not committed; will repeat");
                        let _ = tx
                            .send(Input::ProposeFailed {
                                edge,
                                state,
                                since_ms,
                            })
                            .await;
                    }
                });
            }
            Command::ReplicateReport {
                status,
                facts,
                received_ms,
            } => {
                let status = status.as_ref().clone();
                let data = fsm::encode_command(&match facts {
                    Some(f) => fsm::Command::EdgeReport {
                        status,
                        facts: f.as_ref().clone(),
                        received_ms,
                    },
                    None => fsm::Command::EdgeHeartbeat {
                        status,
                        received_ms,
                    },
                });
                let node = self.node.clone();
                tokio::spawn(async move {
                    let r = tokio::time::timeout(PROPOSE_TIMEOUT, node.propose(data)).await;
                    if !matches!(r, Ok(Ok(_))) {
                        // The next material change or interval sends it again.
                        tracing::debug!("edge report not replicated");
                    }
                });
            }
        }
    }

    /// Logs a decision and counts it.
    fn observe(&self, t: &EdgeTransition) {
        let l = &t.liveness;
        self.metrics.transition(l.state, l.classification);
        if t.kind == EventKind::EdgeDown {
            if let Some(ms) = l.detection_ms {
                self.metrics
                    .edge_detection_latency
                    .observe(ms as f64 / 1000.0);
            }
        }
        let evidence: Vec<&str> = l.evidence.iter().map(|e| e.as_str()).collect();
        let (edge, class) = (&t.edge, l.classification.as_str());
        match t.kind {
            EventKind::EdgeDown | EventKind::EdgeSuspect | EventKind::EdgeReclassified => {
                tracing::warn!(%edge, state = l.state.as_str(), class, ?evidence, detection_ms = ?l.detection_ms, "{}", t.message)
            }
            _ => tracing::info!(%edge, state = l.state.as_str(), class, ?evidence, "{}", t.message),
        }
    }

    fn update_gauges(&mut self) {
        if self.gauges_at.is_some_and(|t| t.elapsed() < GAUGE_PERIOD) {
            return;
        }
        self.gauges_at = Some(Instant::now());
        let counts = view::counts(&self.core);
        for state in [
            LivenessState::Unknown,
            LivenessState::Up,
            LivenessState::Suspect,
            LivenessState::Down,
        ] {
            self.metrics
                .liveness_edges(state)
                .set(counts.get(&state).copied().unwrap_or(0) as i64);
        }
        self.metrics
            .liveness_soft_bytes
            .set(view::approx_bytes(&self.core) as i64);
    }
}
