//! A client of a node's managers: connects with its own certificate (or, on an insecure
//! development cluster, a claimed name), sends calls and matches answers, many in flight on one
//! connection.
//!
//! ```no_run
//! # async fn example() -> Result<(), net::client::ClientError> {
//! use net::client::{Client, Credentials};
//! use actors::security::identity::TlsFiles;
//!
//! let credentials = Credentials::certificate("demo", "user:operator", TlsFiles {
//!     ca: "certs/ca.pem".into(), cert: "certs/operator.pem".into(), key: "certs/operator.key".into(),
//! })?;
//! let client = Client::connect("127.0.0.1:7001".parse().unwrap(), 1, &credentials).await?;
//! let (version, data) = client.replicate(b"hello".to_vec()).await?;
//! # Ok(()) }
//! ```

use actors::managers::state_replicator::Consistency;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::security::identity::{node_name, principal_name, ClusterName, Identity, IdentityError, TlsFiles};
use actors::security::{CapSet, Principal};
use bytes::Bytes;
use cluster::NodeId;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::calls::{Answer, Call, Failure, Manager, NodeInfo, RaftJoin, RaftView, Request, Response, StatusReport};
use crate::tcp::connection::write_batches;
use crate::tcp::handshake::{greet, open};
use crate::wire::{Hello, Role, DEFAULT_MAX_FRAME_BYTES};

/// How a client proves who it is.
#[derive(Clone)]
pub struct Credentials {
    cluster: ClusterName,
    proof: Proof,
    tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Clone)]
enum Proof {
    /// A principal, proven by the TLS certificate (or merely claimed, without TLS).
    Principal(Principal),
    /// A capability token.
    Token(Vec<u8>),
}

impl Credentials {
    /// Acting as `principal` of `cluster`, proven by the certificate in `files`.
    pub fn certificate(cluster: &str, principal: &str, files: TlsFiles) -> Result<Self, ClientError> {
        let cluster = ClusterName::new(cluster)?;
        let principal: Principal = principal.parse().map_err(|e| ClientError::Credentials(format!("{e}")))?;
        let identity = Identity::load(&files, &principal_name(&cluster, &principal)?)?;
        Ok(Credentials { cluster, proof: Proof::Principal(principal), tls: Some(identity.client_config()) })
    }

    /// Acting with what the capability `token` (base64) allows, checking nodes against the CA in
    /// `ca`; no certificate of its own.
    pub fn token(cluster: &str, ca: &std::path::Path, token: &str) -> Result<Self, ClientError> {
        let cluster = ClusterName::new(cluster)?;
        let tls = Identity::anonymous_client_config(ca)?;
        Ok(Credentials { cluster, proof: Proof::Token(token.trim().as_bytes().to_vec()), tls: Some(tls) })
    }

    /// Claiming to be `principal`, without TLS: only an insecure (development) cluster believes it.
    pub fn insecure(cluster: &str, principal: &str) -> Result<Self, ClientError> {
        let cluster = ClusterName::new(cluster)?;
        let principal = principal.parse().map_err(|e| ClientError::Credentials(format!("{e}")))?;
        Ok(Credentials { cluster, proof: Proof::Principal(principal), tls: None })
    }

    fn role(&self) -> Role {
        match &self.proof {
            Proof::Principal(p) => Role::Client { principal: Some(p.to_string()), token: None },
            Proof::Token(t) => Role::Client { principal: None, token: Some(t.clone()) },
        }
    }
}

/// Why a call got no answer from the managers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The credentials could not be loaded.
    #[error("credentials: {0}")]
    Credentials(String),
    /// No connection could be made, or the node refused it (the reason says why).
    #[error("{0}")]
    Connect(String),
    /// The manager answered with an error.
    #[error("{0}")]
    Failed(Failure),
    /// The connection closed before the answer came.
    #[error("the connection to node {0} closed before the answer came")]
    Closed(NodeId),
    /// The call could not be written on the wire.
    #[error("{0}")]
    Encode(String),
    /// The answer was not of the kind the call asks for.
    #[error("node answered {0:?}, which is not an answer to this call")]
    Unexpected(Box<Answer>),
}

impl From<IdentityError> for ClientError {
    fn from(e: IdentityError) -> Self {
        ClientError::Credentials(e.to_string())
    }
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Answer, Failure>>>>>;

/// Drops every waiter's sender, so that each sees [`ClientError::Closed`].
struct ClearOnDrop(Waiting);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A connection to one node's managers. Calls may be made from many tasks at once.
pub struct Client {
    node: NodeId,
    next: AtomicU64,
    requests: mpsc::Sender<Bytes>,
    waiting: Waiting,
    _driver: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects to node `node` at `address`, which must prove it is that node.
    pub async fn connect(address: SocketAddr, node: NodeId, credentials: &Credentials) -> Result<Client, ClientError> {
        Client::connect_from(None, address, node, credentials).await
    }

