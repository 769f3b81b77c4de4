//! The failure detector's decisions, apart from its actor: per peer phi, when a peer becomes
//! failed or is heard again, whether it led when it went silent, and how long to wait after a
//! check that could not be paid for. Times are the caller's ([`Duration`]s since an epoch it
//! chooses), so a test drives it through hours of heartbeats in microseconds.
//!
//! The caller feeds it heartbeats ([`Detector::heartbeat`]) and what it knows of leaders
//! ([`Detector::led`]), asks it which peers to check ([`Detector::due`]), checks them
//! ([`Detector::check`]: the decision, and a [`Change`] when a peer failed or came back), and
//! says how each check it asked for ended ([`Detector::answered`]).
//!
//! ```
//! use std::time::Duration;
//! use cluster::detector::{Change, Detector, DetectorConfig};
//!
//! let s = Duration::from_secs;
//! let mut detector = Detector::new(1, &[1, 2], DetectorConfig::default(), s(0));
//! for t in 1..=30 {
//!     detector.heartbeat(2, s(t), false);
//! }
//! assert!(detector.due(s(31)).is_empty(), "node 2 beats on time");
//! assert_eq!(detector.due(s(40)), [2], "silent for 10 s");
//! assert!(matches!(detector.check(2, s(40)).unwrap().change, Some(Change::Failed { .. })));
//! detector.answered(2, false, s(40));
//! detector.heartbeat(2, s(41), false);
//! assert!(matches!(detector.check(2, s(41)).unwrap().change, Some(Change::Rejoined { .. })));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::phi::{PhiAccrual, PhiConfig};
use crate::NodeId;

/// How the detector decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Phi-accrual's settings, and its threshold.
    pub phi: PhiConfig,
    /// How often peers send heartbeats.
    pub heartbeat: Duration,
    /// After a check refused for want of energy, how many heartbeat intervals to wait before the
    /// next automatic one: asking ten times a beat would only fill the audit log with refusals.
    pub back_off_beats: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig { phi: PhiConfig::default(), heartbeat: Duration::from_secs(1), back_off_beats: 10 }
    }
}

/// How the detector sees one peer now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerState {
    /// Whether it counts as alive (never declared failed, or heard again since).
    pub alive: bool,
    /// Its phi.
    pub phi: f64,
    /// Time since its last heartbeat.
    pub silent: Duration,
}

/// A change a check found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The peer is silent past the threshold: it is failed from now on.
    Failed {
        /// It was the leader when it went silent, as far as this node knew.
        was_leader: bool,
        /// Time since its last heartbeat.
        silent: Duration,
        /// Its phi.
        phi: f64,
        /// The threshold it crossed.
        threshold: f64,
    },
    /// A failed peer is heard again.
    Rejoined {
        /// How long it counted as failed.
        after: Duration,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Failed { silent, phi, threshold, .. } => {
                write!(f, "no heartbeat for {} ms: phi {phi:.1} >= {threshold}", silent.as_millis())
            }
            Change::Rejoined { after } => write!(f, "heard again {} ms after it was declared failed", after.as_millis()),
        }
    }
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked {
    /// The peer as it is now (after the change, if any).
    pub state: PeerState,
    /// What changed, if anything.
    pub change: Option<Change>,
}

/// The node checked is not a peer of this detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node {node} is not a peer of node {me}")]
pub struct NotAPeer {
    /// The node asked about.
    pub node: NodeId,
    /// This detector's node.
    pub me: NodeId,
}

/// One peer as the detector follows it.
#[derive(Debug, Clone)]
struct Watch {
    phi: PhiAccrual,
    /// Since when it counts as failed.
    failed_since: Option<Duration>,
    /// A check the detector asked for has not been answered yet.
    check_pending: bool,
    /// No automatic check before this.
    quiet_until: Duration,
}

/// One node's view of its peers' liveness. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Detector {
    me: NodeId,
    config: DetectorConfig,
    peers: BTreeMap<NodeId, Watch>,
    /// When each node was last known to lead: a node that led when it went silent is a lost
    /// leader even if the cluster has moved on since.
    last_led: BTreeMap<NodeId, Duration>,
}

impl Detector {
    /// The detector of node `me`, watching every other node of `nodes`; each counts as heard at
    /// `now`, so one that never speaks is detected too.
    pub fn new(me: NodeId, nodes: &[NodeId], config: DetectorConfig, now: Duration) -> Self {
        let peers = nodes
            .iter()
            .filter(|&&n| n != me)
            .map(|&n| {
                let mut phi = PhiAccrual::new(config.phi);
                phi.heartbeat(now);
                (n, Watch { phi, failed_since: None, check_pending: false, quiet_until: Duration::ZERO })
            })
            .collect();
        Detector { me, config, peers, last_led: BTreeMap::new() }
    }

