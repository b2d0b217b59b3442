//! The head's own services in lab mode: slapd (the cluster's LDAP directory), ypserv (its NIS
//! alternative), rpcbind and nfs-ganesha (the NFS server for the home and shared areas) run as
//! children in the lab's network namespace, with every
//! file under `<state>/lab-head/`, so the lab changes nothing on this machine outside its state
//! directory (DESIGN §6). On a real head the same playbooks use the distribution's systemd services;
//! the lab tells them apart through the `vars.head_services = "lab"` provisioning variable.
//!
//! What the lab provides and what the playbooks still do:
//!
//! ```text
//!   lab (here)                                  playbooks (users-ldap, nfs)
//!   slapd: cn=config only, root over ldapi  ──▶ the cluster's database, base DN, users, groups
//!   ypserv: an empty map directory          ──▶ (users-nis) passwd and group maps of the users
//!   rpcbind: the lab's own portmapper       ──▶ (NFSv3's MOUNT and NFS ports, for the head's check)
//!   ganesha: exports home/ and srv/, v3+v4  ──▶ users' home directories, node mounts, checks
//! ```
//!
//! rpcbind keeps its socket and lock in /run, which is this machine's: it runs with a private /run
//! (`<state>/lab-head/rpcbind-run` bound over it in the mount namespace `ip netns exec` gives it),
//! so two labs never share one. ganesha then finds no local socket and registers over loopback
//! TCP, which inside the namespace reaches the lab's rpcbind. ypserv shares that /run and has
//! `<state>/lab-head/nis/yp` bound over /var/yp, its compiled-in map directory (which the
//! ypserv package creates on this machine).

use crate::local::daemon::{alive, spawn_in};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long slapd and ganesha get to answer: both start in well under a second here (DESIGN §6).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the nodes mount the shared area (the lab exports its `srv-beowulf` directory there).
pub const SHARED_ON_NODES: &str = "/srv/beowulf";

/// The pids-file names of the head services, with the program each must be running.
pub const SERVICES: [(&str, &str); 4] = [
    ("slapd", "slapd"),
    ("rpcbind", "rpcbind"),
    ("nfs-ganesha", "ganesha.nfsd"),
    ("ypserv", "ypserv"),
];

/// ypserv's map directory, compiled into Debian's ypserv.
const YPSERV_MAP_DIR: &str = "/var/yp";

/// ganesha's MOUNT port: fixed, so an admin's firewall rule can name it (rpcbind tells clients).
const MOUNT_PORT: u16 = 20048;

/// Where the lab head's services keep their files.
#[derive(Debug, Clone)]
pub struct LabHead {
    root: PathBuf,
}

