//! QEMU for the lab: the command line of one VM (pure), and the KVM probe that decides between KVM and TCG.

use crate::LabError;
use crate::addressing::NodePlan;
use crate::host::Cmd;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

/// How long the KVM probe waits for the initramfs' marker. Under real KVM it prints within ~2 s; under
/// TCG the same kernel needs ~5 s, and a hung PVM-style KVM never prints. Long enough for a loaded host.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// How a VM's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel`/`-cpu` arguments. TCG gets `-cpu max` (every feature QEMU can emulate) and a bounded
    /// translation cache (64 MiB instead of 1/4 of guest RAM's worth) to keep each VM's RSS down.
    pub fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg,tb-size=64", "-cpu", "max"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything one VM's command line needs.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub node: NodePlan,
    pub accel: Accel,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub overlay: PathBuf,
    pub seed: PathBuf,
    pub serial_log: PathBuf,
    pub pidfile: PathBuf,
}

/// The qemu command for one VM: daemonized, PID in `pidfile`, serial console in `serial_log`, root disk
/// the overlay (vda), seed tar (vdb), NIC 1 on the gige tap, NIC 2 on the ib tap.
pub fn vm_command(s: &VmSpec) -> Cmd {
    let n = &s.node;
    let append = format!(
        "console=ttyS0 net.ifnames=0 quiet systemd.show_status=1 systemd.hostname={} root=/dev/vda rw",
        n.name
    );
    Cmd::new(QEMU)
        .args(["-name", &n.name])
        .args(s.accel.args())
        .args([
            "-machine",
            "q35",
            "-smp",
            "1",
            "-m",
            &s.memory_mib.to_string(),
        ])
        .args(["-display", "none", "-nodefaults", "-no-user-config"])
        .arg("-kernel")
        .path_arg(&s.kernel)
        .arg("-initrd")
        .path_arg(&s.initramfs)
        .args(["-append", &append])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2,cache=unsafe",
            s.overlay.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,readonly=on",
            s.seed.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", s.serial_log.display()))
        // romfile= (empty): no iPXE option ROM, so the VM never tries to boot from the network.
        .args([
            "-netdev",
            &format!("tap,id=gige,ifname={},script=no,downscript=no", n.gige_tap),
        ])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=gige,romfile=,mac={}", n.gige_mac),
        ])
        .args([
            "-netdev",
            &format!("tap,id=ib,ifname={},script=no,downscript=no", n.ib_tap),
        ])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=ib,romfile=,mac={}", n.ib_mac),
        ])
        .args(["-device", "virtio-rng-pci"])
        .arg("-pidfile")
        .path_arg(&s.pidfile)
        .arg("-daemonize")
}

/// Chooses the accelerator: `BEOWULF_LAB_ACCEL` when set (`kvm`, `tcg`, `auto`), else a probe.
pub fn choose_accel(
    env: Option<&str>,
    kernel: &Path,
    initramfs: &Path,
    work: &Path,
) -> Result<Accel, LabError> {
    match env.map(str::trim) {
        Some("kvm") => Ok(Accel::Kvm),
        Some("tcg") => Ok(Accel::Tcg),
        None | Some("") | Some("auto") => Ok(if probe_kvm(kernel, initramfs, work) {
            Accel::Kvm
        } else {
            Accel::Tcg
        }),
        Some(other) => Err(LabError::Accel {
            value: other.to_string(),
        }),
    }
}

/// Boots the image's kernel and initramfs under KVM with no disk and no network and waits for the probe
/// marker. Some hosts' /dev/kvm (PVM) aborts at once or hangs Debian's kernel: both read as "no KVM".
/// The probe qemu is our child and is killed by PID before returning.
pub fn probe_kvm(kernel: &Path, initramfs: &Path, work: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let log = work.join("kvm-probe.log");
    let _ = std::fs::remove_file(&log);
    let child = Command::new(QEMU)
        .args(Accel::Kvm.args())
        .args([
            "-machine",
            "q35",
            "-m",
            "256",
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet beowulf.probe"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else { return false };
    let start = Instant::now();
    let ok = loop {
        if std::fs::read_to_string(&log).is_ok_and(|s| s.contains(crate::recipe::PROBE_MARKER)) {
            break true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) || start.elapsed() > KVM_PROBE_TIMEOUT {
            break std::fs::read_to_string(&log)
                .is_ok_and(|s| s.contains(crate::recipe::PROBE_MARKER));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    if let Some(mut err) = child.stderr.take() {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        let _ = std::fs::write(work.join("kvm-probe.stderr"), text);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addressing::plan;

    fn spec(accel: Accel) -> VmSpec {
        VmSpec {
            node: plan(3).unwrap().remove(2),
            accel,
            memory_mib: 512,
            kernel: "/c/vmlinuz".into(),
            initramfs: "/c/initramfs.img".into(),
            overlay: "/s/node3/disk.qcow2".into(),
            seed: "/s/node3/seed.tar".into(),
            serial_log: "/s/logs/node3.serial.log".into(),
            pidfile: "/s/node3/qemu.pid".into(),
        }
    }

    fn has_pair(args: &[String], a: &str, b: &str) -> bool {
        args.windows(2).any(|w| w[0] == a && w[1] == b)
    }

    #[test]
    fn a_tcg_vm_has_two_nics_on_its_taps_and_daemonizes() {
        let c = vm_command(&spec(Accel::Tcg));
        assert_eq!(c.program, QEMU);
        let a = &c.args;
        assert!(has_pair(a, "-accel", "tcg,tb-size=64") && has_pair(a, "-cpu", "max"));
        assert!(has_pair(a, "-m", "512") && has_pair(a, "-smp", "1"));
        assert!(has_pair(
            a,
            "-netdev",
            "tap,id=gige,ifname=gige3,script=no,downscript=no"
        ));
        assert!(has_pair(
            a,
            "-device",
            "virtio-net-pci,netdev=gige,romfile=,mac=52:54:00:4d:00:03"
        ));
        assert!(has_pair(
            a,
            "-netdev",
            "tap,id=ib,ifname=ib3,script=no,downscript=no"
        ));
        assert!(has_pair(a, "-pidfile", "/s/node3/qemu.pid"));
        assert_eq!(a.last().map(String::as_str), Some("-daemonize"));
        let append = &a[a.iter().position(|x| x == "-append").unwrap() + 1];
        assert!(append.contains("net.ifnames=0") && append.contains("systemd.hostname=node3"));
        // the root disk comes before the seed, so it is /dev/vda
        let drives: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "-drive")
            .map(|w| &w[1])
            .collect();
        assert!(drives[0].starts_with("file=/s/node3/disk.qcow2,"));
        assert!(drives[1].contains("seed.tar") && drives[1].contains("readonly=on"));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let c = vm_command(&spec(Accel::Kvm));
        assert!(has_pair(&c.args, "-accel", "kvm") && has_pair(&c.args, "-cpu", "host"));
    }

    #[test]
    fn accel_override_is_checked() {
        let p = Path::new("/nonexistent");
        assert_eq!(choose_accel(Some("tcg"), p, p, p).unwrap(), Accel::Tcg);
        assert_eq!(choose_accel(Some("kvm"), p, p, p).unwrap(), Accel::Kvm);
        assert!(choose_accel(Some("fast"), p, p, p).is_err());
    }
}
