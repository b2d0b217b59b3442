//! Host identity: hostname, kernel release, distribution (os-release) and architecture.

use crate::sysroot::{DetectError, SysRoot};

const HOSTNAME: &str = "proc/sys/kernel/hostname";
const OSRELEASE: &str = "proc/sys/kernel/osrelease";
const ARCH: &str = "proc/sys/kernel/arch";
const OS_RELEASE: &str = "etc/os-release";
/// os-release(5): read when `/etc/os-release` is absent.
const OS_RELEASE_FALLBACK: &str = "usr/lib/os-release";

pub fn hostname(root: &SysRoot) -> Result<String, DetectError> {
    non_empty(root, HOSTNAME)
}

/// Kernel release, e.g. "6.1.0-18-amd64".
pub fn kernel(root: &SysRoot) -> Result<String, DetectError> {
    non_empty(root, OSRELEASE)
}

/// The running binary's architecture on the host; on a fixture, its `proc/sys/kernel/arch` if present.
pub fn arch(root: &SysRoot) -> Result<String, DetectError> {
    if !root.is_host()
        && let Some(text) = root.read_if_exists(ARCH)?
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_string());
    }
    Ok(std::env::consts::ARCH.to_string())
}

/// Distribution and version from os-release: `PRETTY_NAME`, else `NAME VERSION`.
pub fn os(root: &SysRoot) -> Result<String, DetectError> {
    let (rel, text) = match root.read_if_exists(OS_RELEASE)? {
        Some(text) => (OS_RELEASE, text),
        None => match root.read_if_exists(OS_RELEASE_FALLBACK)? {
            Some(text) => (OS_RELEASE_FALLBACK, text),
            // Report the primary location: it is where an operator looks first.
            None => {
                return Err(DetectError::Read {
                    path: root.path(OS_RELEASE),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
        },
    };
    pretty_name(&text).ok_or_else(|| DetectError::Parse {
        path: root.path(rel),
        what: "neither PRETTY_NAME nor NAME is set".to_string(),
    })
}

fn non_empty(root: &SysRoot, rel: &str) -> Result<String, DetectError> {
    let text = root.read(rel)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(DetectError::Parse {
            path: root.path(rel),
            what: "file is empty".to_string(),
        });
    }
    Ok(text.to_string())
}

fn pretty_name(text: &str) -> Option<String> {
    let get = |key: &str| {
        text.lines()
            .filter_map(|line| line.trim().split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| unquote(v.trim()))
            .filter(|v| !v.is_empty())
    };
    if let Some(pretty) = get("PRETTY_NAME") {
        return Some(pretty);
    }
    let name = get("NAME")?;
    Some(match get("VERSION") {
        Some(version) => format!("{name} {version}"),
        None => name,
    })
}

/// Strips one level of shell quoting, as os-release values use.
fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner.replace("\\\"", "\"").replace("\\\\", "\\");
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n";
        assert_eq!(
            pretty_name(debian).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            pretty_name("NAME='Rocky Linux'\nVERSION=\"9.3 (Blue Onyx)\"\n").as_deref(),
            Some("Rocky Linux 9.3 (Blue Onyx)")
        );
        assert_eq!(pretty_name("NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(pretty_name("ID=debian\n"), None);
    }
}
