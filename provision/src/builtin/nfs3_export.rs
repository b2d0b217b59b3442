//! `nfs3-export`: the head checks its own NFS export as a client would, over NFSv3 with the
//! `nfs3_client` crate: the portmapper names the MOUNT and NFS ports, MOUNT gives the export's
//! root handle, GETATTR says it is a directory, and with `args.users = "true"` LOOKUP finds every
//! cluster user's home directory in it owned by that user's uid and gid. Nothing is mounted on the
//! head. It cannot repair an export: apply fails with what the server answered.
//!
//! Runs inside headnoded (the connection leaves from the head's own network namespace, which in
//! the lab is the lab's), as root so it may use a privileged source port as NFS servers expect.

use super::contract::{Builtin, BuiltinCx};
use crate::check::Check;
use crate::error::StepError;
use async_trait::async_trait;
use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::nfs3_types::nfs3::{
    GETATTR3args, LOOKUP3args, Nfs3Option, Nfs3Result, diropargs3, fattr3, filename3, ftype3,
    nfs_fh3,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioConnector;
use std::time::Duration;

/// The whole check's bound: a healthy server answers in milliseconds; a missing portmapper or a
/// firewall must not hold the step for its full timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks the head's NFS export of `args.path` over NFSv3.
#[derive(Debug, Clone, Copy)]
pub struct Nfs3Export;

/// Root's AUTH_SYS credential (the exports squash no root, and the check reads every home).
fn root_credential() -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 0,
        machinename: Opaque::owned(b"beowulf-head".to_vec()),
        uid: 0,
        gid: 0,
        gids: vec![],
    })
}

impl Nfs3Export {
    /// What is wrong with the export, or `None` when it serves as it should.
    async fn problem(cx: &BuiltinCx<'_>) -> Result<Option<String>, StepError> {
        let path = cx.args.get("path").cloned().ok_or_else(|| {
            StepError::failed(
                "nfs3-export needs `args.path`, the exported directory",
                "fix the playbook",
            )
        })?;
        let server = cx.inventory.head.gige.to_string();
        let check_users = cx.args.get("users").is_some_and(|v| v == "true");
        let users: Vec<(String, u32, u32)> = if check_users {
            cx.inventory
                .users
                .users
                .iter()
                .map(|u| (u.name.clone(), u.uid, u.gid))
                .collect()
        } else {
            Vec::new()
        };
        let checked = tokio::time::timeout(CHECK_TIMEOUT, check(&server, &path, &users)).await;
        Ok(match checked {
            Ok(Ok(())) => None,
            Ok(Err(problem)) => Some(format!("NFSv3 export {server}:{path}: {problem}")),
            Err(_) => Some(format!(
                "NFSv3 export {server}:{path}: no answer within {} s",
                CHECK_TIMEOUT.as_secs()
            )),
        })
    }
}

/// Mounts `path` from `server` over NFSv3 (in the protocol only), checks its root and the users'
/// homes, and unmounts.
async fn check(server: &str, path: &str, users: &[(String, u32, u32)]) -> Result<(), String> {
    let mut connection = Nfs3ConnectionBuilder::new(TokioConnector, server, path)
        .credential(root_credential())
        .mount()
        .await
        .map_err(|e| format!("cannot mount it: {e}"))?;
    let root = connection.root_nfs_fh3();
    let attrs = match connection
        .getattr(&GETATTR3args {
            object: root.clone(),
        })
        .await
        .map_err(|e| format!("GETATTR of its root failed: {e}"))?
    {
        Nfs3Result::Ok(ok) => ok.obj_attributes,
        Nfs3Result::Err((status, _)) => {
            return Err(format!("GETATTR of its root answered {status:?}"));
        }
    };
    if attrs.type_ != ftype3::NF3DIR {
        return Err(format!("its root is a {:?}, not a directory", attrs.type_));
    }
    let mut wrong = Vec::new();
    for (name, uid, gid) in users {
        match lookup(&mut connection, &root, name).await? {
            None => wrong.push(format!("no home directory `{name}`")),
            Some(a) if a.type_ != ftype3::NF3DIR => {
                wrong.push(format!("`{name}` is a {:?}, not a directory", a.type_));
            }
            Some(a) if (a.uid, a.gid) != (*uid, *gid) => wrong.push(format!(
                "`{name}` is owned by {}:{} over NFS, not {uid}:{gid}",
                a.uid, a.gid
            )),
            Some(_) => {}
        }
    }
    // Unmounting only tells the server's MOUNT table; a failure changes nothing for the check.
    connection.unmount().await.ok();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// The attributes of `name` in directory `dir`, `None` when it does not exist.
async fn lookup<IO>(
    connection: &mut nfs3_client::Nfs3Connection<IO>,
    dir: &nfs_fh3,
    name: &str,
) -> Result<Option<fattr3>, String>
where
    IO: nfs3_client::io::AsyncRead + nfs3_client::io::AsyncWrite + Send,
{
    let args = LOOKUP3args {
        what: diropargs3 {
            dir: dir.clone(),
            name: filename3(Opaque::borrowed(name.as_bytes())),
        },
    };
    match connection
        .lookup(&args)
        .await
        .map_err(|e| format!("LOOKUP of `{name}` failed: {e}"))?
    {
        Nfs3Result::Ok(ok) => match ok.obj_attributes {
            Nfs3Option::Some(a) => Ok(Some(a)),
            Nfs3Option::None => {
                let reply = connection
                    .getattr(&GETATTR3args { object: ok.object })
                    .await
                    .map_err(|e| format!("GETATTR of `{name}` failed: {e}"))?;
                match reply {
                    Nfs3Result::Ok(ok) => Ok(Some(ok.obj_attributes)),
                    Nfs3Result::Err((status, _)) => {
                        Err(format!("GETATTR of `{name}` answered {status:?}"))
                    }
                }
            }
        },
        Nfs3Result::Err((nfs3_client::nfs3_types::nfs3::nfsstat3::NFS3ERR_NOENT, _)) => Ok(None),
        Nfs3Result::Err((status, _)) => Err(format!("LOOKUP of `{name}` answered {status:?}")),
    }
}

#[async_trait]
impl Builtin for Nfs3Export {
    fn name(&self) -> &'static str {
        "nfs3-export"
    }

    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError> {
        Ok(Check::from_problem(Self::problem(cx).await?))
    }

    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError> {
        match Self::problem(cx).await? {
            None => Ok(()),
            Some(p) => Err(StepError::failed(
                p,
                "check the NFS server's log, its exports (clients, squash) and that rpcbind runs on the head",
            )),
        }
    }
}