    /// Watches exactly the nodes of `nodes` other than this one from now on: a node added is
    /// watched as if heard at `now`, a node removed is forgotten.
    pub fn set_peers(&mut self, nodes: &[NodeId], now: Duration) {
        self.peers.retain(|id, _| nodes.contains(id));
        self.last_led.retain(|id, _| nodes.contains(id));
        for &n in nodes.iter().filter(|&&n| n != self.me) {
            self.peers.entry(n).or_insert_with(|| {
                let mut phi = PhiAccrual::new(self.config.phi);
                phi.heartbeat(now);
                Watch { phi, failed_since: None, check_pending: false, quiet_until: Duration::ZERO }
            });
        }
    }

    /// The settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The peers, in order.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// A heartbeat from `from` arrived at `now`; `leads` if it reports itself the leader. False
    /// if `from` is not a peer.
    pub fn heartbeat(&mut self, from: NodeId, now: Duration, leads: bool) -> bool {
        let Some(watch) = self.peers.get_mut(&from) else { return false };
        // A heartbeat that ends a silence past the threshold is not learned (PhiAccrual, as
        // Akka's): the history stays what it was, and a later crash is detected as fast as before.
        watch.phi.heartbeat(now);
        if leads {
            self.last_led.insert(from, now);
        }
        true
    }

    /// This node knew `leader` to lead at `now`.
    pub fn led(&mut self, leader: NodeId, now: Duration) {
        self.last_led.insert(leader, now);
    }

    /// The peers to check now: silent past the threshold and not yet failed, or failed and heard
    /// again; none with a check already asked for, none backing off. Each is marked as asked for.
    pub fn due(&mut self, now: Duration) -> Vec<NodeId> {
        let threshold = self.config.phi.threshold;
        self.peers
            .iter_mut()
            .filter(|(_, w)| !w.check_pending && now >= w.quiet_until)
            .filter(|(_, w)| (w.phi.phi(now) >= threshold) != w.failed_since.is_some())
            .map(|(&node, w)| {
                w.check_pending = true;
                node
            })
            .collect()
    }

    /// A check asked for by [`due`](Self::due) has been answered; `refused_for_energy` if the
    /// check could not be paid for, after which automatic checks of the peer wait.
    pub fn answered(&mut self, node: NodeId, refused_for_energy: bool, now: Duration) {
        if let Some(watch) = self.peers.get_mut(&node) {
            watch.check_pending = false;
            if refused_for_energy {
                watch.quiet_until = now + self.config.heartbeat * self.config.back_off_beats;
            }
        }
    }

    /// Checks `node` at `now`: records it failed if it is silent past the threshold, alive again
    /// if it was failed and is heard again, and says which.
    pub fn check(&mut self, node: NodeId, now: Duration) -> Result<Checked, NotAPeer> {
        let heartbeat = self.config.heartbeat;
        let threshold = self.config.phi.threshold;
        let led_until = self.last_led.get(&node).copied();
        let watch = self.peers.get_mut(&node).ok_or(NotAPeer { node, me: self.me })?;
        let phi = watch.phi.phi(now);
        let last_heard = watch.phi.last_heartbeat().unwrap_or_default();
        let silent = now.saturating_sub(last_heard);
        let change = match (watch.failed_since, phi >= threshold) {
            (None, true) => {
                watch.failed_since = Some(now);
                let was_leader = led_until.is_some_and(|t| t + heartbeat >= last_heard);
                Some(Change::Failed { was_leader, silent, phi, threshold })
            }
            (Some(since), false) => {
                watch.failed_since = None;
                Some(Change::Rejoined { after: now.saturating_sub(since) })
            }
            _ => None,
        };
        Ok(Checked { state: PeerState { alive: watch.failed_since.is_none(), phi, silent }, change })
    }