    /// Like [`Client::connect`], from the local address `source` (on a host with several).
    pub async fn connect_from(
        source: Option<std::net::IpAddr>,
        address: SocketAddr,
        node: NodeId,
        credentials: &Credentials,
    ) -> Result<Client, ClientError> {
        let handshake = async {
            let server = node_name(&credentials.cluster, node);
            let mut frames = open(address, source, &server, credentials.tls.clone(), DEFAULT_MAX_FRAME_BYTES).await?;
            let hello = Hello { cluster: credentials.cluster.to_string(), role: credentials.role() };
            greet(&mut frames, &hello, node).await?;
            Ok(frames)
        };
        let frames = tokio::time::timeout(Duration::from_secs(10), handshake)
            .await
            .map_err(|_| ClientError::Connect(format!("no handshake with {address} within 10 s")))?
            .map_err(ClientError::Connect)?;
        let (mut sink, mut stream) = frames.split();
        let (requests, mut outgoing) = mpsc::channel::<Bytes>(1024);
        let waiting: Waiting = Arc::default();
        let answers = waiting.clone();
        let driver = tokio::spawn(async move {
            // Whoever still waits learns the connection is gone, however the driver ends.
            let _tell_waiters = ClearOnDrop(answers.clone());
            let write = write_batches(&mut sink, &mut outgoing, |frame| frame, |_| {});
            let read = async {
                while let Some(Ok(frame)) = stream.next().await {
                    let Ok(Response { id, result }) = Response::decode(&frame) else { return };
                    if let Some(waiter) = answers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                        let _ = waiter.send(result);
                    }
                }
            };
            tokio::select! { _ = write => {}, _ = read => {} }
        });
        Ok(Client { node, next: AtomicU64::new(1), requests, waiting, _driver: driver })
    }

    /// The node it is connected to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Sends `call` and waits for its answer.
    pub async fn call(&self, call: Call) -> Result<Answer, ClientError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let frame = Request { id, call }.encode().map_err(|e| ClientError::Encode(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id, reply);
        if self.requests.send(Bytes::from(frame)).await.is_err() {
            self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return Err(ClientError::Closed(self.node));
        }
        match answer.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => Err(ClientError::Failed(failure)),
            Err(_) => Err(ClientError::Closed(self.node)),
        }
    }

    /// Replaces the replicated state's data; answers its new version and data once a quorum has
    /// committed it.
    pub async fn replicate(&self, data: Vec<u8>) -> Result<(u64, Vec<u8>), ClientError> {
        match self.call(Call::Replicate { data }).await? {
            Answer::State { version, data } => Ok((version, data)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// The replicated state as the node has applied it: version and data.
    pub async fn read_state(&self) -> Result<(u64, Vec<u8>), ClientError> {
        match self.call(Call::ReadState).await? {
            Answer::State { version, data } => Ok((version, data)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sets `key` to `value`; answers the write's revision once a quorum has committed it.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        match self.call(Call::Put { key: key.to_vec(), value: value.to_vec() }).await? {
            Answer::Written { revision } => Ok(revision),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Reads `key` at `consistency`: its value and the revision that wrote it, if it has one.
    pub async fn get(&self, key: &[u8], consistency: Consistency) -> Result<Option<(Vec<u8>, u64)>, ClientError> {
        match self.call(Call::Get { key: key.to_vec(), consistency }).await? {
            Answer::Read { value, .. } => Ok(value),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// The leader and its term, as the node knows them.
    pub async fn leader(&self) -> Result<Option<(NodeId, u64)>, ClientError> {
        match self.call(Call::Leader).await? {
            Answer::Leader(leader) => Ok(leader),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Asks the node manager to admit node `id` of `kind`, bringing `energy_budget_j` joules,
    /// with `capabilities` in `scope`, and with `raft` as a member of the replicated state too;
    /// answers the node as recorded and who confirmed it.
    pub async fn join(
        &self,
        id: &str,
        kind: &str,
        energy_budget_j: f64,
        capabilities: CapSet,
        scope: &str,
        raft: Option<RaftJoin>,
    ) -> Result<(NodeInfo, Vec<String>), ClientError> {
        let call = Call::Join { id: id.into(), kind: kind.into(), energy_budget_j, capabilities, scope: scope.into(), raft };
        match self.call(call).await? {
            Answer::Joined { node, confirmed_by } => Ok((node, confirmed_by)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Asks the node manager to remove node `id`; answers the node removed.
    pub async fn leave(&self, id: &str) -> Result<NodeInfo, ClientError> {
        match self.call(Call::Leave { id: id.into() }).await? {
            Answer::Node(node) => Ok(node),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// The node's view of Raft and of the membership it has applied.
    pub async fn raft_status(&self) -> Result<RaftView, ClientError> {
        match self.call(Call::RaftStatus).await? {
            Answer::Raft(view) => Ok(view),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// The node manager's members.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        match self.call(Call::ListNodes).await? {
            Answer::Nodes(nodes) => Ok(nodes),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// A manager's budget, counters and operations.
    pub async fn status(&self, manager: Manager) -> Result<StatusReport, ClientError> {
        match self.call(Call::Status { manager }).await? {
            Answer::Status(report) => Ok(report),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }
}
