//! `ldap-users`: the directory on the head holds the base DN, `ou=People`, `ou=Group` and every user and
//! group of cluster.toml. Talks to slapd with the OpenLDAP tools over the head's transport (SASL EXTERNAL
//! on `ldapi:///` as root, so no password is stored anywhere); an entry present with other ids is a
//! conflict reported before anything is written.

use super::contract::{Builtin, BuiltinCx};
use crate::check::Check;
use crate::error::StepError;
use crate::inventory::Users;
use crate::transport::shell_quote;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// Where the LDIF of missing entries is written on the head before `ldapadd` reads it (root only).
const LDIF_PATH: &str = "/run/beowulf/ldap-add.ldif";

/// Ensures the cluster's users and groups in slapd.
#[derive(Debug, Clone, Copy)]
pub struct LdapUsers;

/// One LDAP entry: its DN and attributes (lower-cased names).
type Entry = (String, BTreeMap<String, Vec<String>>);

/// Parses `ldapsearch -LLL` output (continuation lines joined; base64 values skipped).
pub(crate) fn parse_ldif(text: &str) -> Vec<Entry> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in text.lines() {
        match (line.strip_prefix(' '), unfolded.last_mut()) {
            (Some(rest), Some(prev)) if !prev.is_empty() => prev.push_str(rest),
            _ => unfolded.push(line.to_string()),
        }
    }
    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    for line in unfolded {
        if line.trim().is_empty() {
            entries.extend(current.take());
            continue;
        }
        let Some((attr, value)) = line.split_once(": ") else {
            continue;
        };
        if attr == "dn" {
            entries.extend(current.take());
            current = Some((value.to_string(), BTreeMap::new()));
        } else if let Some((_, attrs)) = current.as_mut() {
            attrs
                .entry(attr.to_ascii_lowercase())
                .or_default()
                .push(value.to_string());
        }
    }
    entries.extend(current);
    entries
}

/// What is missing from the directory and what conflicts with it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    pub missing_ldif: Vec<String>,
    pub missing: Vec<String>,
    pub conflicts: Vec<String>,
}

/// Compares the directory's entries with the inventory's users and groups.
pub(crate) fn diff(users: &Users, entries: &[Entry]) -> Diff {
    let base = &users.base_dn;
    let by_dn: BTreeMap<String, &BTreeMap<String, Vec<String>>> = entries
        .iter()
        .map(|(dn, a)| (dn.to_ascii_lowercase(), a))
        .collect();
    let first = |attrs: &BTreeMap<String, Vec<String>>, k: &str| {
        attrs.get(k).and_then(|v| v.first()).cloned()
    };
    let mut d = Diff::default();
    let dc = base
        .split(',')
        .next()
        .and_then(|rdn| rdn.strip_prefix("dc="))
        .unwrap_or("cluster");
    let wanted_containers = [
        (
            base.clone(),
            format!(
                "dn: {base}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: {dc}\ndc: {dc}\n"
            ),
        ),
        (
            format!("ou=People,{base}"),
            format!("dn: ou=People,{base}\nobjectClass: organizationalUnit\nou: People\n"),
        ),
        (
            format!("ou=Group,{base}"),
            format!("dn: ou=Group,{base}\nobjectClass: organizationalUnit\nou: Group\n"),
        ),
    ];
    for (dn, ldif) in wanted_containers {
        if !by_dn.contains_key(&dn.to_ascii_lowercase()) {
            d.missing.push(dn);
            d.missing_ldif.push(ldif);
        }
    }
    for g in &users.groups {
        let dn = format!("cn={},ou=Group,{base}", g.name);
        match by_dn.get(&dn.to_ascii_lowercase()) {
            Some(attrs) => {
                if first(attrs, "gidnumber") != Some(g.gid.to_string()) {
                    d.conflicts.push(format!(
                        "group `{}` is in the directory with gidNumber {}, cluster.toml says {}",
                        g.name,
                        first(attrs, "gidnumber").unwrap_or_default(),
                        g.gid
                    ));
                }
            }
            None => {
                d.missing.push(dn.clone());
                let members: String = g
                    .members
                    .iter()
                    .map(|m| format!("memberUid: {m}\n"))
                    .collect();
                d.missing_ldif.push(format!("dn: {dn}\nobjectClass: top\nobjectClass: posixGroup\ncn: {}\ngidNumber: {}\n{members}", g.name, g.gid));
            }
        }
    }
    for u in &users.users {
        let dn = format!("uid={},ou=People,{base}", u.name);
        match by_dn.get(&dn.to_ascii_lowercase()) {
            Some(attrs) => {
                let have = (first(attrs, "uidnumber"), first(attrs, "gidnumber"));
                if have != (Some(u.uid.to_string()), Some(u.gid.to_string())) {
                    d.conflicts.push(format!("user `{}` is in the directory with uidNumber {} gidNumber {}, cluster.toml says {} {}", u.name, have.0.unwrap_or_default(), have.1.unwrap_or_default(), u.uid, u.gid));
                }
            }
            None => {
                d.missing.push(dn.clone());
                d.missing_ldif.push(format!(
                    "dn: {dn}\nobjectClass: top\nobjectClass: account\nobjectClass: posixAccount\nobjectClass: shadowAccount\nuid: {name}\ncn: {name}\nuidNumber: {}\ngidNumber: {}\nhomeDirectory: {}\nloginShell: {}\n",
                    u.uid, u.gid, u.home_dir(), u.shell, name = u.name
                ));
            }
        }
    }
    d
}

