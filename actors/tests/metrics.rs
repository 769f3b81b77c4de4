//! `/metrics` of a three-node `LocalCluster` under physical accounting, scraped over HTTP and
//! read with an OpenMetrics parser: every family is there with its type, unit and the values
//! that were pushed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use actors::managers::communication::{Broadcast, CommunicationManager};
use actors::managers::node_manager::{ListNodes, NodeManager};
use actors::managers::state_replicator::Replicate;
use actors::node::local_cluster::LocalCluster;
use actors::security::audit::MemorySink;
use actors::security::{CapSet, Capability, GrantTable, Origin, Principal, Scope};
use actors::{Config, Environment};
use actix::Actor;
use energy::counters::ScriptedCounter;
use energy::{Joules, Source};
use openmetrics_parser::{MetricNumber, OpenMetricsType, OpenMetricsValue};

/// One HTTP/1.1 exchange; the status line and the body.
fn http(address: SocketAddr, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or("").to_owned(), body.to_owned())
}

fn get(address: SocketAddr, path: &str) -> (String, String) {
    http(address, &format!("GET {path} HTTP/1.1\r\nHost: ergon\r\nConnection: close\r\n\r\n"))
}

type Exposition = openmetrics_parser::MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// The value of family `family`'s sample with exactly these label values.
fn value(metrics: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    maybe(metrics, family, labels).unwrap_or_else(|| panic!("{family}{labels:?}: no sample"))
}

/// The same, `None` where there is no such sample.
fn maybe(metrics: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let f = metrics.families.get(family).unwrap_or_else(|| panic!("no family {family}"));
    let names = f.get_label_names();
    let wanted: Vec<String> = names
        .iter()
        .map(|n| labels.iter().find(|(k, _)| k == n).unwrap_or_else(|| panic!("{family}: no label {n} given")).1.to_owned())
        .collect();
    let sample = f.get_sample_by_label_values(&wanted)?;
    let number = match &sample.value {
        OpenMetricsValue::Counter(c) => c.value,
        OpenMetricsValue::Gauge(g) => *g,
        other => panic!("{family}: {other:?}"),
    };
    Some(match number {
        MetricNumber::Float(x) => x,
        MetricNumber::Int(i) => i as f64,
    })
}

