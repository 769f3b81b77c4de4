//! Failure detection, recovery, load distribution and scaling on live actors: real time, real
//! redb stores in temp directories, the in-process network. Heartbeats are every 50 ms here (the
//! default is Akka's 1 s) so that a silent node is declared failed in about half a second.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use actors::cluster::NodeId;
use actors::managers::failure_detector::DetectionSettings;
use actors::managers::failure_detector::{Check, DetectionError, Failure, FailureKind, Failures, Report};
use actors::managers::load_distributor::{Distribute, Distribution, DistributionError, Distributions};
use actors::managers::recovery_manager::{OpenFailures, Recover, RecoveryError, Strategy};
use actors::managers::resource_scaler::{Scale, ScalingError};
use actors::security::audit::Outcome;
use actors::managers::worker_pool::{Adjust, Job, PoolError, PoolLoad, ReadLoad, Work};
use actors::Config;
use common::{eventually, j, Cluster};

fn fast_detection() -> Config {
    let settings = DetectionSettings {
        heartbeat_ms: 50,
        min_std_deviation_ms: 20,
        acceptable_heartbeat_pause_ms: 300,
        first_heartbeat_estimate_ms: 50,
        ..DetectionSettings::default()
    };
    let mut config = Config::default();
    config.failure_detector.settings = settings;
    config.recovery_manager.reply_timeout_ms = 1500;
    config
}

const SOON: Duration = Duration::from_secs(5);

impl Cluster {
    async fn failures(&self, on: NodeId) -> Vec<Failure> {
        let ctx = self.world.ctx("admin", "failure_detection");
        self.node(on).unwrap().detector.send(Failures { ctx }).await.unwrap().unwrap()
    }

    async fn open_failures(&self, on: NodeId) -> Vec<Failure> {
        let ctx = self.world.ctx("admin", "recovery_management");
        self.node(on).unwrap().recovery.send(OpenFailures { ctx }).await.unwrap().unwrap()
    }

    /// Waits until node `on` has recorded a failure of `kind` for `node` and recovered it.
    async fn recovered(&self, on: NodeId, kind: FailureKind, node: NodeId) -> bool {
        eventually(SOON, || async {
            let seen = self.failures(on).await.iter().any(|f| f.kind == kind && f.node == node);
            (seen && self.open_failures(on).await.is_empty()).then_some(())
        })
        .await
        .is_some()
    }

    async fn distribute(&self, via: NodeId, id: &str, load: f64) -> Result<Distribution, DistributionError> {
        let ctx = self.world.ctx("admin", "distribution_management");
        self.node(via).unwrap().distributor.send(Distribute { ctx, id: id.into(), load }).await.unwrap()
    }

    async fn distributions(&self, via: NodeId) -> Vec<Distribution> {
        let ctx = self.world.ctx("admin", "distribution_management");
        self.node(via).unwrap().distributor.send(Distributions { ctx }).await.unwrap().unwrap()
    }

    async fn pool_load(&self, on: NodeId) -> PoolLoad {
        self.node(on).unwrap().pool.send(ReadLoad).await.unwrap()
    }

    async fn submit(&self, on: NodeId, job: Job) -> Result<Vec<u8>, PoolError> {
        let ctx = self.world.ctx("admin", "resource_management");
        self.node(on).unwrap().pool.send(Work { ctx, job }).await.unwrap()
    }

    async fn scale(&self, on: NodeId, resource: &str, metric: &str, threshold: f64, factor: f64) -> Result<actors::managers::resource_scaler::Scaling, ScalingError> {
        let ctx = self.world.ctx("admin", "scaling_management");
        let scale = Scale { ctx, resource: resource.into(), metric: metric.into(), threshold, factor };
        self.node(on).unwrap().scaler.send(scale).await.unwrap()
    }

    async fn heard_by_all(&self) {
        assert!(self.heard(SOON).await, "every node hears every other");
    }
}

fn failure(node: NodeId, kind: FailureKind, subject: &str) -> Failure {
    Failure { node, kind, subject: subject.into(), time: SystemTime::now(), reason: "test".into() }
}

