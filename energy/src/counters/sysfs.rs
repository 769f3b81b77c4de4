//! Reading the small text files of sysfs, with errors that name the file and the problem.

use std::io::ErrorKind;
use std::path::Path;

use super::powercap::unreadable;
use super::CounterError;

pub(super) fn read_text(path: &Path) -> Result<String, CounterError> {
    match std::fs::read(path) {
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
        why: "; it is not a CPU list".into(),
    })
}

fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
                if lo > hi {
                    return None;
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(part.parse().ok()?),
        }
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
    }
}
