//! Reading the small text files of sysfs, with errors that name the file and the problem.

use std::io::{ErrorKind, Read};
use std::path::Path;

use super::powercap::unreadable;
use super::CounterError;

/// More than any sysfs attribute holds (a page).
const MAX_BYTES: u64 = 4096;

/// Reads a sysfs attribute: a regular file (so that a FIFO or a device planted in its place cannot
/// hang the reader) of at most a page.
pub(super) fn read_text(path: &Path) -> Result<String, CounterError> {
    match read_bounded(path) {
        Ok(bytes) => String::from_utf8(bytes).map(|s| s.trim().to_owned()).map_err(|e| CounterError::Garbage {
            path: path.to_owned(),
            contents: String::from_utf8_lossy(&e.into_bytes()[..]).chars().take(64).collect(),
            why: "; it is not UTF-8".into(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(CounterError::Missing { path: path.to_owned(), why: "no such file".into() })
        }
        Err(e) => Err(unreadable(path, &e)),
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(std::io::Error::new(ErrorKind::InvalidData, format!("longer than {MAX_BYTES} bytes")));
    }
    Ok(bytes)
}

pub(super) fn read_number(path: &Path) -> Result<u64, CounterError> {
    let text = read_text(path)?;
    text.parse().map_err(|_| CounterError::Garbage { path: path.to_owned(), contents: text.chars().take(64).collect(), why: String::new() })
}


/// A CPU list as sysfs writes it (`0`, `0,18`, `0-3,8-11`).
pub(super) fn read_cpu_list(path: &Path) -> Result<Vec<usize>, CounterError> {
    let text = read_text(path)?;
    parse_cpu_list(&text).ok_or_else(|| CounterError::Garbage {
        path: path.to_owned(),
        contents: text.chars().take(64).collect(),
        why: format!("; it is not a CPU list (of CPUs numbered below {MAX_CPUS})"),
    })
}

/// The most CPUs Linux numbers (`CONFIG_NR_CPUS` is at most 8192): a list naming more is garbage,
/// and this bounds what parsing one may allocate.
const MAX_CPUS: usize = 8192;

fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi): (usize, usize) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if lo > hi || hi >= MAX_CPUS || cpus.len() + (hi - lo) >= MAX_CPUS {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0,18\n"), Some(vec![0, 18]));
        assert_eq!(parse_cpu_list("0-2,8-9"), Some(vec![0, 1, 2, 8, 9]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("zero"), None);
        // Hostile lists are garbage, not an allocation of their size.
        assert_eq!(parse_cpu_list("0-18446744073709551615"), None);
        assert_eq!(parse_cpu_list("0-100000000"), None);
        assert_eq!(parse_cpu_list(&"0-4000,".repeat(3)), None, "more CPUs than Linux numbers");
        assert_eq!(parse_cpu_list("0-8191").map(|c| c.len()), Some(8192));
    }
}
