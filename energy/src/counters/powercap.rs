//! RAPL through Linux's powercap sysfs tree.
//!
//! Each RAPL domain is a zone directory under `/sys/class/powercap`: packages `intel-rapl:N`, their
//! subzones `intel-rapl:N:M` (`core`, `uncore`, `dram`), the platform zone (`psys`, on some
//! machines a top-level `intel-rapl:N` of its own) and the MMIO interface `intel-rapl-mmio:N`. A
//! zone holds `name`, `energy_uj` (microjoules, wrapping to 0 after `max_energy_range_uj`) and
//! `max_energy_range_uj`. The root is configurable, so tests run on trees they build.
//!
//! Since CVE-2020-8694 (Platypus) `energy_uj` is readable by root only; [`CounterError::Unreadable`]
//! says how to grant read access.
//!
//! ```
//! use energy::counters::powercap::wrap_delta;
//! // The counter wrapped at 1000 between two readings.
//! assert_eq!(wrap_delta(900, 100, 1000), 200);
//! ```

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::sysfs::{read_number, read_text};
use super::{CounterError, EnergyCounter};
use crate::{Joules, Source};

/// Where Linux puts the powercap tree.
pub const DEFAULT_ROOT: &str = "/sys/class/powercap";

/// One RAPL domain: a package, its `core`, `uncore` and `dram` subzones, the platform (`psys`),
/// or one of these through the MMIO interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zone {
    /// Its directory name (`intel-rapl:0:1`).
    pub id: String,
    /// What it measures (`package-0`, `core`, `dram`, `psys`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Where `energy_uj` wraps.
    pub max_range_uj: u64,
}

impl Zone {
    /// The zone it is a part of (`intel-rapl:0` for `intel-rapl:0:1`).
    pub fn parent(&self) -> Option<&str> {
        parent_of(&self.id)
    }

    /// Reads `energy_uj`.
    pub fn read_uj(&self) -> Result<u64, CounterError> {
        let value = read_number(&self.dir.join("energy_uj"))?;
        if value > self.max_range_uj {
            return Err(CounterError::Garbage {
                path: self.dir.join("energy_uj"),
                contents: value.to_string(),
                why: format!("; it is above max_energy_range_uj ({})", self.max_range_uj),
            });
        }
        Ok(value)
    }
}

/// The zone that zone `id` is a part of (`intel-rapl:0` for `intel-rapl:0:1`), if it is a subzone.
pub fn parent_of(id: &str) -> Option<&str> {
    let (parent, _) = id.rsplit_once(':')?;
    parent.contains(':').then_some(parent)
}

/// A zone directory's id, and the zone or why it could not be described.
pub type Found = (String, Result<Zone, CounterError>);

/// Every RAPL zone under `root`, in order (`intel-rapl:2` before `intel-rapl:10`), each with the
/// reason it could not be described if it could not. Subzones are found both where
/// `/sys/class/powercap` lists them (beside their package) and inside their package's directory
/// (where the device tree keeps them), once each. A missing root is an error: this machine (or
/// kernel) has no powercap RAPL.
pub fn discover(root: &Path) -> Result<Vec<Found>, CounterError> {
    let entries = std::fs::read_dir(root).map_err(|e| match e.kind() {
        ErrorKind::NotFound => CounterError::Missing {
            path: root.to_owned(),
            why: "no powercap tree (not Linux, or the intel_rapl_common driver is not loaded)".into(),
        },
        _ => unreadable(root, &e),
    })?;
    let mut dirs: std::collections::BTreeMap<(bool, Vec<u32>), (String, PathBuf)> = Default::default();
    let mut pending: Vec<(String, PathBuf)> = zone_dirs(entries).map(|id| (id.clone(), root.join(id))).collect();
    while let Some((id, dir)) = pending.pop() {
        let Some(key) = order(&id) else { continue };
        if dirs.contains_key(&key) {
            continue;
        }
        // A package's subzones inside it; nothing nests deeper than a subzone.
        if key.1.len() == 1 {
            if let Ok(children) = std::fs::read_dir(&dir) {
                let prefix = format!("{id}:");
                pending.extend(zone_dirs(children).filter(|c| c.starts_with(&prefix)).map(|c| (c.clone(), dir.join(c))));
            }
        }
        dirs.insert(key, (id, dir));
    }
    Ok(dirs.into_values().map(|(id, dir)| (id.clone(), describe(&id, &dir))).collect())
}

