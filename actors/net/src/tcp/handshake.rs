//! Opening connections: dialing each peer per lane with back-off, accepting, and the hello that
//! proves who is at the other end before anything else is read.
//!
//! A node believes the node id a peer claims in its hello only if the peer's certificate, already
//! checked against the cluster's CA by TLS, names that id; when it dials, TLS checks that the
//! server's certificate names the peer it meant to reach, although it dials an address. Anything
//! wrong (another cluster, another version, garbage, the wrong certificate) is refused with the
//! reason sent to the peer and logged with its address, and counted; it never touches another
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actors::security::identity::{certificate_names, node_name, principal_name};
use actors::security::{Credential, Principal, Scope, SecurityContext};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use rand::SeedableRng;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{connection, Security, Shared, Stats};
use crate::wire::{self, Hello, Lane, Role, Welcome, WireError};

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection after its hello, framed.
pub type Frames = Framed<Box<dyn Io>, LengthDelimitedCodec>;

/// How a client proved who it is.
#[derive(Debug, Clone)]
pub enum ClientProof {
    /// Its certificate names this principal (or, without TLS, it merely says so).
    Certificate(Principal),
    /// It presented this token, for the callers' service to verify.
    Token(Vec<u8>),
}

/// A client connection that passed its handshake.
pub struct Caller {
    /// The connection, positioned after the hello and its welcome.
    pub frames: Frames,
    /// The client's address.
    pub address: SocketAddr,
    /// Who it is.
    pub proof: ClientProof,
}

/// What an authenticated caller acts with: its grants, one per scope it may act in. There is
/// always one, so that a caller granted nothing still reaches the gates and is refused, and
/// audited, there.
#[derive(Clone)]
pub struct Authority {
    grants: Arc<[Credential]>,
}

impl Authority {
    /// Acting with `first` and `more`.
    pub fn new(first: Credential, more: Vec<Credential>) -> Self {
        Authority { grants: std::iter::once(first).chain(more).collect() }
    }

    /// Whose authority.
    pub fn principal(&self) -> &Principal {
        self.grants[0].principal()
    }

    /// A context for an operation in `scope`: from the narrowest grant that covers it, else the
    /// first grant in its own scope (for the gate to refuse).
    pub fn context(&self, scope: &Scope) -> SecurityContext {
        let covering = self.grants.iter().filter(|g| g.scope().includes(scope)).max_by_key(|g| g.scope().as_str().len());
        match covering {
            Some(grant) => grant.context(scope.clone()),
            None => self.grants[0].context(self.grants[0].scope().clone()),
        }
        .expect("a grant's own scope, or one it includes")
    }
}

/// Serves client connections: the node's gated operations, to authenticated callers.
pub trait Callers: Send + Sync + 'static {
    /// The authority of a client that proved who it is with `proof`, or why it is refused (the
    /// reason is sent to it).
    fn authenticate(&self, proof: &ClientProof) -> Result<Authority, String>;

    /// Serves one client, acting with `authority`, until its connection closes.
    fn serve(&self, caller: Caller, authority: Authority) -> BoxFuture<'static, ()>;
}

/// Why a handshake failed, as told to the peer and logged.
struct Refusal(String);

impl From<WireError> for Refusal {
    fn from(e: WireError) -> Self {
        Refusal(e.to_string())
    }
}

fn frames(io: Box<dyn Io>, shared: &Shared) -> Frames {
    Framed::new(io, wire::codec(shared.settings.max_frame_bytes))
}

async fn next_frame(frames: &mut Frames) -> Result<bytes::BytesMut, Refusal> {
    match frames.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) => Err(Refusal(connection::describe(&e))),
        None => Err(Refusal("closed during the handshake".into())),
    }
}

/// Accepts connections until shutdown; each handshake runs in its own task, at most
/// `max_handshakes` at once.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, address) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(node = shared.me, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.handshakes.clone().try_acquire_owned() else {
            Stats::bump(&shared.stats.refused_connections);
            tracing::warn!(node = shared.me, %address, "connection refused: too many handshakes under way");
            continue;
        };
        let Some(from) = HandshakeFrom::take(&shared, address.ip()) else {
            Stats::bump(&shared.stats.refused_connections);
            tracing::warn!(node = shared.me, %address, "connection refused: too many handshakes under way from this address");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(shared.settings.handshake_timeout_ms);
            let accepted = tokio::time::timeout(timeout, accept(&shared, tcp, address)).await;
            drop((permit, from));
            match accepted {
                Ok(Some(Accepted::Member(installed, frames))) => connection::run(installed, frames).await,
                Ok(Some(Accepted::Client(caller, callers, authority, _served))) => {
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => {}
                        _ = callers.serve(caller, authority) => {}
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    Stats::bump(&shared.stats.refused_connections);
                    tracing::warn!(node = shared.me, %address, "connection refused: no handshake within {timeout:?}");
                }
            }
        });
    }
}