#[actix::test]
async fn a_local_cluster_serves_its_metrics_in_the_openmetrics_format() {
    let mut config = Config::from_toml(
        "[energy]\naccounting = \"physical\"\n[attribution]\nsample_every_ms = 5\nreport_every_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    config.node_manager.refill_watts = Some(energy::Watts::new(3.0).unwrap());
    // A small budget, spent until refused, raises a warning and a critical alert.
    config.communication_manager.budget_joules = Joules::new(2e-3).unwrap();
    let grants = Arc::new(GrantTable::new());
    let operator = grants.grant(Principal::user("operator"), CapSet::all(), Scope::root(), Origin::Configured);
    let guest = grants.grant(Principal::user("guest"), CapSet::of(&[Capability::BroadcastManagement]), Scope::root(), Origin::Configured);
    let env = Environment::with_counter(config, grants, Arc::new(MemorySink::new()), Box::new(ScriptedCounter::advancing(Source::Rapl, Joules::new(0.25).unwrap()))).unwrap();
    let server = env.serve_metrics().unwrap().expect("an address is configured");
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(env.clone(), 3, dir.path(), 7).await.unwrap();
    let leader = cluster.leader(Duration::from_secs(5)).await.expect("a leader");

    let nm = NodeManager::new(&env, "solo").start();
    let ops = operator.context(Scope::new("node_management").unwrap()).unwrap();
    let stranger = guest.context(Scope::new("node_management").unwrap()).unwrap();
    for _ in 0..7 {
        nm.send(ListNodes { ctx: ops.clone() }).await.unwrap().unwrap();
    }
    for _ in 0..3 {
        assert!(nm.send(ListNodes { ctx: stranger.clone() }).await.unwrap().is_err());
    }
    let comm = CommunicationManager::new(&env, "solo").start();
    let talk = operator.context(Scope::new("communication_management").unwrap()).unwrap();
    let mut broadcasts = 0;
    while comm.send(Broadcast { ctx: talk.clone(), channel: "c".into(), content: "x".into() }).await.unwrap().is_ok() {
        broadcasts += 1;
        assert!(broadcasts < 1_000_000, "a 2 mJ budget runs out");
    }
    let replicate = Replicate { ctx: operator.context(Scope::new("replication_management").unwrap()).unwrap(), data: b"v=1".to_vec() };
    cluster.node(leader).unwrap().replicator.send(replicate).await.unwrap().unwrap();
    assert!(cluster.converged(1, Duration::from_secs(5)).await);
    // Heartbeats and a few reports of the sampler.
    actix::clock::sleep(Duration::from_millis(400)).await;
    let report = env.attribution().unwrap().stop().unwrap();

    let (status, body) = get(server.address(), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let metrics = openmetrics_parser::openmetrics::parse_openmetrics(&body).unwrap_or_else(|e| panic!("{e:?}\n{body}"));
    let family = |name: &str| metrics.families.get(name).unwrap_or_else(|| panic!("no {name} in\n{body}"));
    for (name, kind, unit) in [
        ("ergon_requests", OpenMetricsType::Counter, ""),
        ("ergon_charged_joules", OpenMetricsType::Counter, "joules"),
        ("ergon_metered_joules", OpenMetricsType::Counter, "joules"),
        ("ergon_corrected_joules", OpenMetricsType::Counter, "joules"),
        ("ergon_attributed_joules", OpenMetricsType::Counter, "joules"),
        ("ergon_budget_remaining_joules", OpenMetricsType::Gauge, "joules"),
        ("ergon_budget_capacity_joules", OpenMetricsType::Gauge, "joules"),
        ("ergon_budget_refill_watts", OpenMetricsType::Gauge, "watts"),
        ("ergon_energy_counter_joules", OpenMetricsType::Counter, "joules"),
        ("ergon_energy_unattributed_joules", OpenMetricsType::Counter, "joules"),
        ("ergon_energy_sampler_joules", OpenMetricsType::Counter, "joules"),
        ("ergon_raft_term", OpenMetricsType::Gauge, ""),
        ("ergon_raft_leader", OpenMetricsType::Gauge, ""),
        ("ergon_raft_commit_index", OpenMetricsType::Gauge, ""),
        ("ergon_raft_applied_index", OpenMetricsType::Gauge, ""),
        ("ergon_phi", OpenMetricsType::Gauge, ""),
        ("ergon_worker_pool_workers", OpenMetricsType::Gauge, ""),
        ("ergon_worker_pool_in_flight", OpenMetricsType::Gauge, ""),
    ] {
        let f = family(name);
        assert_eq!((&f.family_type, f.unit.as_str()), (&kind, unit), "{name}");
        assert!(!f.help.is_empty(), "{name} says what it is");
    }

    // Requests, by outcome, as sent.
    let nm_solo = [("actor", "node-manager/solo"), ("operation", "list_nodes")];
    let with = |outcome: &'static str| [nm_solo[0], nm_solo[1], ("outcome", outcome)];
    assert_eq!(value(&metrics, "ergon_requests", &with("allowed")), 7.0);
    assert_eq!(value(&metrics, "ergon_requests", &with("denied")), 3.0);
    assert_eq!(value(&metrics, "ergon_requests", &with("failed")), 0.0);
    assert!(value(&metrics, "ergon_charged_joules", &nm_solo) > 0.0);
    assert_eq!(value(&metrics, "ergon_budget_capacity_joules", &[("actor", "node-manager/solo")]), 1000.0);
    assert_eq!(value(&metrics, "ergon_budget_refill_watts", &[("actor", "node-manager/solo")]), 3.0);
    let replicated = [("actor", format!("state-replicator/{leader}").as_str()), ("operation", "replicate"), ("outcome", "allowed")]
        .map(|(k, v)| (k, v.to_owned()));
    let replicated: Vec<(&str, &str)> = replicated.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(value(&metrics, "ergon_requests", &replicated), 1.0);

    let comm_solo = [("actor", "communication-manager/solo")];
    // One critical alert; a warning before it unless a correction jumped the budget past 95% at once.
    assert_eq!(value(&metrics, "ergon_alerts", &[comm_solo[0], ("level", "critical")]), 1.0);
    assert!(maybe(&metrics, "ergon_alerts", &[comm_solo[0], ("level", "warning")]).unwrap_or(0.0) <= 1.0);
    let broadcast = [comm_solo[0], ("operation", "broadcast"), ("outcome", "allowed")];
    assert_eq!(value(&metrics, "ergon_requests", &broadcast), f64::from(broadcasts));
    assert!(value(&metrics, "ergon_budget_remaining_joules", &comm_solo) < 2e-3 * 0.05 + 1e-3, "spent");

    // The counter, as the sampler reported it, to the joule.
    let counter = [("counter", "scripted"), ("source", "rapl"), ("accounting", "physical")];
    assert!((value(&metrics, "ergon_energy_counter_joules", &counter) - report.measured.get()).abs() < 1e-9);
    assert!((value(&metrics, "ergon_energy_unattributed_joules", &counter) - report.unattributed.get()).abs() < 1e-9);

    // Raft: every node knows the leader and has applied the update.
    for node in cluster.up() {
        let n = node.to_string();
        assert_eq!(value(&metrics, "ergon_raft_leader", &[("node", &n)]), leader as f64, "node {n}");
        assert!(value(&metrics, "ergon_raft_term", &[("node", &n)]) >= 1.0);
        assert!(value(&metrics, "ergon_raft_applied_index", &[("node", &n)]) >= value(&metrics, "ergon_raft_commit_index", &[("node", &n)]) - 1.0);
        assert_eq!(value(&metrics, "ergon_worker_pool_workers", &[("node", &n)]), env.config().worker_pool.settings.initial as f64);
        for peer in cluster.up().into_iter().filter(|p| *p != node) {
            let phi = value(&metrics, "ergon_phi", &[("node", &n), ("peer", &peer.to_string())]);
            assert!((0.0..8.0).contains(&phi), "node {n} suspects {peer} at {phi}");
        }
    }

    // The Grafana dashboard shipped in examples/ asks only for what is served.
    let dashboard = include_str!("../../examples/grafana/ergon-dashboard.json");
    let samples: std::collections::BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| if kind == "counter" { format!("{name}_total") } else { name.to_owned() })
        .collect();
    let mut asked = 0;
    for expr in dashboard.split("\"expr\": \"").skip(1).map(|rest| rest.split('"').next().unwrap()) {
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("ergon_")) {
            assert!(samples.contains(name), "the dashboard asks for {name}, which is not served: {samples:?}");
            asked += 1;
        }
    }
    assert!(asked >= 18, "{asked} metric references in the dashboard");

    // Anything but GET /metrics is refused; a connection that sends nothing blocks no one.
    let idle = TcpStream::connect(server.address()).unwrap();
    assert_eq!(get(server.address(), "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(http(server.address(), "POST /metrics HTTP/1.1\r\nHost: e\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").0, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = http(server.address(), "HEAD /metrics HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    assert!(http(server.address(), "GARBAGE\r\n\r\n").0.starts_with("HTTP/1.1 400"), "a malformed request is answered 400");
    drop(idle);
    let address = server.address();
    drop(server);
    assert!(TcpStream::connect(address).is_err(), "dropping the server stops it");
}
