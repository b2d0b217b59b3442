//! Playbooks: ordered lists of steps, read strictly from `playbooks/*.toml`.
//!
//! ```toml
//! title = "InfiniBand: verbs stack, soft-RoCE, memlock, port state"
//! when = "true"                       # optional: a template expression over the inventory
//!
//! [[step]]
//! id = "rxe-link"
//! title = "soft-RoCE link rxe0 on the fabric's netdev"
//! scope = "nodes"                     # or "head"
//! when = "node.ib.kind == 'soft-roce'"
//! on_failure = "degrade"              # default "stop"; degrade = record and go on (gigabit fallback)
//! check = [{ run = "rdma link show rxe0/1" }]
//! apply = [{ run = "modprobe rdma_rxe" }, { run = "rdma link add rxe0 type rxe netdev {{ node.ib.netdev }}" }]
//! verify = [{ run = "cat /sys/class/infiniband/rxe0/ports/1/state", expect_stdout = "ACTIVE" }]
//! ```
//!
//! `apply` may be left out when every check action applies itself (`file`, `package`, `service`,
//! `builtin`); `verify` defaults to the check.

use crate::action::{Action, RawAction};
use beowulf_types::located::{SourceError, from_toml, line_of};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// How long one phase (check, apply or verify) of a step may take on one node unless the step says
/// otherwise. Package installs on a TCG-emulated lab VM (DESIGN §6: ~1 s per SSH round trip) take minutes;
/// ten minutes catches a hung command without killing a slow but healthy one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// A parsed playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playbook {
    /// The file's stem (`nfs` for `nfs.toml`); prefixes step keys.
    pub name: String,
    pub file: PathBuf,
    pub title: String,
    /// Runs only where this expression is true (evaluated per node).
    pub when: Option<String>,
    pub steps: Vec<Step>,
}

/// One idempotent provisioning action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: String,
    pub title: String,
    pub scope: Scope,
    pub when: Option<String>,
    pub on_failure: OnFailure,
    pub check: Vec<Action>,
    /// Empty when the check's actions apply themselves.
    pub apply: Vec<Action>,
    /// Empty when the check is also the verification.
    pub verify: Vec<Action>,
    pub timeout: Duration,
    /// 1-based line of the step in its file.
    pub line: usize,
}

impl Step {
    /// The actions `apply` runs: the explicit ones, or the check's own.
    pub fn apply_actions(&self) -> &[Action] {
        if self.apply.is_empty() {
            &self.check
        } else {
            &self.apply
        }
    }

    /// The actions `verify` runs: the explicit ones, or the check again.
    pub fn verify_actions(&self) -> &[Action] {
        if self.verify.is_empty() {
            &self.check
        } else {
            &self.verify
        }
    }

    /// Every action of the step.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.check.iter().chain(&self.apply).chain(&self.verify)
    }
}

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// On the head node, once.
    Head,
    /// On every compute node, in parallel.
    Nodes,
}

/// What a failure of the step means for the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The node stops; the run stops at the end of the step.
    #[default]
    Stop,
    /// The node is recorded as degraded with the reason and goes on (InfiniBand → gigabit fallback).
    Degrade,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    title: String,
    when: Option<String>,
    #[serde(rename = "step", default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    title: String,
    scope: Scope,
    when: Option<String>,
    #[serde(default)]
    on_failure: OnFailure,
    check: Spanned<Vec<Spanned<RawAction>>>,
    #[serde(default)]
    apply: Vec<Spanned<RawAction>>,
    #[serde(default)]
    verify: Vec<Spanned<RawAction>>,
    timeout_s: Option<u64>,
}