    /// How the detector sees `node` at `now`, if it is a peer.
    pub fn state(&self, node: NodeId, now: Duration) -> Option<PeerState> {
        let watch = self.peers.get(&node)?;
        let silent = watch.phi.last_heartbeat().map_or(Duration::ZERO, |t| now.saturating_sub(t));
        Some(PeerState { alive: watch.failed_since.is_none(), phi: watch.phi.phi(now), silent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_secs(1);
    const SWEEP: Duration = Duration::from_millis(100);

    /// Beats from node 2 every second from `from` for `beats` beats; answers the last one's time.
    fn beat(detector: &mut Detector, from: Duration, beats: u32) -> Duration {
        let mut now = from;
        for _ in 0..beats {
            now += BEAT;
            assert!(detector.heartbeat(2, now, false));
            assert!(detector.due(now).is_empty(), "a peer beating on time is not checked");
        }
        now
    }

    /// Sweeps every 100 ms after `last` until node 2 is due, checks it and answers the check;
    /// answers how long after `last` it was found failed.
    fn detection_after(detector: &mut Detector, last: Duration) -> Duration {
        let mut now = last;
        loop {
            now += SWEEP;
            assert!(now - last < Duration::from_secs(3_600), "never detected");
            if detector.due(now) == [2] {
                let checked = detector.check(2, now).unwrap();
                detector.answered(2, false, now);
                assert!(matches!(checked.change, Some(Change::Failed { .. })), "{checked:?}");
                return now - last;
            }
        }
    }

    #[test]
    fn a_crash_after_a_healed_long_partition_is_detected_as_fast_as_before_it() {
        let mut detector = Detector::new(1, &[1, 2], DetectorConfig::default(), Duration::ZERO);
        let last = beat(&mut detector, Duration::ZERO, 300);
        let before = detection_after(&mut detector, last);
        // Akka's defaults: mean 1 s + pause 3 s + about 5 standard deviations of the 100 ms floor.
        assert!((Duration::from_millis(4_300)..=Duration::from_millis(4_800)).contains(&before), "{before:?}");

        // A five-minute partition, then it heals: node 2 is heard again, and counts as rejoined.
        let healed = last + Duration::from_secs(300);
        assert!(detector.heartbeat(2, healed, false));
        assert_eq!(detector.due(healed), [2]);
        let checked = detector.check(2, healed).unwrap();
        assert!(matches!(checked.change, Some(Change::Rejoined { .. })), "{checked:?}");
        detector.answered(2, false, healed);

        // A thousand beats later (the history's length), and right after the heal, a crash is
        // detected in the same time as before the partition.
        for beats in [1, 10, 1_000] {
            let mut again = detector.clone();
            let last = beat(&mut again, healed, beats);
            let after = detection_after(&mut again, last);
            assert_eq!(after, before, "{beats} beats after the heal: {after:?}, before the partition {before:?}");
        }
    }

    #[test]
    fn a_check_refused_for_energy_backs_off_ten_beats() {
        let config = DetectorConfig { heartbeat: Duration::from_millis(50), ..DetectorConfig::default() };
        let mut detector = Detector::new(1, &[1, 2], config, Duration::ZERO);
        // Silent from the start; sweep every 5 ms for 1 s, every check refused.
        let mut asked = Vec::new();
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(11) {
            now += Duration::from_millis(5);
            for node in detector.due(now) {
                asked.push(now);
                detector.answered(node, true, now);
            }
        }
        assert!(asked.len() >= 2, "{asked:?}");
        assert!(asked.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(500)), "{asked:?}");
        assert!(asked.windows(2).all(|w| w[1] - w[0] <= Duration::from_millis(505)), "{asked:?}");
    }

    #[test]
    fn one_check_at_a_time_per_peer_and_none_for_strangers() {
        let mut detector = Detector::new(1, &[1, 2, 3], DetectorConfig::default(), Duration::ZERO);
        let late = Duration::from_secs(10);
        assert_eq!(detector.due(late), [2, 3]);
        assert!(detector.due(late).is_empty(), "asked for already");
        detector.answered(2, false, late);
        assert_eq!(detector.due(late), [2], "answered without deciding: asked again");
        assert_eq!(detector.check(9, late), Err(NotAPeer { node: 9, me: 1 }));
        assert!(!detector.heartbeat(9, late, false));
    }

    #[test]
    fn peers_follow_the_membership() {
        let mut detector = Detector::new(1, &[1, 2, 3], DetectorConfig::default(), Duration::ZERO);
        let now = Duration::from_secs(5);
        detector.set_peers(&[1, 3, 4], now);
        assert_eq!(detector.peers().collect::<Vec<_>>(), [3, 4]);
        assert!(!detector.heartbeat(2, now, false), "a removed node is not watched");
        assert!(detector.due(now + SWEEP).iter().all(|&n| n != 4), "a new node counts as heard when added");
        assert_eq!(detector.due(now + Duration::from_secs(10)), [3, 4]);
    }

    #[test]
    fn a_peer_that_led_when_it_went_silent_is_a_lost_leader() {
        let mut detector = Detector::new(1, &[1, 2, 3], DetectorConfig::default(), Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..10 {
            now += BEAT;
            detector.heartbeat(2, now, true);
            detector.heartbeat(3, now, false);
        }
        let late = now + Duration::from_secs(10);
        let failed = |c: Checked| match c.change {
            Some(Change::Failed { was_leader, .. }) => was_leader,
            other => panic!("{other:?}"),
        };
        assert!(failed(detector.check(2, late).unwrap()));
        assert!(!failed(detector.check(3, late).unwrap()));
    }
}
