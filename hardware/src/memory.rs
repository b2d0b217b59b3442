//! Memory size: `MemTotal` from `/proc/meminfo`, in MiB.

use crate::sysroot::{DetectError, SysRoot};

const MEMINFO: &str = "proc/meminfo";

/// Total memory in MiB.
pub fn memory_mb(root: &SysRoot) -> Result<u64, DetectError> {
    let text = root.read(MEMINFO)?;
    mem_total_kib(&text)
        .map(|kib| kib / 1024)
        .ok_or_else(|| DetectError::Parse {
            path: root.path(MEMINFO),
            what: "no MemTotal line in kB".to_string(),
        })
}

/// The `MemTotal:  24683656 kB` value in KiB.
fn mem_total_kib(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let value = words.next()?.parse::<u64>().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total() {
        assert_eq!(
            mem_total_kib("MemTotal:       24683656 kB\nMemFree: 1 kB\n"),
            Some(24683656)
        );
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_kib("MemTotal: lots kB\n"), None);
    }
}
