//! `uid-conflicts`: no local account or group on the node collides with the cluster's users and groups
//! (same name with another id, or same id with another name). Found before anything changes; never
//! "fixed" automatically, because renumbering someone's account is the admin's decision.

use super::contract::{Builtin, BuiltinCx};
use crate::check::Check;
use crate::error::StepError;
use async_trait::async_trait;

/// Finds uid/gid collisions.
#[derive(Debug, Clone, Copy)]
pub struct UidConflicts;

/// Collisions between `getent` output (`name:x:id:...`) and the wanted `(name, id)` pairs.
pub(crate) fn collisions(kind: &str, getent: &str, wanted: &[(String, u32)]) -> Vec<String> {
    let existing: Vec<(&str, u32)> = getent
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name, id))
        })
        .collect();
    let mut found = Vec::new();
    for (name, id) in wanted {
        for (have_name, have_id) in &existing {
            if have_name == name && have_id != id {
                found.push(format!(
                    "{kind} `{name}` exists with id {have_id}, cluster.toml says {id}"
                ));
            } else if have_id == id && have_name != name {
                found.push(format!(
                    "{kind} id {id} (cluster `{name}`) is taken by `{have_name}`"
                ));
            }
        }
    }
    found
}

impl UidConflicts {
    async fn find(cx: &BuiltinCx<'_>) -> Result<Vec<String>, StepError> {
        let users = &cx.inventory.users;
        let mut found = Vec::new();
        for (kind, db, wanted) in [
            (
                "user",
                "passwd",
                users
                    .users
                    .iter()
                    .map(|u| (u.name.clone(), u.uid))
                    .collect::<Vec<_>>(),
            ),
            (
                "group",
                "group",
                users
                    .groups
                    .iter()
                    .map(|g| (g.name.clone(), g.gid))
                    .collect(),
            ),
        ] {
            if wanted.is_empty() {
                continue;
            }
            let command = format!("getent {db}");
            let out = cx.transport.exec(&command).await?;
            // getent exits 2 for an empty database, which is fine.
            if out.status != 0 && out.status != 2 {
                return Err(StepError::command(
                    &command,
                    &out,
                    &[0, 2],
                    "check the node's name service",
                ));
            }
            found.extend(collisions(kind, &out.stdout, &wanted));
        }
        Ok(found)
    }
}

#[async_trait]
impl Builtin for UidConflicts {
    fn name(&self) -> &'static str {
        "uid-conflicts"
    }

    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError> {
        let found = Self::find(cx).await?;
        Ok(if found.is_empty() {
            Check::Satisfied
        } else {
            Check::Unsatisfied(found.join("; "))
        })
    }

    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError> {
        let found = Self::find(cx).await?;
        Err(StepError::failed(
            format!("uid/gid conflicts on {}: {}", cx.node, found.join("; ")),
            "rename or renumber the local account, or pick other ids in cluster.toml, then resume",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::collisions;

    #[test]
    fn same_name_other_id_and_same_id_other_name_collide() {
        let getent = "root:x:0:0::/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/sh\nbob:x:10002:100::/:/bin/sh\n";
        let wanted = vec![
            ("alice".to_string(), 10001),
            ("carol".to_string(), 10002),
            ("dave".to_string(), 10003),
        ];
        let found = collisions("user", getent, &wanted);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("`alice` exists with id 1001"),
            "{found:?}"
        );
        assert!(found[1].contains("taken by `bob`"), "{found:?}");
        assert!(collisions("user", "alice:x:10001:1::/:/bin/sh\n", &wanted[..1]).is_empty());
    }
}