impl LdapUsers {
    fn uri(cx: &BuiltinCx<'_>) -> String {
        cx.args
            .get("uri")
            .cloned()
            .unwrap_or_else(|| "ldapi:///".into())
    }

    async fn diff(cx: &BuiltinCx<'_>) -> Result<Diff, StepError> {
        let base = &cx.inventory.users.base_dn;
        let command = format!(
            "ldapsearch -Q -Y EXTERNAL -H {} -b {} -LLL dn uidNumber gidNumber",
            shell_quote(&Self::uri(cx)),
            shell_quote(base)
        );
        let out = cx.transport.exec(&command).await?;
        // 32 = noSuchObject: the base DN itself is missing, so everything is.
        if out.status != 0 && out.status != 32 {
            return Err(StepError::command(
                &command,
                &out,
                &[0, 32],
                "check that slapd runs on the head and root may use SASL EXTERNAL over ldapi:///",
            ));
        }
        Ok(diff(&cx.inventory.users, &parse_ldif(&out.stdout)))
    }
}

#[async_trait]
impl Builtin for LdapUsers {
    fn name(&self) -> &'static str {
        "ldap-users"
    }

    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError> {
        let d = Self::diff(cx).await?;
        Ok(match (d.missing.is_empty(), d.conflicts.is_empty()) {
            (true, true) => Check::Satisfied,
            _ => Check::Unsatisfied(
                d.conflicts
                    .iter()
                    .chain(d.missing.iter().map(|m| m as &String))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        })
    }

    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError> {
        let d = Self::diff(cx).await?;
        if !d.conflicts.is_empty() {
            return Err(StepError::failed(
                format!(
                    "the directory disagrees with cluster.toml: {}",
                    d.conflicts.join("; ")
                ),
                "fix the directory entry or the ids in cluster.toml, then resume",
            ));
        }
        let ldif = d.missing_ldif.join("\n");
        cx.transport
            .put_file(LDIF_PATH, ldif.as_bytes(), 0o600)
            .await?;
        let command = format!(
            "ldapadd -Q -Y EXTERNAL -H {} -f {LDIF_PATH}",
            shell_quote(&Self::uri(cx))
        );
        let out = cx.transport.exec(&command).await?;
        if out.status != 0 {
            return Err(StepError::command(
                &command,
                &out,
                &[0],
                "see slapd's log on the head, then resume",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Group, User};

    fn users() -> Users {
        Users {
            groups: vec![Group {
                name: "hpc".into(),
                gid: 10000,
                members: vec!["alice".into()],
            }],
            users: vec![User {
                name: "alice".into(),
                uid: 10001,
                gid: 10000,
                home: None,
                shell: "/bin/bash".into(),
            }],
            ..Users::default()
        }
    }

    #[test]
    fn an_empty_directory_misses_everything() {
        let d = diff(&users(), &[]);
        assert_eq!(d.missing.len(), 5, "{d:?}");
        assert!(d.missing_ldif[4].contains("uidNumber: 10001"), "{d:?}");
        assert!(d.conflicts.is_empty());
    }

    #[test]
    fn a_full_directory_is_satisfied_and_other_ids_conflict() {
        let text = "dn: dc=cluster,dc=local\n\ndn: ou=People,dc=cluster,dc=local\n\ndn: ou=Group,dc=cluster,dc=local\n\ndn: cn=hpc,ou=Group,dc=cluster,dc=local\ngidNumber: 10000\n\ndn: uid=alice,ou=People,dc=cluster,dc=loc\n al\nuidNumber: 10001\ngidNumber: 10000\n";
        let entries = parse_ldif(text);
        assert_eq!(entries.len(), 5, "{entries:?}");
        assert_eq!(diff(&users(), &entries), Diff::default());
        let other = parse_ldif(&text.replace("uidNumber: 10001", "uidNumber: 5"));
        let d = diff(&users(), &other);
        assert!(
            d.conflicts[0].contains("alice") && d.conflicts[0].contains("uidNumber 5"),
            "{d:?}"
        );
    }
}