/// The names in a directory listing that are RAPL zones (`intel-rapl:0`, `intel-rapl-mmio:0`;
/// not the control type `intel-rapl`).
fn zone_dirs(entries: std::fs::ReadDir) -> impl Iterator<Item = String> {
    entries.filter_map(|entry| entry.ok()).filter_map(|entry| {
        let id = entry.file_name().to_str()?.to_owned();
        let is_zone = (id.starts_with("intel-rapl:") || id.starts_with("intel-rapl-mmio:")) && order(&id).is_some();
        is_zone.then_some(id)
    })
}

/// Sort key: MMIO after MSR zones, then by the numbers in the id.
fn order(id: &str) -> Option<(bool, Vec<u32>)> {
    let (kind, numbers) = id.split_once(':')?;
    let numbers = numbers.split(':').map(|n| n.parse().ok()).collect::<Option<Vec<u32>>>()?;
    Some((kind == "intel-rapl-mmio", numbers))
}

fn describe(id: &str, dir: &Path) -> Result<Zone, CounterError> {
    let name = read_text(&dir.join("name"))?;
    let max_range_uj = read_number(&dir.join("max_energy_range_uj"))?;
    Ok(Zone { id: id.to_owned(), name, dir: dir.to_owned(), max_range_uj })
}

/// The error for a file that exists but cannot be read, with what to do about it.
pub fn unreadable(path: &Path, e: &std::io::Error) -> CounterError {
    let why = if e.kind() == ErrorKind::PermissionDenied {
        format!(
            "{e}: since CVE-2020-8694, energy_uj is readable by root only; run as root, or grant read \
             access with `sudo chmod a+r {}/intel-rapl:*/energy_uj` (until reboot) or a udev rule",
            path.parent().and_then(Path::parent).map_or(DEFAULT_ROOT.into(), |p| p.display().to_string())
        )
    } else {
        e.to_string()
    };
    CounterError::Unreadable { path: path.to_owned(), why }
}

/// The energy between two readings of a counter that wraps to 0 after `max_range`, assuming it
/// wrapped at most once.
pub fn wrap_delta(last: u64, now: u64, max_range: u64) -> u64 {
    if now >= last {
        now - last
    } else {
        max_range.saturating_sub(last) + now
    }
}

/// One zone's energy since it was opened, across wraparounds.
#[derive(Debug)]
pub struct PowercapCounter {
    name: String,
    zone: Zone,
    last: u64,
    total_uj: u128,
}

impl PowercapCounter {
    /// Opens `zone`, reading its counter once.
    pub fn open(zone: Zone) -> Result<Self, CounterError> {
        let last = zone.read_uj()?;
        Ok(PowercapCounter { name: format!("powercap:{} ({})", zone.id, zone.name), zone, last, total_uj: 0 })
    }

    /// The zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }
}

impl EnergyCounter for PowercapCounter {
    fn name(&self) -> &str {
        &self.name
    }

    fn source(&self) -> Source {
        Source::Rapl
    }

    fn read(&mut self) -> Result<Joules, CounterError> {
        let now = self.zone.read_uj()?;
        self.total_uj += u128::from(wrap_delta(self.last, now, self.zone.max_range_uj));
        self.last = now;
        Ok(Joules::new(self.total_uj as f64 / 1e6).unwrap_or(Joules::ZERO))
    }
}

/// The zones whose sum is the machine's energy, as far as RAPL sees it: the platform zone
/// (`psys`) alone when there is one, since it covers everything else; otherwise every package plus
/// every DRAM subzone (a package's own figure leaves its DRAM out; its core and uncore subzones are
/// inside it). The MMIO interface reports the same packages as the MSR one, so its zones count
/// only on machines that have no other.
pub fn machine_zones(zones: &[Zone]) -> Vec<&Zone> {
    if let Some(psys) = zones.iter().find(|z| z.name == "psys") {
        return vec![psys];
    }
    let counted = |mmio: bool| -> Vec<&Zone> {
        zones
            .iter()
            .filter(|z| z.id.starts_with("intel-rapl-mmio:") == mmio)
            .filter(|z| {
                let package = z.parent().is_none() && z.name.starts_with("package");
                let dram = z.parent().is_some() && z.name == "dram";
                package || dram
            })
            .collect()
    };
    let msr = counted(false);
    if msr.is_empty() {
        counted(true)
    } else {
        msr
    }
}
