//! `detect()` over the fixture trees in `tests/fixtures/`, and over this machine.

use std::path::{Path, PathBuf};

use beowulf_hardware::{DetectError, IbPort, IbPortState, Nic, SysRoot, detect, detect_host};

fn fixture(name: &str) -> SysRoot {
    SysRoot::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

fn nic(name: &str, mac: &str, up: bool, speed_mbps: Option<u32>) -> Nic {
    Nic {
        name: name.to_string(),
        mac: mac.to_string(),
        addresses: Vec::new(),
        up,
        speed_mbps,
    }
}

/// Copies a fixture into a temp dir so a test can break it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn plain_2cpu_has_no_rdma() {
    let inv = detect(&fixture("plain-2cpu")).unwrap();
    assert_eq!(inv.hostname, "plain");
    assert_eq!(inv.cpus, 2, "counted from proc/cpuinfo: no cpu/online file");
    assert_eq!(inv.memory_mb, 3936);
    assert_eq!(inv.os, "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(inv.kernel, "6.1.0-18-amd64");
    assert_eq!(inv.arch, "aarch64", "read from proc/sys/kernel/arch");
    assert_eq!(
        inv.nics,
        vec![
            nic("docker0", "02:42:ac:11:00:01", false, None),
            nic("eth0", "52:54:00:12:34:56", true, Some(1000)),
        ]
    );
    assert!(inv.ib_ports.is_empty());
    assert!(!inv.has_active_ib());
}

#[test]
fn rxe_lab_has_an_active_roce_port_over_eth1() {
    let inv = detect(&fixture("rxe-lab")).unwrap();
    assert_eq!(inv.hostname, "node1");
    assert_eq!(inv.cpus, 1);
    assert_eq!(inv.memory_mb, 486);
    assert_eq!(
        inv.arch,
        std::env::consts::ARCH,
        "no arch file: the binary's"
    );
    assert_eq!(
        inv.nics,
        vec![
            nic("eth0", "52:54:00:4d:00:0b", true, None),
            nic("eth1", "52:54:00:4e:00:0b", true, None),
        ]
    );
    assert_eq!(
        inv.ib_ports,
        vec![IbPort {
            device: "rxe0".to_string(),
            port: 1,
            state: IbPortState::Active,
            phys_state: "5: LinkUp".to_string(),
            rate: "2.5 Gb/sec (1X SDR)".to_string(),
            link_layer: "Ethernet".to_string(),
            netdev: Some("eth1".to_string()),
        }]
    );
    assert!(inv.has_active_ib());
}

#[test]
fn mlx_down_has_a_down_infiniband_port_over_ib0() {
    let inv = detect(&fixture("mlx-down")).unwrap();
    assert_eq!(inv.hostname, "gpu07");
    assert_eq!(inv.cpus, 32, "cpu/online wins over the 64 cpuinfo entries");
    assert_eq!(inv.memory_mb, 257662);
    assert_eq!(
        inv.os, "Rocky Linux 9.3 (Blue Onyx)",
        "from usr/lib/os-release"
    );
    assert_eq!(inv.kernel, "5.14.0-362.8.1.el9_3.x86_64");
    assert_eq!(inv.nics.len(), 2);
    assert_eq!(
        inv.nics[0],
        nic("eno1", "3c:ec:ef:10:20:30", true, Some(1000))
    );
    assert_eq!(inv.nics[1].name, "ib0");
    assert!(!inv.nics[1].up);
    assert_eq!(
        inv.ib_ports,
        vec![IbPort {
            device: "mlx5_0".to_string(),
            port: 1,
            state: IbPortState::Down,
            phys_state: "3: Disabled".to_string(),
            rate: "10 Gb/sec (4X SDR)".to_string(),
            link_layer: "InfiniBand".to_string(),
            netdev: Some("ib0".to_string()),
        }]
    );
    assert!(!inv.has_active_ib());
}

#[test]
fn missing_meminfo_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(fixture("plain-2cpu").prefix(), dir.path());
    let meminfo: PathBuf = dir.path().join("proc/meminfo");
    std::fs::remove_file(&meminfo).unwrap();

    let err = detect(&SysRoot::new(dir.path())).unwrap_err();
    match &err {
        DetectError::Read { path, source } => {
            assert_eq!(path, &meminfo);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}", meminfo.display()))
    );
}

#[test]
fn garbled_cpu_online_is_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(fixture("rxe-lab").prefix(), dir.path());
    std::fs::write(dir.path().join("sys/devices/system/cpu/online"), "zero\n").unwrap();

    let err = detect(&SysRoot::new(dir.path())).unwrap_err();
    assert!(matches!(err, DetectError::Parse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("sys/devices/system/cpu/online"),
        "{err}"
    );
}

#[test]
fn detect_host_works_on_this_machine() {
    let inv = detect_host().unwrap();
    assert!(inv.cpus >= 1);
    assert!(inv.memory_mb > 0);
    assert!(!inv.hostname.is_empty());
    assert!(!inv.kernel.is_empty());
    assert!(!inv.os.is_empty());
    assert_eq!(inv.arch, std::env::consts::ARCH);
    assert!(inv.nics.iter().all(|n| n.name != "lo"));
    // An RDMA-less machine reports no ports; one with RDMA reports well-formed ones.
    assert!(
        inv.ib_ports
            .iter()
            .all(|p| !p.device.is_empty() && p.port >= 1)
    );
}