impl LabHead {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("lab-head"),
        }
    }

    fn slapd_config(&self) -> PathBuf {
        self.root.join("ldap/slapd.d")
    }

    fn ldapi_socket(&self) -> PathBuf {
        self.root.join("ldap/ldapi")
    }

    /// The directory's database files (the playbook's `slapd-database` step creates the database).
    pub fn ldap_db_dir(&self) -> PathBuf {
        self.root.join("ldap/db")
    }

    /// `ldapi://` URL of slapd's unix socket (the path percent-encoded, as OpenLDAP wants it).
    pub fn ldap_uri(&self) -> String {
        let path = self.ldapi_socket().display().to_string();
        let mut uri = String::from("ldapi://");
        for b in path.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                uri.push(char::from(b));
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        uri
    }

    /// The exported home area (nodes mount it on /home).
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// The exported shared area (nodes mount it on /srv/beowulf).
    pub fn shared(&self) -> PathBuf {
        self.root.join("srv-beowulf")
    }

    fn ganesha_dir(&self) -> PathBuf {
        self.root.join("ganesha")
    }

    /// ypserv's map directory (bound over /var/yp in its mount namespace).
    fn nis_maps(&self) -> PathBuf {
        self.root.join("nis/yp")
    }

    /// The passwd and group files the users-nis playbook builds the maps from.
    fn nis_sources(&self) -> PathBuf {
        self.root.join("nis/source")
    }

    /// rpcbind's private /run.
    fn rpcbind_run(&self) -> PathBuf {
        self.root.join("rpcbind-run")
    }

    /// Copies of `computed`, `beowulf-rsh` and `srun` without debug info, for the agent step to send to
    /// the VMs (a debug build's are ~200 MiB, minutes over SSH under TCG; stripped, a tenth);
    /// returns their directory. Plain copies where `strip` is missing.
    pub fn node_binaries(&self, bin_dir: &Path) -> anyhow::Result<PathBuf> {
        let dir = self.root.join("bin");
        std::fs::create_dir_all(&dir)?;
        for name in ["computed", "beowulf-rsh", "srun"] {
            let (from, to) = (bin_dir.join(name), dir.join(name));
            let stripped = Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&to)
                .arg(&from)
                .status()
                .is_ok_and(|s| s.success());
            if !stripped {
                std::fs::copy(&from, &to).with_context(|| {
                    format!("cannot copy {} to {}", from.display(), to.display())
                })?;
            }
        }
        Ok(dir)
    }

    /// The provisioning variables that point the playbooks at these services.
    pub fn vars(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("head_services", "lab".to_string()),
            ("ldap_uri", self.ldap_uri()),
            ("ldap_db_dir", self.ldap_db_dir().display().to_string()),
            ("head_home", self.home().display().to_string()),
            ("head_shared", self.shared().display().to_string()),
            ("nis_dir", self.nis_maps().display().to_string()),
            ("nis_source_dir", self.nis_sources().display().to_string()),
        ])
    }

    /// Starts slapd, rpcbind, nfs-ganesha and ypserv in `netns` unless they run; records their
    /// PIDs in `pids`.
    pub async fn start(
        &self,
        netns: &str,
        address: Ipv4Addr,
        logs: &Path,
        pids: &mut BTreeMap<String, u32>,
    ) -> anyhow::Result<()> {
        for dir in [
            self.root.join("ldap"),
            self.ldap_db_dir(),
            self.home(),
            self.shared(),
            self.ganesha_dir().join("recovery"),
            self.rpcbind_run(),
            self.nis_maps(),
            self.nis_sources(),
        ] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let [slapd, rpcbind, ganesha, ypserv] = SERVICES;
        if !alive(pids, slapd.0, slapd.1) {
            self.configure_slapd()?;
            let listen = format!("ldap://{address}/ {}", self.ldap_uri());
            let config = self.slapd_config().display().to_string();
            let args = ["-d", "0", "-F", &config, "-h", &listen].map(String::from);
            let uri = self.ldap_uri();
            let answers = || {
                Command::new("ldapsearch")
                    .args(["-Q", "-Y", "EXTERNAL", "-H", &uri, "-b", "cn=config"])
                    .args(["-s", "base", "dn"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let out = logs.join("slapd.log");
            launch(
                netns,
                slapd,
                &args,
                &out,
                pids,
                "slapd to answer on ldapi",
                answers,
            )
            .await?;
        }
        if !alive(pids, rpcbind.0, rpcbind.1) {
            let run = self.rpcbind_run();
            let socket = run.join("rpcbind.sock");
            std::fs::remove_file(&socket).ok();
            // `ip netns exec` gives the shell a mount namespace of its own; the bind stays in it.
            let script = format!("mount --bind '{}' /run && exec rpcbind -f", run.display());
            let args = ["-c".to_string(), script];
            let out = logs.join("rpcbind.log");
            let pid = spawn_in(Some(netns), Path::new("sh"), &args, &out)?;
            pids.insert(rpcbind.0.into(), pid);
            wait_until("rpcbind to listen", logs, || socket.exists()).await?;
        }
        if !alive(pids, ganesha.0, ganesha.1) {
            let dir = self.ganesha_dir();
            let conf = dir.join("ganesha.conf");
            std::fs::write(&conf, self.ganesha_conf(address))
                .with_context(|| format!("cannot write {}", conf.display()))?;
            let log = logs.join("nfs-ganesha.log");
            // A fresh log per start, so the readiness line below is this start's.
            std::fs::remove_file(&log).ok();
            let args = [
                "-F".to_string(),
                "-f".into(),
                conf.display().to_string(),
                "-L".into(),
                log.display().to_string(),
                "-p".into(),
                dir.join("ganesha.pid").display().to_string(),
            ];
            let serving = || {
                std::fs::read_to_string(&log).is_ok_and(|l| l.contains("NFS SERVER INITIALIZED"))
            };
            let out = logs.join("nfs-ganesha.out");
            launch(
                netns,
                ganesha,
                &args,
                &out,
                pids,
                "nfs-ganesha to serve",
                serving,
            )
            .await?;
        }
        if !alive(pids, ypserv.0, ypserv.1) {
            if !Path::new(YPSERV_MAP_DIR).is_dir() {
                bail!("{YPSERV_MAP_DIR} does not exist: install ypserv (scripts/lab-deps.sh)");
            }
            let securenets = self.nis_maps().join("securenets");
            std::fs::write(&securenets, securenets_for(address))
                .with_context(|| format!("cannot write {}", securenets.display()))?;
            // Same private /run as rpcbind (so it registers over rpcbind's socket), and the
            // lab's map directory over /var/yp.
            let script = format!(
                "mount --bind '{}' /run && mount --bind '{}' {YPSERV_MAP_DIR} && exec ypserv -f",
                self.rpcbind_run().display(),
                self.nis_maps().display()
            );
            let args = ["-c".to_string(), script];
            let out = logs.join("ypserv.log");
            let pid = spawn_in(Some(netns), Path::new("sh"), &args, &out)?;
            pids.insert(ypserv.0.into(), pid);
            let answers = || {
                Command::new("ip")
                    .args(["netns", "exec", netns, "rpcinfo", "-T", "tcp", "127.0.0.1"])
                    .args(["ypserv", "2"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            wait_until("ypserv to register with rpcbind", logs, answers).await?;
        }
        Ok(())
    }

    /// A cn=config with the schemas the directory needs and root (SASL EXTERNAL over ldapi) as its
    /// manager, written once with slapadd; the database itself is the playbook's to create.
    fn configure_slapd(&self) -> anyhow::Result<()> {
        let config = self.slapd_config();
        if config.join("cn=config.ldif").exists() {
            return Ok(());
        }
        let ldap = self.root.join("ldap");
        let staging = ldap.join("slapd.d.new");
        std::fs::remove_dir_all(&staging).ok();
        std::fs::create_dir_all(&staging)?;
        let ldif = ldap.join("config.ldif");
        std::fs::write(&ldif, slapd_config_ldif(&ldap.join("slapd.pid")))?;
        let out = Command::new("slapadd")
            .args(["-n0", "-F"])
            .arg(&staging)
            .arg("-l")
            .arg(&ldif)
            .output()
            .context("cannot run slapadd: install slapd (scripts/lab-deps.sh)")?;
        if !out.status.success() {
            bail!(
                "slapadd could not write the lab's slapd configuration in {}: {}",
                staging.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::rename(&staging, &config)?;
        Ok(())
    }

    fn ganesha_conf(&self, address: Ipv4Addr) -> String {
        let subnet = Ipv4Addr::from(u32::from(address) & 0xffff_ff00);
        let export = |id: u32, path: &Path, pseudo: &str| {
            format!(
                "EXPORT {{\n    Export_Id = {id};\n    Path = {path:?};\n    Pseudo = {pseudo:?};\n    \
                 Protocols = 3, 4;\n    Transports = TCP;\n    Access_Type = RW;\n    Squash = no_root_squash;\n    \
                 SecType = sys;\n    CLIENT {{ Clients = {subnet}/24; Access_Type = RW; }}\n    FSAL {{ Name = VFS; }}\n}}\n"
            )
        };
        format!(
            "# Written by `cluster init` for the lab: the head's NFS server (v4 for the nodes' mounts,\n\
             # v3 for the head's own check; registered with the lab's rpcbind).\n\
             NFS_CORE_PARAM {{\n    Bind_addr = {address};\n    Protocols = 3, 4;\n    NFS_Port = 2049;\n    \
             MNT_Port = {MOUNT_PORT};\n    \
             Enable_NLM = false;\n    Enable_RQUOTA = false;\n    Enable_UDP = false;\n    \
             Plugins_Dir = \"/usr/lib/x86_64-linux-gnu/ganesha\";\n}}\n\
             NFSV4 {{\n    Graceless = true;\n    Lease_Lifetime = 20;\n    Only_Numeric_Owners = true;\n    \
             Minor_Versions = 0, 1, 2;\n    RecoveryRoot = {recovery:?};\n}}\n\
             NFS_KRB5 {{ Active_krb5 = false; }}\n{home}{shared}LOG {{ Default_Log_Level = EVENT; }}\n",
            recovery = self.ganesha_dir().join("recovery"),
            home = export(1, &self.home(), "/home"),
            shared = export(2, &self.shared(), SHARED_ON_NODES),
        )
    }
}

/// ypserv's access list: this host and the lab's gigabit subnet (ganesha's clients too).
fn securenets_for(address: Ipv4Addr) -> String {
    let subnet = Ipv4Addr::from(u32::from(address) & 0xffff_ff00);
    format!("# Written by `cluster init` for the lab's ypserv.\n255.0.0.0 127.0.0.0\n{subnet}/24\n")
}

fn slapd_config_ldif(pidfile: &Path) -> String {
    format!(
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {pid}\n\n\
         dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
         olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
         dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
         include: file:///etc/ldap/schema/core.ldif\ninclude: file:///etc/ldap/schema/cosine.ldif\n\
         include: file:///etc/ldap/schema/nis.ldif\ninclude: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
         dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\n\
         objectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\n\n\
         dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {{0}}config\n\
         olcAccess: {{0}}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage by * none\n",
        pid = pidfile.display()
    )
}

/// Starts `service` (its pids-file name and program) in `netns`, records its PID, and waits until
/// `ready`.
async fn launch(
    netns: &str,
    (name, program): (&str, &str),
    args: &[String],
    out: &Path,
    pids: &mut BTreeMap<String, u32>,
    what: &str,
    ready: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let pid = spawn_in(Some(netns), Path::new(program), args, out)?;
    pids.insert(name.into(), pid);
    let logs = out.parent().unwrap_or(out);
    wait_until(what, logs, ready).await
}

async fn wait_until(what: &str, logs: &Path, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; see {}", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ldapi_url_encodes_the_socket_path() {
        let head = LabHead::new(Path::new("/var/tmp/lab state"));
        assert_eq!(
            head.ldap_uri(),
            "ldapi://%2Fvar%2Ftmp%2Flab%20state%2Flab-head%2Fldap%2Fldapi"
        );
    }

    #[test]
    fn ganesha_exports_both_areas_to_the_gigabit_subnet_only() {
        let head = LabHead::new(Path::new("/s"));
        let conf = head.ganesha_conf(Ipv4Addr::new(10, 77, 0, 254));
        assert!(
            conf.contains("Path = \"/s/lab-head/home\";\n    Pseudo = \"/home\""),
            "{conf}"
        );
        assert!(conf.contains("Pseudo = \"/srv/beowulf\""), "{conf}");
        assert_eq!(conf.matches("Clients = 10.77.0.0/24").count(), 2, "{conf}");
        // v3 for the head's nfs3_client check, on a MOUNT port rpcbind can name.
        assert_eq!(conf.matches("Protocols = 3, 4;").count(), 3, "{conf}");
        assert!(conf.contains("MNT_Port = 20048;"), "{conf}");
    }

    #[test]
    fn ypserv_answers_loopback_and_the_gigabit_subnet_only() {
        let nets = securenets_for(Ipv4Addr::new(10, 77, 0, 254));
        let entries: Vec<&str> = nets.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(entries, ["255.0.0.0 127.0.0.0", "10.77.0.0/24"]);
    }
}
