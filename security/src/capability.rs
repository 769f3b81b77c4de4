//! Capabilities and sets of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! capabilities {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {
        /// One authority that an operation may require.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Capability { $($(#[$doc])* $name),+ }

        impl Capability {
            /// Every capability, in declaration order.
            pub const ALL: &'static [Capability] = &[$(Capability::$name),+];

            /// The capability's name as written in configuration and logs.
            pub fn name(self) -> &'static str {
                match self { $(Capability::$name => stringify!($name)),+ }
            }
        }
    };
}

capabilities! {
    /// Admit, remove and list cluster nodes.
    NodeManagement,
    /// Connect and disconnect peers.
    ConnectionManagement,
    /// Create channels, subscribe and publish.
    BroadcastManagement,
    /// Inspect and top up energy budgets.
    EnergyManagement,
    /// Grant and revoke capabilities.
    SecurityManagement,
    /// Start elections.
    ElectionManagement,
    /// Cast votes.
    VoteManagement,
    /// Replicate state updates.
    ReplicationManagement,
    /// Read and write replicated state.
    StateManagement,
    /// Add and remove replicas.
    ReplicaManagement,
    /// Report and check failures.
    FailureDetection,
    /// Act on detected failures.
    FailureHandling,
    /// Run recoveries.
    RecoveryManagement,
    /// Register recovery strategies.
    StrategyManagement,
    /// Distribute load.
    DistributionManagement,
    /// Scale resources.
    ScalingManagement,
    /// Register resources and their metrics.
    ResourceManagement,
}

/// A string that names no capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}; known ones are {known}", known = CapSet::all())]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities, one bit each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CapSet(u32);

impl CapSet {
    /// No capabilities.
    pub const EMPTY: CapSet = CapSet(0);

    /// The set of the given capabilities (usable in `const` items).
    pub const fn of(caps: &[Capability]) -> CapSet {
        let mut bits = 0;
        let mut i = 0;
        while i < caps.len() {
            bits |= 1 << caps[i] as u32;
            i += 1;
        }
        CapSet(bits)
    }

    /// The set as bits (capability `i` is bit `i`).
    pub(crate) const fn bits(self) -> u32 {
        self.0
    }

    /// The set of these bits; bits of no capability are dropped.
    pub(crate) const fn from_bits(bits: u32) -> CapSet {
        CapSet(bits & CapSet::all().0)
    }

    /// Every capability.
    pub const fn all() -> CapSet {
        CapSet((1 << Capability::ALL.len()) - 1)
    }

    /// Whether `cap` is in the set.
    pub const fn contains(self, cap: Capability) -> bool {
        self.0 & (1 << cap as u32) != 0
    }

    /// Whether every capability of `other` is in the set.
    pub const fn contains_all(self, other: CapSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// Capabilities in either set.
    pub const fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }

    /// Capabilities in both sets.
    pub const fn intersection(self, other: CapSet) -> CapSet {
        CapSet(self.0 & other.0)
    }

    /// Capabilities in `self` but not in `other`.
    pub const fn difference(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.iter().copied().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for CapSet {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter().fold(CapSet::EMPTY, |set, c| set.union(CapSet::of(&[c])))
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, c) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(c.name())?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for CapSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // With its length, which a compact format (postcard) needs before the elements.
        s.collect_seq(self.iter().collect::<Vec<_>>())
    }
}

impl<'de> Deserialize<'de> for CapSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Capability>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    #[test]
    fn all_seventeen_capabilities_of_the_design_exist() {
        assert_eq!(Capability::ALL.len(), 17);
        assert_eq!(CapSet::all().iter().count(), 17);
        for c in Capability::ALL {
            assert_eq!(c.name().parse::<Capability>().unwrap(), *c);
        }
    }

    #[test]
    fn set_algebra() {
        let a = CapSet::of(&[NodeManagement, BroadcastManagement]);
        let b = CapSet::of(&[BroadcastManagement, EnergyManagement]);
        assert!(a.contains(NodeManagement) && !a.contains(EnergyManagement));
        assert_eq!(a.intersection(b), CapSet::of(&[BroadcastManagement]));
        assert_eq!(a.difference(b), CapSet::of(&[NodeManagement]));
        assert!(a.union(b).contains_all(a) && !a.contains_all(b));
        assert!(a.contains_all(CapSet::EMPTY));
    }

    #[test]
    fn sets_read_and_write_as_lists_of_names() {
        let a = CapSet::of(&[ResourceManagement, NodeManagement]);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"["NodeManagement","ResourceManagement"]"#);
        assert_eq!(serde_json::from_str::<CapSet>(&json).unwrap(), a);
        assert_eq!(a.to_string(), "{NodeManagement, ResourceManagement}");
        let err = serde_json::from_str::<CapSet>(r#"["Root"]"#).unwrap_err();
        assert!(err.to_string().contains("Root"), "{err}");
        let err = "Root".parse::<Capability>().unwrap_err().to_string();
        assert!(err.contains("NodeManagement"), "{err}");
    }
}
