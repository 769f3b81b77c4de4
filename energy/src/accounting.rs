//! What a joule charged to a budget means.

use serde::{Deserialize, Serialize};

/// How the gate turns a run into joules charged to its actor's budget.
///
/// - **Tutorial** (the default, the reference design's story): each operation's base cost is the
///   constant the actor declares (10 J a join, 25 J an update), plus what the per-message meter
///   measured. The constants dwarf the measurement; budgets are story units that happen to be
///   called joules.
/// - **Physical**: each operation's base cost is the measured fixed cost of passing the gate, and
///   where the machine's counter is sampled, every actor's budget is corrected, when a window
///   closes, to its attributed share of what the counter measured. Over a run the budgets add up
///   to the counter's reading minus what no actor ran, so a budget of 1 J is a joule the machine
///   spent.
///
/// ```
/// use energy::Accounting;
/// assert_eq!("physical".parse::<Accounting>(), Ok(Accounting::Physical));
/// assert_eq!(Accounting::default().to_string(), "tutorial");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accounting {
    /// Declared constants plus the meter.
    #[default]
    Tutorial,
    /// The gate's measured fixed cost plus the meter, corrected to the machine's counter.
    Physical,
}

impl Accounting {
    /// The name in configuration files and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Accounting::Tutorial => "tutorial",
            Accounting::Physical => "physical",
        }
    }
}

impl std::fmt::Display for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not an accounting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an accounting; use \"tutorial\" or \"physical\"")]
pub struct NotAnAccounting(pub String);

impl std::str::FromStr for Accounting {
    type Err = NotAnAccounting;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tutorial" => Ok(Accounting::Tutorial),
            "physical" => Ok(Accounting::Physical),
            other => Err(NotAnAccounting(other.to_owned())),
        }
    }
}