/// One of the handshakes under way from one address, given back when dropped.
struct HandshakeFrom {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl HandshakeFrom {
    fn take(shared: &Arc<Shared>, ip: std::net::IpAddr) -> Option<Self> {
        let mut from = shared.handshakes_from.lock().unwrap_or_else(|e| e.into_inner());
        let count = from.entry(ip).or_insert(0);
        if *count >= shared.settings.max_handshakes_per_address {
            return None;
        }
        *count += 1;
        Some(HandshakeFrom { shared: shared.clone(), ip })
    }
}

impl Drop for HandshakeFrom {
    fn drop(&mut self) {
        let mut from = self.shared.handshakes_from.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = from.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                from.remove(&self.ip);
            }
        }
    }
}

enum Accepted {
    Member(connection::Installed, Frames),
    Client(Caller, Arc<dyn Callers>, Authority, tokio::sync::OwnedSemaphorePermit),
}

/// The accepting side of a handshake: `None` if it was refused (and the refusal sent and logged).
async fn accept(shared: &Arc<Shared>, tcp: TcpStream, address: SocketAddr) -> Option<Accepted> {
    let _ = tcp.set_nodelay(true);
    let (io, certificate): (Box<dyn Io>, Option<CertificateDer<'static>>) = match &shared.security {
        Security::Insecure => (Box::new(tcp), None),
        Security::Tls(identity) => match tokio_rustls::TlsAcceptor::from(identity.server_config()).accept(tcp).await {
            Ok(tls) => {
                let certificate = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
                (Box::new(tls), certificate)
            }
            Err(e) => {
                Stats::bump(&shared.stats.refused_connections);
                tracing::warn!(node = shared.me, %address, "connection refused: TLS handshake failed: {e}");
                return None;
            }
        },
    };
    let mut frames = frames(io, shared);
    let outcome = async {
        let hello = wire::decode_hello(&next_frame(&mut frames).await?)?;
        admit(shared, &hello, certificate.as_ref())
    }
    .await;
    let welcome = match &outcome {
        Ok(_) => Welcome::Accepted { id: shared.me, incarnation: shared.incarnation },
        Err(Refusal(reason)) => Welcome::Refused(reason.clone()),
    };
    let sent = frames.send(Bytes::from(wire::encode_welcome(&welcome))).await;
    match outcome {
        Err(Refusal(reason)) => {
            Stats::bump(&shared.stats.refused_connections);
            tracing::warn!(node = shared.me, %address, "connection refused: {reason}");
            None
        }
        Ok(_) if sent.is_err() => None,
        Ok(Admitted::Member(installed)) => Some(Accepted::Member(installed, frames)),
        Ok(Admitted::Client(proof, callers, authority, served)) => {
            Some(Accepted::Client(Caller { frames, address, proof }, callers, authority, served))
        }
    }
}

enum Admitted {
    Member(connection::Installed),
    Client(ClientProof, Arc<dyn Callers>, Authority, tokio::sync::OwnedSemaphorePermit),
}

/// Whether a hello, with the certificate the connection presented, is let in.
fn admit(shared: &Arc<Shared>, hello: &Hello, certificate: Option<&CertificateDer<'_>>) -> Result<Admitted, Refusal> {
    let cluster = shared.cluster.as_str();
    if hello.cluster != cluster {
        return Err(Refusal(format!("cluster {:?} (peer) is not {cluster:?} (this node)", hello.cluster)));
    }
    let proves = |name: &str| -> Result<(), Refusal> {
        match (&shared.security, certificate) {
            (Security::Insecure, _) => Ok(()),
            (Security::Tls(_), None) => Err(Refusal(format!("no certificate presented for {name}"))),
            (Security::Tls(_), Some(der)) => {
                certificate_names(der, name).map_err(|why| Refusal(format!("the certificate presented does not name {name}: {why}")))
            }
        }
    };
    match &hello.role {
        &Role::Node { id, incarnation, lane, to } => {
            if to != shared.me {
                return Err(Refusal(format!("this is node {}, not node {to}", shared.me)));
            }
            if shared.lane(id, lane).is_none() {
                return Err(Refusal(format!("node {id} is not a member of cluster {cluster:?}")));
            }
            proves(&node_name(&shared.cluster, id))?;
            connection::offer(shared, id, lane, id, incarnation).map(Admitted::Member).map_err(Refusal)
        }
        Role::Client { principal, token } => {
            let proof = match (principal, token) {
                (Some(claimed), None) => {
                    let principal: Principal = claimed.parse().map_err(|e| Refusal(format!("{e}")))?;
                    let name = principal_name(&shared.cluster, &principal).map_err(|e| Refusal(e.to_string()))?;
                    proves(&name)?;
                    ClientProof::Certificate(principal)
                }
                (None, Some(token)) => ClientProof::Token(token.clone()),
                _ => return Err(Refusal("a client must present either a certificate for its principal or a token".into())),
            };
            let callers = shared.callers.read().unwrap_or_else(|e| e.into_inner()).clone();
            let callers = callers.ok_or_else(|| Refusal(format!("node {} is not serving callers yet", shared.me)))?;
            let served = shared.callers_served.clone().try_acquire_owned().map_err(|_| {
                Refusal(format!("node {} serves {} callers already (max_callers); try another node or later", shared.me, shared.settings.max_callers))
            })?;
            let authority = callers.authenticate(&proof).map_err(Refusal)?;
            Ok(Admitted::Client(proof, callers, authority, served))
        }
    }
}

