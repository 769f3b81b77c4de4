//! A small world for actor tests: an environment with an in-memory audit sink, a fixed meter
//! (so that costs are exact), and principals with known grants.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler};
use actors::managers::communication::Delivery;
use actors::energy::{FixedMeter, Joules};
use actors::security::audit::{AuditEntry, MemorySink};
use actors::security::{CapSet, Capability, Credential, GrantTable, Origin, Principal, Scope, SecurityContext};
use actors::node::local_cluster::LocalCluster;
use actors::{Config, Environment};

/// Energy the fixed meter attributes to every run.
pub const MEASURED: f64 = 0.5;

pub struct World {
    pub env: Environment,
    pub audit: Arc<MemorySink>,
    /// The credentials the world granted, by user name.
    credentials: std::sync::Mutex<std::collections::BTreeMap<String, Credential>>,
}

pub fn j(v: f64) -> Joules {
    Joules::new(v).unwrap()
}

impl World {
    pub fn new(config: Config) -> World {
        let audit = Arc::new(MemorySink::new());
        let grants = Arc::new(GrantTable::new());
        let env = Environment::new(config, grants, audit.clone()).with_meter(|| Box::new(FixedMeter { per_run: j(MEASURED) }));
        let world = World { env, audit, credentials: Default::default() };
        use Capability::*;
        world.grant("operator", CapSet::of(&[NodeManagement, ConnectionManagement, BroadcastManagement, EnergyManagement]));
        world.grant("guest", CapSet::of(&[BroadcastManagement]));
        world.grant("admin", CapSet::all());
        world
    }

    /// Grants `caps` to the user `name` in every scope, and keeps the credential.
    pub fn grant(&self, name: &str, caps: CapSet) -> Credential {
        let credential = self.env.grants().grant(Principal::user(name), caps, Scope::root(), Origin::Configured);
        self.credentials.lock().unwrap().insert(name.to_owned(), credential.clone());
        credential
    }

    /// The credential of the user `name`.
    pub fn credential(&self, name: &str) -> Credential {
        self.credentials.lock().unwrap()[name].clone()
    }

    /// A context of the user `name` in `scope`, from its credential.
    pub fn ctx(&self, name: &str, scope: &str) -> SecurityContext {
        self.credential(name).context(Scope::new(scope).unwrap()).unwrap()
    }

    pub fn entries(&self) -> Vec<AuditEntry> {
        self.audit.entries()
    }
}

/// Forwards deliveries to a channel the test reads.
pub struct Subscriber {
    pub out: std::sync::mpsc::Sender<Delivery>,
    pub capacity: usize,
}

impl Actor for Subscriber {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.capacity);
    }
}

impl Handler<Delivery> for Subscriber {
    type Result = ();
    fn handle(&mut self, msg: Delivery, _: &mut Context<Self>) {
        let _ = self.out.send(msg);
    }
}

/// Blocks the subscriber's thread until the test releases it (or a minute passes), so its mailbox
/// fills up; signals when it has started.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Block(pub std::sync::mpsc::Receiver<()>, pub std::sync::mpsc::Sender<()>);

impl Handler<Block> for Subscriber {
    type Result = ();
    fn handle(&mut self, msg: Block, _: &mut Context<Self>) {
        let _ = msg.1.send(());
        let _ = msg.0.recv_timeout(Duration::from_secs(60));
    }
}

/// Stops the subscriber.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Subscriber {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        actix::ActorContext::stop(ctx);
    }
}

pub fn subscriber(capacity: usize) -> (Addr<Subscriber>, std::sync::mpsc::Receiver<Delivery>) {
    let (out, rx) = std::sync::mpsc::channel();
    (Subscriber { out, capacity }.start(), rx)
}

/// Waits until an actor has stopped.
pub async fn stopped<A: Actor>(addr: &Addr<A>) {
    for _ in 0..200 {
        if !addr.connected() {
            return;
        }
        actix::clock::sleep(Duration::from_millis(5)).await;
    }
    panic!("actor did not stop");
}

/// A [`LocalCluster`] in a temporary directory, with its world.
pub struct Cluster {
    pub world: World,
    pub inner: LocalCluster,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.inner
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.inner
    }
}

impl Cluster {
    pub async fn start(n: u64, config: Config) -> Cluster {
        let world = World::new(config);
        use Capability::*;
        let all = [ElectionManagement, VoteManagement, ReplicationManagement, StateManagement, EnergyManagement];
        world.grant("operator", CapSet::of(&all));
        world.grant("reader", CapSet::of(&[StateManagement, ElectionManagement]));
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalCluster::start(world.env.clone(), n, dir.path(), 1).await.unwrap();
        Cluster { world, inner, _dir: dir }
    }
}

/// A communication manager whose gate records into `log` (its budget big enough for a flood),
/// and an operator's context to broadcast with.
pub fn broadcaster(log: Arc<dyn actors::security::audit::AuditSink>) -> (Addr<actors::managers::communication::CommunicationManager>, SecurityContext) {
    let grants = Arc::new(GrantTable::new());
    let operator = grants.grant(Principal::user("operator"), CapSet::of(&[Capability::BroadcastManagement]), Scope::root(), Origin::Configured);
    let mut config = Config::default();
    config.communication_manager.budget_joules = j(1e12);
    let env = Environment::new(config, grants, log);
    let comm = actors::managers::communication::CommunicationManager::new(&env, "n1").start();
    (comm, operator.context(Scope::new("communication_management").unwrap()).unwrap())
}

/// An audit log opened with `config`, and a communication manager (see [`broadcaster`]) writing
/// to it.
pub fn broadcaster_on(
    config: actors::security::audit::AuditConfig,
) -> (Arc<actors::security::audit::AuditLog>, Addr<actors::managers::communication::CommunicationManager>, SecurityContext) {
    let (log, _) = actors::security::audit::AuditLog::open(config).unwrap();
    let log = Arc::new(log);
    let (comm, ctx) = broadcaster(log.clone());
    (log, comm, ctx)
}

/// Asks `probe` every 20 ms until it answers, for at most `within`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(within: Duration, probe: impl FnMut() -> F) -> Option<T> {
    actors::node::wait::eventually(within, Duration::from_millis(20), probe).await
}