#[actix_rt::test]
async fn a_crashed_node_is_detected_its_work_moved_and_on_return_caught_up() {
    let mut cluster = Cluster::start(3, fast_detection()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    let victim = *cluster.up().iter().find(|&&id| id != leader).unwrap();
    cluster.heard_by_all().await;
    let before = cluster.distribute(leader, "ingest", 90.0).await.unwrap();
    assert_eq!(before.shares.len(), 3, "{before:?}");
    assert!(eventually(SOON, || async { (cluster.pool_load(victim).await.assigned > 0.0).then_some(()) }).await.is_some());

    cluster.crash(victim).await;
    assert!(cluster.recovered(leader, FailureKind::Unreachable, victim).await, "{:?}", cluster.failures(leader).await);
    let after = cluster.distributions(leader).await;
    assert!(!after[0].shares.contains_key(&victim), "work moved off node {victim}: {after:?}");
    assert!((after[0].shares.values().sum::<f64>() - 90.0).abs() < 1e-9);

    // Updates while it is down, then it comes back from its data directory.
    let ctx = cluster.world.ctx("admin", "replication_management");
    for i in 0..3 {
        let data = format!("while-down-{i}").into_bytes();
        cluster.node(leader).unwrap().replicator.send(actors::managers::state_replicator::Replicate { ctx: ctx.clone(), data }).await.unwrap().unwrap();
    }
    cluster.boot(victim).await.unwrap();
    assert!(cluster.recovered(leader, FailureKind::Rejoined, victim).await, "{:?}", cluster.failures(leader).await);
    let back = cluster.distributions(leader).await;
    assert!(back[0].shares.contains_key(&victim), "the rejoined node gets work again: {back:?}");

    // Every step is in the audit log with its joules.
    let entries = cluster.world.entries();
    let charged = |actor: &str, op: &str| {
        entries.iter().filter(|e| e.actor.starts_with(actor) && e.operation == op && e.outcome == Outcome::Allowed).map(|e| e.charged()).sum::<f64>()
    };
    assert!(charged("failure-detector/", "check") >= 15.0 * 2.0, "a check per detection, 15 J each");
    assert!(charged("recovery-manager/", "recover") >= 35.0 * 2.0, "a recovery per failure, 35 J each");
    assert!(charged("load-distributor/", "rebalance") >= 40.0 * 2.0, "a rebalance per recovery, 40 J each");
}

#[actix_rt::test]
async fn a_crashed_leader_is_failed_over_and_a_new_one_leads() {
    let mut cluster = Cluster::start(3, fast_detection()).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    cluster.heard_by_all().await;
    let survivor = *cluster.up().iter().find(|&&id| id != leader).unwrap();
    cluster.crash(leader).await;
    assert!(cluster.recovered(survivor, FailureKind::LeaderUnreachable, leader).await, "{:?}", cluster.failures(survivor).await);
    let new_leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    assert_ne!(new_leader, leader);
    let recoveries: Vec<_> = cluster.world.entries().into_iter().filter(|e| e.operation == "recover" && e.outcome == Outcome::Allowed).collect();
    assert_eq!(recoveries.len(), 2, "each survivor recovered the failure once");
}

#[actix_rt::test]
async fn a_worker_whose_job_panics_is_restarted_under_supervision() {
    let cluster = Cluster::start(1, fast_detection()).await;
    assert_eq!(cluster.submit(1, Job::new(|| b"ok".to_vec())).await.unwrap(), b"ok");
    let err = cluster.submit(1, Job::new(|| panic!("poisoned input"))).await.unwrap_err();
    assert!(matches!(err, PoolError::JobFailed(ref m) if m.contains("poisoned input")), "{err:?}");
    assert!(cluster.recovered(1, FailureKind::ActorStopped, 1).await, "{:?}", cluster.failures(1).await);
    let load = cluster.pool_load(1).await;
    assert_eq!((load.workers, load.stopped), (2, 0), "the stopped worker was replaced");
    for _ in 0..4 {
        assert_eq!(cluster.submit(1, Job::new(|| b"fine".to_vec())).await.unwrap(), b"fine");
    }
    let restarts = cluster.world.entries().into_iter().filter(|e| e.operation == "restart" && e.outcome == Outcome::Allowed).count();
    assert_eq!(restarts, 1);
}

#[actix_rt::test]
async fn a_node_with_less_energy_left_gets_less_load() {
    let mut config = fast_detection();
    config.worker_pool.costs.insert("work".into(), j(2_000.0));
    let cluster = Cluster::start(3, config).await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();
    // Node 1's pool spends 6 000 of its 10 000 J.
    for _ in 0..3 {
        cluster.submit(1, Job::new(Vec::new)).await.unwrap();
    }
    let poorer = cluster.pool_load(1).await.remaining_j;
    assert!(poorer < 4_001.0, "{poorer}");
    cluster.heard_by_all().await;
    eventually(SOON, || async {
        let peers = cluster.node(leader)?.detector.send(actors::managers::failure_detector::Peers).await.ok()?;
        peers.iter().find(|p| p.node == 1)?.vitals.filter(|v| v.remaining_j < 4_001.0).map(|_| ())
    })
    .await
    .expect("node 1's heartbeats report its spent budget");

    let d = cluster.distribute(leader, "web", 100.0).await.unwrap();
    assert!(d.shares[&1] < d.shares[&2] && d.shares[&1] < d.shares[&3], "{d:?}");
    assert!((d.shares[&2] - d.shares[&3]).abs() < 1.0, "equal budgets, equal shares: {d:?}");
    for (&node, &share) in &d.shares {
        let got = eventually(SOON, || async { let a = cluster.pool_load(node).await.assigned; (a == share).then_some(a) }).await;
        assert_eq!(got, Some(share), "node {node} was sent its share");
    }
}

/// Holds jobs until released, so that a queue can be built on purpose.
#[derive(Clone, Default)]
struct Latch(Arc<(Mutex<bool>, Condvar)>);

impl Latch {
    fn job(&self) -> Job {
        let latch = self.clone();
        Job::new(move || {
            let (open, cv) = &*latch.0;
            drop(cv.wait_while(open.lock().unwrap(), |open| !*open).unwrap());
            b"done".to_vec()
        })
    }

    fn release(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

#[actix_rt::test]
async fn a_pool_above_its_threshold_scales_by_the_factor() {
    let cluster = Cluster::start(1, fast_detection()).await;
    let quiet = cluster.scale(1, "workers", "queue_depth", 1.5, 2.0).await.unwrap();
    assert_eq!((quiet.from, quiet.to), (2, 2), "an idle pool stays as it is");

    let latch = Latch::default();
    let pool = cluster.node(1).unwrap().pool.clone();
    let ctx = cluster.world.ctx("admin", "resource_management");
    let jobs: Vec<_> = (0..6).map(|_| pool.send(Work { ctx: ctx.clone(), job: latch.job() })).collect();
    eventually(SOON, || async { (cluster.pool_load(1).await.in_flight == 6).then_some(()) }).await.unwrap();

    let scaled = cluster.scale(1, "workers", "queue_depth", 1.5, 2.0).await.unwrap();
    assert_eq!((scaled.value, scaled.from, scaled.to), (3.0, 2, 4), "{scaled:?}");
    assert_eq!(cluster.pool_load(1).await.workers, 4);
    latch.release();
    for job in jobs {
        assert_eq!(job.await.unwrap().unwrap(), b"done");
    }
    // New work goes to the new workers too.
    let latch = Latch::default();
    let more: Vec<_> = (0..4).map(|_| pool.send(Work { ctx: ctx.clone(), job: latch.job() })).collect();
    eventually(SOON, || async { (cluster.pool_load(1).await.metric("utilization") == Some(1.0)).then_some(()) }).await.unwrap();
    latch.release();
    for job in more {
        job.await.unwrap().unwrap();
    }
}

#[actix_rt::test]
async fn every_detection_and_recovery_error_is_reachable() {
    let mut config = fast_detection();
    config.recovery_manager.settings.strategies.remove(&FailureKind::ActorStopped);
    let cluster = Cluster::start(2, config).await;
    let node = cluster.node(1).unwrap();
    let admin = |scope| cluster.world.ctx("admin", scope);

    // Detector.
    let err = node.detector.send(Check { ctx: admin("failure_detection"), node: 9 }).await.unwrap().unwrap_err();
    assert!(matches!(err, DetectionError::InvalidRequest(ref m) if m.contains("not a peer")), "{err:?}");
    let guest = cluster.world.ctx("guest", "failure_detection");
    let err = node.detector.send(Check { ctx: guest, node: 2 }).await.unwrap().unwrap_err();
    assert!(matches!(err, DetectionError::PermissionDenied(_)), "{err:?}");
    let view = node.detector.send(Check { ctx: admin("failure_detection"), node: 2 }).await.unwrap().unwrap();
    assert!(view.alive && view.phi < 8.0, "{view:?}");
    let report = Report { ctx: admin("failure_detection"), failure: failure(1, FailureKind::ActorStopped, "worker-0") };
    let err = node.detector.send(report).await.unwrap().unwrap_err();
    assert!(matches!(err, DetectionError::FailureHandlingFailed(ref m) if m.contains("strategy not found")), "{err:?}");

    // Recovery.
    let recover = |f| Recover { ctx: admin("recovery_management"), failure: f };
    let err = node.recovery.send(recover(failure(1, FailureKind::ActorStopped, "worker-0"))).await.unwrap().unwrap_err();
    assert!(matches!(err, RecoveryError::StrategyNotFound(ref m) if m.contains("recovery_manager.strategies.actor_stopped")), "{err:?}");
    let open = cluster.open_failures(1).await;
    assert!(open.iter().any(|f| f.subject == "worker-0"), "an unrecovered failure stays open: {open:?}");
    let err = node.recovery.send(recover(failure(9, FailureKind::Rejoined, "node 9"))).await.unwrap().unwrap_err();
    assert!(matches!(err, RecoveryError::RecoveryFailed(ref m) if m.contains("catch_up")), "{err:?}");
    let err = node.recovery.send(recover(failure(0, FailureKind::Unreachable, "node 0"))).await.unwrap().unwrap_err();
    assert!(matches!(err, RecoveryError::InvalidRequest(_)), "{err:?}");
    let guest = Recover { ctx: cluster.world.ctx("guest", "recovery_management"), failure: failure(2, FailureKind::Unreachable, "node 2") };
    let err = node.recovery.send(guest).await.unwrap().unwrap_err();
    assert!(matches!(err, RecoveryError::PermissionDenied(_)), "{err:?}");
    let done = node.recovery.send(recover(failure(2, FailureKind::Unreachable, "node 2"))).await.unwrap().unwrap();
    assert_eq!(done.strategy, Strategy::MoveWork);
}

#[actix_rt::test]
async fn every_distribution_and_scaling_error_is_reachable() {
    let mut config = fast_detection();
    config.worker_pool.settings.max = 8;
    let mut cluster = Cluster::start(3, config).await;
    cluster.heard_by_all().await;
    let leader = cluster.leader(Duration::from_secs(2)).await.unwrap();

    let err = cluster.distribute(leader, "web", f64::NAN).await.unwrap_err();
    assert!(matches!(err, DistributionError::InvalidRequest(ref m) if m.contains("NaN")), "{err:?}");
    let err = cluster.distribute(leader, "bad id!", 1.0).await.unwrap_err();
    assert!(matches!(err, DistributionError::InvalidRequest(_)), "{err:?}");
    let guest = Distribute { ctx: cluster.world.ctx("guest", "distribution_management"), id: "web".into(), load: 1.0 };
    let err = cluster.node(leader).unwrap().distributor.send(guest).await.unwrap().unwrap_err();
    assert!(matches!(err, DistributionError::PermissionDenied(_)), "{err:?}");
    // A node that crashed a moment ago still looks alive, but its share cannot be delivered.
    let victim = *cluster.up().iter().find(|&&id| id != leader).unwrap();
    cluster.crash(victim).await;
    let err = cluster.distribute(leader, "web", 10.0).await.unwrap_err();
    assert!(matches!(err, DistributionError::AdjustmentFailed(ref m) if m.contains(&format!("node {victim}"))), "{err:?}");
    assert!(cluster.distributions(leader).await.is_empty(), "a distribution that did not reach every node is not recorded");

    let err = cluster.scale(leader, "gpus", "queue_depth", 1.0, 2.0).await.unwrap_err();
    assert!(matches!(err, ScalingError::ResourceNotFound(ref m) if m.contains("workers")), "{err:?}");
    let err = cluster.scale(leader, "workers", "temperature", 1.0, 2.0).await.unwrap_err();
    assert!(matches!(err, ScalingError::MetricNotFound(ref m) if m.contains("queue_depth")), "{err:?}");
    let err = cluster.scale(leader, "workers", "workers", 1.0, 10.0).await.unwrap_err();
    assert!(matches!(err, ScalingError::ScalingFailed(ref m) if m.contains("at most 8")), "{err:?}");
    assert_eq!(cluster.pool_load(leader).await.workers, 2, "a refused size leaves the pool as it was");
    let err = cluster.scale(leader, "workers", "workers", 1.0, 0.0).await.unwrap_err();
    assert!(matches!(err, ScalingError::InvalidRequest(_)), "{err:?}");
    let guest = Scale { ctx: cluster.world.ctx("guest", "scaling_management"), resource: "workers".into(), metric: "workers".into(), threshold: 0.0, factor: 2.0 };
    let err = cluster.node(leader).unwrap().scaler.send(guest).await.unwrap().unwrap_err();
    assert!(matches!(err, ScalingError::PermissionDenied(_)), "{err:?}");
}

#[actix_rt::test]
async fn every_new_manager_refuses_what_its_budget_cannot_cover() {
    let mut config = fast_detection();
    config.failure_detector.budget_joules = j(10.0);
    config.recovery_manager.budget_joules = j(10.0);
    config.load_distributor.budget_joules = j(10.0);
    config.resource_scaler.budget_joules = j(10.0);
    let cluster = Cluster::start(1, config).await;
    let node = cluster.node(1).unwrap();
    let admin = |scope| cluster.world.ctx("admin", scope);
    let report = Report { ctx: admin("failure_detection"), failure: failure(1, FailureKind::ActorStopped, "worker-0") };
    let err = node.detector.send(report).await.unwrap().unwrap_err();
    assert!(matches!(err, DetectionError::FailureHandlingFailed(ref m) if m.contains("insufficient energy")), "5 J report, 35 J recovery: {err:?}");
    let err = node.detector.send(Check { ctx: admin("failure_detection"), node: 1 }).await.unwrap().unwrap_err();
    assert!(matches!(err, DetectionError::InsufficientEnergy { .. }), "{err:?}");
    let recover = Recover { ctx: admin("recovery_management"), failure: failure(1, FailureKind::Unreachable, "node 1") };
    let err = node.recovery.send(recover).await.unwrap().unwrap_err();
    assert!(matches!(err, RecoveryError::InsufficientEnergy { .. }), "{err:?}");
    let err = cluster.distribute(1, "web", 1.0).await.unwrap_err();
    assert!(matches!(err, DistributionError::InsufficientEnergy { .. }), "{err:?}");
    let err = cluster.scale(1, "workers", "workers", 1.0, 2.0).await.unwrap_err();
    assert!(matches!(err, ScalingError::InsufficientEnergy { .. }), "{err:?}");
}

#[actix_rt::test]
async fn a_detector_out_of_energy_backs_off_instead_of_flooding_the_log() {
    let mut config = fast_detection();
    config.failure_detector.budget_joules = j(10.0);
    let mut cluster = Cluster::start(2, config).await;
    cluster.heard_by_all().await;
    cluster.crash(2).await;
    // Silent past the threshold after about 0.45 s; then a detector that cannot pay. Sweeping
    // every 5 ms it would ask again at once; backing off, it waits ten beats (500 ms).
    let refused = || {
        cluster
            .world
            .entries()
            .into_iter()
            .filter(|e| e.actor == "failure-detector/1" && e.operation == "check" && e.outcome == Outcome::Denied)
            .map(|e| e.ts.to_datetime())
            .collect::<Vec<_>>()
    };
    let three = eventually(Duration::from_secs(20), || std::future::ready(Some(refused()).filter(|r| r.len() >= 3))).await;
    let times = three.expect("the detector asks again after backing off");
    let gaps: Vec<i64> = times.windows(2).map(|w| (w[1] - w[0]).num_milliseconds()).collect();
    assert!(gaps.iter().all(|&gap| gap >= 500), "refused checks {gaps:?} ms apart");
}

/// What the managers keep is bounded, and what happens at each bound is a named refusal.
#[actix_rt::test]
async fn open_failures_distributions_and_shares_are_bounded() {
    let mut config = fast_detection();
    config.recovery_manager.settings.strategies.remove(&FailureKind::ActorStopped);
    config.recovery_manager.settings.max_open = 2;
    config.load_distributor.settings.max_distributions = 1;
    config.worker_pool.settings.max_distributions = 1;
    let cluster = Cluster::start(2, config).await;
    cluster.heard_by_all().await;
    let node = cluster.node(1).unwrap();
    let admin = |scope| cluster.world.ctx("admin", scope);

    // Recovery: without a strategy, failures stay open; one of an open subject replaces it.
    let recover = |subject: &str| Recover { ctx: admin("recovery_management"), failure: failure(1, FailureKind::ActorStopped, subject) };
    for subject in ["worker-0", "worker-1", "worker-0"] {
        let err = node.recovery.send(recover(subject)).await.unwrap().unwrap_err();
        assert!(matches!(err, RecoveryError::StrategyNotFound(_)), "{err:?}");
    }
    let err = node.recovery.send(recover("worker-2")).await.unwrap().unwrap_err();
    assert!(matches!(err, RecoveryError::RecoveryFailed(ref m) if m.contains("recovery_manager.max_open")), "{err:?}");
    let open: Vec<String> = cluster.open_failures(1).await.into_iter().map(|f| f.subject).collect();
    assert_eq!(open, ["worker-0", "worker-1"]);

    // Distribution: a recorded one may be distributed again, a new one past the bound may not.
    cluster.distribute(1, "web", 10.0).await.unwrap();
    cluster.distribute(1, "web", 20.0).await.unwrap();
    let err = cluster.distribute(1, "batch", 5.0).await.unwrap_err();
    assert!(matches!(err, DistributionError::InvalidRequest(ref m) if m.contains("load_distributor.max_distributions")), "{err:?}");
    assert_eq!(cluster.distributions(1).await.len(), 1);

    // A pool takes shares of at most one distribution; a share of zero ends one.
    let adjust = |distribution: &str, share| Adjust { ctx: admin("resource_management"), distribution: distribution.into(), share };
    let err = node.pool.send(adjust("batch", 1.0)).await.unwrap().unwrap_err();
    assert!(matches!(err, PoolError::InvalidRequest(ref m) if m.contains("worker_pool.max_distributions")), "{err:?}");
    assert_eq!(node.pool.send(adjust("web", 0.0)).await.unwrap().unwrap(), 0.0);
    assert_eq!(node.pool.send(adjust("batch", 1.0)).await.unwrap().unwrap(), 1.0);
}

#[actix_rt::test]
async fn a_node_whose_consensus_actor_stopped_falls_silent_and_is_detected() {
    let cluster = Cluster::start(3, fast_detection()).await;
    cluster.heard_by_all().await;
    cluster.node(3).unwrap().consensus.send(actors::node::Stop).await.unwrap();
    let seen = eventually(SOON, || async {
        cluster.failures(1).await.into_iter().find(|f| f.node == 3 && matches!(f.kind, FailureKind::Unreachable | FailureKind::LeaderUnreachable))
    })
    .await;
    assert!(seen.is_some(), "node 3's detector kept beating for a node without consensus");
}
