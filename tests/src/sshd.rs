//! A real sshd for tests of provisioning over SSH: its own host key, config and authorized key in
//! a temporary directory, on a free port of 127.0.0.1; stopped by PID when dropped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd, stopped by PID when dropped.
#[derive(Debug)]
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The host key, `type base64`.
    pub host_pub: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("sshd.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

pub fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    // `type base64 comment` → `type base64`
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn start_sshd() -> Sshd {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: this test needs openssh-server; run `scripts/test.sh` (it installs it) or `apt-get install openssh-server`"
    );
    assert!(
        nix_is_root(),
        "this test starts sshd and logs in as root: run it as root (scripts/test.sh requires root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host_pub = keygen(&d.join("host_ed25519"));
    let client_pub = keygen(&d.join("id_ed25519"));
    std::fs::write(d.join("authorized_keys"), format!("{client_pub}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nMaxStartups 200:30:400\n",
        d = d.display()
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let status = Command::new(SSHD)
        .arg("-f")
        .arg(d.join("sshd_config"))
        .arg("-E")
        .arg(d.join("sshd.log"))
        .status()
        .expect("sshd starts");
    let log = || std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
    assert!(status.success(), "sshd failed: {}", log());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not listen on {port}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd {
        dir,
        port,
        host_pub,
    }
}

pub fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
