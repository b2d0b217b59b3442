//! CPU count: the kernel's `online` range list when present, else the `processor` entries of `/proc/cpuinfo`.

use crate::sysroot::{DetectError, SysRoot};

const ONLINE: &str = "sys/devices/system/cpu/online";
const CPUINFO: &str = "proc/cpuinfo";

/// Logical CPUs online on the machine.
pub fn cpus(root: &SysRoot) -> Result<u32, DetectError> {
    if let Some(text) = root.read_if_exists(ONLINE)? {
        return parse_online(&text).ok_or_else(|| DetectError::Parse {
            path: root.path(ONLINE),
            what: format!("not a cpu range list: {:?}", text.trim()),
        });
    }
    let text = root.read(CPUINFO)?;
    match count_processors(&text) {
        0 => Err(DetectError::Parse {
            path: root.path(CPUINFO),
            what: "no processor entries".to_string(),
        }),
        n => Ok(n),
    }
}

/// Counts the CPUs of a kernel range list such as "0-3,5,7-8" (7). `None` when malformed or empty.
fn parse_online(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = 0u32;
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (
                lo.trim().parse::<u32>().ok()?,
                hi.trim().parse::<u32>().ok()?,
            ),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if hi < lo {
            return None;
        }
        total = total.checked_add(hi - lo + 1)?;
    }
    Some(total)
}

/// Number of "processor : N" lines in `/proc/cpuinfo` text.
fn count_processors(text: &str) -> u32 {
    let n = text
        .lines()
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(key, _)| key.trim() == "processor")
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_range_list() {
        assert_eq!(parse_online("0-3,5,7-8\n"), Some(7));
        assert_eq!(parse_online("0"), Some(1));
        assert_eq!(parse_online("0-1"), Some(2));
        assert_eq!(parse_online(""), None);
        assert_eq!(parse_online("3-1"), None);
        assert_eq!(parse_online("0-x"), None);
    }

    #[test]
    fn cpuinfo_processors() {
        let text = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        assert_eq!(count_processors(text), 2);
        // ARM's "Processor" header line is not a CPU entry.
        assert_eq!(
            count_processors("Processor\t: AArch64\nprocessor\t: 0\n"),
            1
        );
    }
}