/// Keeps one lane to `peer` connected until shutdown: dials when the link has no connection,
/// backs off after failures, and waits while a connection is up.
pub(super) async fn dialer(shared: Arc<Shared>, peer: cluster::NodeId, address: SocketAddr, lane: Lane) {
    let Some(state) = shared.lane(peer, lane) else { return };
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        let dial = state.link.lock().unwrap_or_else(|e| e.into_inner()).start_dial();
        let wait = if dial {
            match dial_once(&shared, peer, address, lane).await {
                Ok((frames, installed)) => {
                    tokio::spawn(connection::run(installed, frames));
                    None
                }
                Err(Refusal(reason)) => {
                    let delay = state.link.lock().unwrap_or_else(|e| e.into_inner()).dial_failed(&mut rng);
                    tracing::debug!(node = shared.me, peer, ?lane, %address, "dial failed, retrying in {delay:?}: {reason}");
                    Some(delay)
                }
            }
        } else {
            None
        };
        tokio::select! {
            _ = state.peer.gone.cancelled() => return,
            _ = async {
                match wait {
                    Some(delay) => tokio::time::sleep(delay).await,
                    // Woken when the connection closes (with the delay it asks for) or when a
                    // dial by the peer was refused.
                    None => {
                        state.changed.notified().await;
                        let delay = state.link.lock().unwrap_or_else(|e| e.into_inner()).redial_delay();
                        tokio::time::sleep(delay).await;
                    }
                }
            } => {}
        }
    }
}

/// Connects to `address` from `source` (any local address if `None`) and, with `tls`, proves the
/// server is `server`; framed with frames of at most `max_frame_bytes`.
pub(crate) async fn open(
    address: SocketAddr,
    source: Option<std::net::IpAddr>,
    server: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_frame_bytes: usize,
) -> Result<Frames, String> {
    let tcp = match source {
        None => TcpStream::connect(address).await,
        Some(ip) => {
            let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
            match socket.and_then(|s| s.bind(SocketAddr::new(ip, 0)).map(|()| s)) {
                Ok(socket) => socket.connect(address).await,
                Err(e) => Err(e),
            }
        }
    }
    .map_err(|e| format!("connect to {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(config) => {
            // The certificate must name the server, whatever address it was reached at.
            let name = ServerName::try_from(server.to_owned()).map_err(|e| e.to_string())?;
            Box::new(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS with {server}: {e}"))?)
        }
    };
    Ok(Framed::new(io, wire::codec(max_frame_bytes)))
}

/// Says hello on a freshly opened connection to node `peer`; answers its incarnation.
pub(crate) async fn greet(frames: &mut Frames, hello: &Hello, peer: cluster::NodeId) -> Result<u64, String> {
    frames.send(Bytes::from(wire::encode_hello(hello))).await.map_err(|e| connection::describe(&e))?;
    let answer = next_frame(frames).await.map_err(|Refusal(r)| r)?;
    match wire::decode_welcome(&answer).map_err(|e| e.to_string())? {
        Welcome::Accepted { id, incarnation } if id == peer => Ok(incarnation),
        Welcome::Accepted { id, .. } => Err(format!("node {id} answered at the address of node {peer}")),
        Welcome::Refused(reason) => Err(format!("refused by node {peer}: {reason}")),
    }
}

/// One dial: connect, prove both ends, and offer the connection to the link.
async fn dial_once(shared: &Arc<Shared>, peer: cluster::NodeId, address: SocketAddr, lane: Lane) -> Result<(Frames, connection::Installed), Refusal> {
    let timeout = Duration::from_millis(shared.settings.handshake_timeout_ms);
    let tls = match &shared.security {
        Security::Insecure => None,
        Security::Tls(identity) => Some(identity.client_config()),
    };
    let hello = Hello {
        cluster: shared.cluster.to_string(),
        role: Role::Node { id: shared.me, incarnation: shared.incarnation, lane, to: peer },
    };
    let handshake = async {
        // From the address this node listens on, so that its peers (and a firewall) see where
        // its connections come from, also on a host with many addresses.
        let source = Some(shared.listen_ip).filter(|ip| !ip.is_unspecified());
        let mut frames = open(address, source, &node_name(&shared.cluster, peer), tls, shared.settings.max_frame_bytes).await?;
        let incarnation = greet(&mut frames, &hello, peer).await?;
        Ok::<_, String>((frames, incarnation))
    };
    let (frames, incarnation) = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| Refusal(format!("no handshake within {timeout:?}")))?
        .map_err(Refusal)?;
    let installed = connection::offer(shared, peer, lane, shared.me, incarnation).map_err(Refusal)?;
    Ok((frames, installed))
}