impl Playbook {
    /// Parses a playbook's text; `file` names it in errors and gives its name.
    pub fn parse(file: &Path, text: &str) -> Result<Self, SourceError> {
        let raw: RawPlaybook = from_toml(file.display(), text)?;
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("playbook")
            .to_string();
        let mut ids = BTreeSet::new();
        let mut steps = Vec::new();
        for raw_step in raw.steps {
            let step_span = raw_step.span();
            let s = raw_step.into_inner();
            let id_span = s.id.span();
            let id = s.id.into_inner();
            let at = |field: &str, message: String| {
                SourceError::at(file, text, id_span.clone(), field, message)
            };
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(at(
                    "id",
                    format!("step id `{id}` must be lowercase letters, digits and dashes"),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(at(
                    "id",
                    format!("step id `{id}` is used twice in this playbook"),
                ));
            }
            let actions = |list: Vec<Spanned<RawAction>>, phase: &str| {
                list.into_iter()
                    .enumerate()
                    .map(|(i, a)| RawAction::into_action(a, file, text, &format!("{phase}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
            };
            let check_span = s.check.span();
            let check = actions(s.check.into_inner(), "check")?;
            if check.is_empty() {
                return Err(SourceError::at(
                    file,
                    text,
                    check_span,
                    "check",
                    format!(
                        "step `{id}` has an empty check: say how to tell that it is already done"
                    ),
                ));
            }
            let apply = actions(s.apply, "apply")?;
            if apply.is_empty()
                && let Some(a) = check.iter().find(|a| !a.applies_itself())
            {
                return Err(at(
                    "apply",
                    format!(
                        "step `{id}`: its check has `{}`, which cannot apply itself; add `apply` (for a check-only step: apply = [{{ fail = \"what to do\" }}])",
                        a.describe()
                    ),
                ));
            }
            let verify = actions(s.verify, "verify")?;
            steps.push(Step {
                id,
                title: s.title,
                scope: s.scope,
                when: s.when,
                on_failure: s.on_failure,
                check,
                apply,
                verify,
                timeout: s
                    .timeout_s
                    .map_or(DEFAULT_STEP_TIMEOUT, Duration::from_secs),
                line: line_of(text, step_span.start),
            });
        }
        if steps.is_empty() {
            return Err(SourceError {
                file: file.display().to_string(),
                line: 1,
                field: Some("step".into()),
                message: "the playbook has no [[step]]".into(),
            });
        }
        Ok(Playbook {
            name,
            file: file.to_path_buf(),
            title: raw.title,
            when: raw.when,
            steps,
        })
    }

    /// Reads and parses one playbook file.
    pub fn load(file: &Path) -> Result<Self, SourceError> {
        let text = std::fs::read_to_string(file).map_err(|e| SourceError::unreadable(file, &e))?;
        Self::parse(file, &text)
    }

    /// Loads the named playbooks (`["os-check", "nfs"]`) from `dir`, in that order.
    pub fn load_named(dir: &Path, names: &[&str]) -> Result<Vec<Self>, SourceError> {
        names
            .iter()
            .map(|n| Self::load(&dir.join(format!("{n}.toml"))))
            .collect()
    }

    /// Loads every `*.toml` in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, SourceError> {
        let entries = std::fs::read_dir(dir).map_err(|e| SourceError::unreadable(dir, &e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        files.iter().map(|f| Self::load(f)).collect()
    }
}

/// The playbooks `cluster init` runs, in order. Exactly one users playbook applies: each has a `when`
/// on `users.backend`.
pub const INIT_PLAYBOOKS: &[&str] = &[
    "os-check",
    "users-ldap",
    "users-nis",
    "nfs",
    "infiniband",
    "agent",
];

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
title = "test"

[[step]]
id = "hello"
title = "say hello"
scope = "nodes"
check = [{ run = "test -e /tmp/hello" }]
apply = [{ run = "touch /tmp/hello" }]

[[step]]
id = "conf"
title = "a file"
scope = "head"
check = [{ file = "/etc/x.conf", content = "x = {{ node.name }}\n", mode = "0600" }]
"#;

    fn parse(text: &str) -> Result<Playbook, SourceError> {
        Playbook::parse(Path::new("playbooks/t.toml"), text)
    }

    #[test]
    fn a_good_playbook_parses_with_defaults() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.name, "t");
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].line, 4);
        assert_eq!(p.steps[1].apply_actions(), p.steps[1].check.as_slice());
        assert_eq!(p.steps[0].on_failure, OnFailure::Stop);
        match &p.steps[1].check[0] {
            Action::File(f) => assert_eq!(f.mode, 0o600),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_action_key_names_file_line_and_field() {
        let text = GOOD.replace(
            "apply = [{ run = \"touch /tmp/hello\" }]",
            "apply = [{ run = \"touch\", colour = 1 }]",
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("playbooks/t.toml:9: field `apply`:"),
            "{err}"
        );
        assert!(err.message.contains("colour"), "{err}");
    }

    #[test]
    fn misplaced_modifier_and_two_kinds_are_refused() {
        let text = GOOD.replace(
            "{ run = \"touch /tmp/hello\" }",
            "{ run = \"touch\", mode = \"0644\" }",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            (err.line, err.field.as_deref()),
            (9, Some("apply[0]")),
            "{err}"
        );
        assert!(
            err.message
                .contains("`mode` does not belong to a `run` action"),
            "{err}"
        );
        let text = GOOD.replace(
            "{ run = \"touch /tmp/hello\" }",
            "{ run = \"touch\", package = [\"x\"] }",
        );
        assert!(
            parse(&text)
                .unwrap_err()
                .message
                .contains("exactly one kind")
        );
    }

    #[test]
    fn a_run_check_without_apply_is_refused_at_the_step() {
        let text = GOOD.replace("apply = [{ run = \"touch /tmp/hello\" }]\n", "");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            (err.line, err.field.as_deref()),
            (5, Some("apply")),
            "{err}"
        );
        assert!(err.message.contains("step `hello`"), "{err}");
    }

    #[test]
    fn bad_ids_scope_and_regex_are_refused() {
        let err = parse(&GOOD.replace("id = \"conf\"", "id = \"hello\"")).unwrap_err();
        assert!(err.message.contains("used twice"), "{err}");
        assert_eq!(err.line, 12);
        let err = parse(&GOOD.replace("scope = \"head\"", "scope = \"everywhere\"")).unwrap_err();
        assert_eq!(
            (err.line, err.field.as_deref()),
            (14, Some("scope")),
            "{err}"
        );
        let err = parse(&GOOD.replace(
            "{ run = \"test -e /tmp/hello\" }",
            "{ run = \"x\", expect_stdout = \"(\" }",
        ))
        .unwrap_err();
        assert!(err.message.contains("regular expression"), "{err}");
        let err = parse(&GOOD.replace("mode = \"0600\"", "mode = \"rw\"")).unwrap_err();
        assert!(err.message.contains("octal"), "{err}");
    }
}
