//! Alerts when a budget runs low.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{EnergyBudget, Joules};

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertLevel {
    /// Usage fell back below a threshold (a refill or a top-up).
    Info,
    /// Usage crossed the warning threshold.
    Warning,
    /// Usage crossed the critical threshold.
    Critical,
}

impl AlertLevel {
    /// Its name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Info => "info",
            AlertLevel::Warning => "warning",
            AlertLevel::Critical => "critical",
        }
    }
}

/// Fractions of a budget's total at which the monitor raises alerts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Warning at this fraction used (0.8 by default).
    pub warning: f64,
    /// Critical at this fraction used (0.95 by default).
    pub critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { warning: 0.8, critical: 0.95 }
    }
}

impl Thresholds {
    /// An explanation of what is wrong, if the thresholds are not `0 < warning < critical ≤ 1`.
    pub fn problem(&self) -> Option<String> {
        let ok = self.warning > 0.0 && self.warning < self.critical && self.critical <= 1.0;
        (!ok).then(|| {
            format!(
                "alert thresholds must satisfy 0 < warning < critical <= 1, got warning = {} and critical = {}",
                self.warning, self.critical
            )
        })
    }

    fn level(&self, used_fraction: f64) -> Option<AlertLevel> {
        if used_fraction >= self.critical {
            Some(AlertLevel::Critical)
        } else if used_fraction >= self.warning {
            Some(AlertLevel::Warning)
        } else {
            None
        }
    }
}

/// One alert, with the budget's state when it was raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyAlert {
    /// Severity.
    pub level: AlertLevel,
    /// Fraction of the total used.
    pub used_fraction: f64,
    /// Energy left.
    pub remaining: Joules,
    /// The budget's total.
    pub total: Joules,
    /// A sentence for people.
    pub message: String,
}

/// Watches a budget and raises an alert each time its usage crosses a threshold.
///
/// Alerts are edge-triggered: crossing 80% raises one warning, not one per message after it.
/// Falling back below a threshold, by at least [`HYSTERESIS`] of the total, raises an `Info`
/// alert, and a later crossing alerts again; so a power-capped budget that hovers at a threshold,
/// spending what it regains, alerts once, not at every refill.
#[derive(Debug, Clone)]
pub struct EnergyMonitor {
    thresholds: Thresholds,
    current: Option<AlertLevel>,
    recent: VecDeque<EnergyAlert>,
}

/// How far below a threshold usage must fall before it counts as fallen.
pub const HYSTERESIS: f64 = 0.05;

/// Alerts kept for [`EnergyMonitor::recent`]; older ones have already gone to `tracing` and the
/// audit log.
const RECENT_ALERTS: usize = 64;

impl EnergyMonitor {
    /// A monitor that has seen no usage yet.
    pub fn new(thresholds: Thresholds) -> Self {
        EnergyMonitor { thresholds, current: None, recent: VecDeque::new() }
    }

    /// Looks at the budget after a change; returns the alert if a threshold was crossed.
    pub fn observe(&mut self, budget: &EnergyBudget) -> Option<EnergyAlert> {
        let used = budget.used_fraction();
        let mut level = self.thresholds.level(used);
        if level < self.current {
            level = self.thresholds.level(used + HYSTERESIS).min(self.current).max(level);
        }
        if level == self.current {
            return None;
        }
        let rising = level > self.current;
        self.current = level;
        let (alert_level, what) = match (rising, level) {
            (true, Some(AlertLevel::Critical)) => (AlertLevel::Critical, "critical energy usage"),
            (true, _) => (AlertLevel::Warning, "high energy usage"),
            (false, _) => (AlertLevel::Info, "energy usage back below threshold"),
        };
        let alert = EnergyAlert {
            level: alert_level,
            used_fraction: used,
            remaining: budget.remaining(),
            total: budget.total(),
            message: format!(
                "{what}: {:.1}% of the budget used, {:.3} of {:.3} left",
                used * 100.0,
                budget.remaining(),
                budget.total()
            ),
        };
        if self.recent.len() == RECENT_ALERTS {
            self.recent.pop_front();
        }
        self.recent.push_back(alert.clone());
        Some(alert)
    }

    /// The most recent alerts, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &EnergyAlert> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(budget: &mut EnergyBudget, joules: f64) {
        let j = Joules::new(joules).unwrap();
        let hold = budget.reserve(j).unwrap();
        budget.settle(hold, j);
    }

    #[test]
    fn warns_at_80_percent_and_goes_critical_at_95_once_each() {
        let mut budget = EnergyBudget::new(Joules::new(100.0).unwrap());
        let mut monitor = EnergyMonitor::new(Thresholds::default());
        let mut levels = Vec::new();
        for _ in 0..100 {
            spend(&mut budget, 1.0);
            levels.extend(monitor.observe(&budget).map(|a| (a.level, budget.used().get())));
        }
        assert_eq!(levels, vec![(AlertLevel::Warning, 80.0), (AlertLevel::Critical, 95.0)]);
    }

    #[test]
    fn just_below_the_threshold_is_quiet() {
        let mut budget = EnergyBudget::new(Joules::new(100.0).unwrap());
        let mut monitor = EnergyMonitor::new(Thresholds::default());
        spend(&mut budget, 79.99);
        assert_eq!(monitor.observe(&budget), None);
    }

    #[test]
    fn recovery_is_info_and_a_new_crossing_alerts_again() {
        let mut budget = EnergyBudget::new(Joules::new(100.0).unwrap());
        let mut monitor = EnergyMonitor::new(Thresholds::default());
        spend(&mut budget, 96.0);
        assert_eq!(monitor.observe(&budget).unwrap().level, AlertLevel::Critical);
        budget.top_up(Joules::new(400.0).unwrap());
        assert_eq!(monitor.observe(&budget).unwrap().level, AlertLevel::Info);
        spend(&mut budget, 320.0);
        let again = monitor.observe(&budget).unwrap();
        assert_eq!(again.level, AlertLevel::Warning);
        assert!(again.message.contains("83.2%"), "{}", again.message);
        assert_eq!(monitor.recent().count(), 3);
    }

    #[test]
    fn a_power_cap_hovering_at_a_threshold_alerts_once() {
        let t0 = std::time::Instant::now();
        let mut budget = EnergyBudget::with_refill(Joules::new(100.0).unwrap(), crate::Watts::new(1.0).unwrap(), t0);
        let mut monitor = EnergyMonitor::new(Thresholds::default());
        spend(&mut budget, 96.0);
        let mut levels: Vec<AlertLevel> = monitor.observe(&budget).map(|a| a.level).into_iter().collect();
        // Regains 2 J, spends them again, a hundred times: usage moves between 94% and 96%.
        for i in 1..=100u64 {
            budget.refill(t0 + std::time::Duration::from_secs(2 * i));
            levels.extend(monitor.observe(&budget).map(|a| a.level));
            spend(&mut budget, 2.0);
            levels.extend(monitor.observe(&budget).map(|a| a.level));
        }
        assert_eq!(levels, [AlertLevel::Critical]);
        // Falling clearly below (by the hysteresis) counts.
        budget.refill(t0 + std::time::Duration::from_secs(1000));
        assert_eq!(monitor.observe(&budget).unwrap().level, AlertLevel::Info);
    }

    #[test]
    fn threshold_problems_are_named() {
        assert!(Thresholds::default().problem().is_none());
        let bad = Thresholds { warning: 0.9, critical: 0.5 };
        assert!(bad.problem().unwrap().contains("warning = 0.9"));
    }
}
