//! The action vocabulary of playbooks: what a step's `check`, `apply` and `verify` are made of.
//!
//! Each action is an inline table with exactly one kind key:
//!
//! | kind | check | apply |
//! |---|---|---|
//! | `run = "cmd"` (+ `expect_exit = [0]`, `expect_stdout = "regex"`) | exit code and stdout match | runs it; must match |
//! | `file = "/path"` (+ `template`, `content` or `source`; `mode`, `owner`, `restart`, `vars`) | content (and mode/owner) equal | writes it atomically, then restarts `restart` |
//! | `package = ["a", "b"]` | all installed | installs the missing ones when a repository is reachable |
//! | `service = "unit"` (+ `enabled`, `active`) | `systemctl is-enabled` / `is-active` | `systemctl enable --now` |
//! | `builtin = "name"` (+ `args`) | Rust logic from the builtin registry | likewise |
//! | `fail = "what to do"` | never satisfied | fails with the message (for check-only steps) |
//!
//! Strings in `run`, `file`, `args`, `vars`, `package` and `service` are templates (`{{ node.name }}`).

use beowulf_types::SourceError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// One action of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(RunAction),
    File(FileAction),
    Package(PackageAction),
    Service(ServiceAction),
    Builtin(BuiltinAction),
    Fail(String),
}

/// A shell command and what it must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAction {
    pub command: String,
    /// Exit codes that count as success (default `[0]`).
    pub expect_exit: Vec<i32>,
    /// A regular expression stdout must match (searched, not anchored), if any; rendered as a template first.
    pub expect_stdout: Option<String>,
}

/// A file that must have given content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAction {
    pub path: String,
    pub content: FileContent,
    pub mode: u32,
    /// `user:group` the file must belong to, if not root's.
    pub owner: Option<String>,
    /// A systemd unit restarted after the file changed (`daemon-reload` first for unit files).
    pub restart: Option<String>,
    /// Extra template variables, visible as `vars.NAME` (rendered themselves first).
    pub vars: BTreeMap<String, String>,
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// A template in `playbooks/templates/`.
    Template(String),
    /// An inline template.
    Inline(String),
    /// A file on the machine running the engine, copied byte for byte (binaries, certificates).
    Source(String),
}

/// Packages that must be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageAction {
    pub packages: Vec<String>,
}

/// A systemd unit that must be enabled and/or active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAction {
    pub unit: String,
    pub enabled: bool,
    pub active: bool,
}

/// A named step implemented in Rust, resolved through the builtin registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinAction {
    pub name: String,
    pub args: BTreeMap<String, String>,
}

impl Action {
    /// Whether `apply` of this action can be derived from its check (it knows how to make itself true).
    pub fn applies_itself(&self) -> bool {
        !matches!(self, Action::Run(_) | Action::Fail(_))
    }

    /// The template file this action renders, if any.
    pub fn template(&self) -> Option<&str> {
        match self {
            Action::File(FileAction {
                content: FileContent::Template(t),
                ..
            }) => Some(t),
            _ => None,
        }
    }

    /// The builtin this action calls, if any.
    pub fn builtin(&self) -> Option<&str> {
        match self {
            Action::Builtin(b) => Some(&b.name),
            _ => None,
        }
    }

    /// Every template string in the action (for syntax checks).
    pub fn template_strings(&self) -> Vec<&str> {
        match self {
            Action::Run(r) => std::iter::once(r.command.as_str())
                .chain(r.expect_stdout.as_deref())
                .collect(),
            Action::File(f) => {
                let mut v: Vec<&str> = vec![&f.path];
                if let FileContent::Inline(s) | FileContent::Source(s) = &f.content {
                    v.push(s);
                }
                v.extend(f.vars.values().map(String::as_str));
                v
            }
            Action::Package(p) => p.packages.iter().map(String::as_str).collect(),
            Action::Service(s) => vec![&s.unit],
            Action::Builtin(b) => b.args.values().map(String::as_str).collect(),
            Action::Fail(m) => vec![m],
        }
    }

    /// A short description for progress and errors (`run: modprobe rdma_rxe`).
    pub fn describe(&self) -> String {
        match self {
            Action::Run(r) => format!("run: {}", r.command),
            Action::File(f) => format!("file: {}", f.path),
            Action::Package(p) => format!("package: {}", p.packages.join(" ")),
            Action::Service(s) => format!("service: {}", s.unit),
            Action::Builtin(b) => format!("builtin: {}", b.name),
            Action::Fail(m) => format!("fail: {m}"),
        }
    }
}

/// An action as written; turned into an [`Action`] after checking that exactly one kind is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAction {
    run: Option<String>,
    expect_exit: Option<Vec<i32>>,
    expect_stdout: Option<String>,
    file: Option<String>,
    template: Option<String>,
    content: Option<String>,
    source: Option<String>,
    mode: Option<String>,
    owner: Option<String>,
    restart: Option<String>,
    vars: Option<BTreeMap<String, String>>,
    package: Option<Vec<String>>,
    service: Option<String>,
    enabled: Option<bool>,
    active: Option<bool>,
    builtin: Option<String>,
    args: Option<BTreeMap<String, String>>,
    fail: Option<String>,
}

/// File mode when a `file` action names none: world-readable config, as package-installed configs are.
const DEFAULT_FILE_MODE: u32 = 0o644;

impl RawAction {
    /// Checks the combination of keys; `field` is where the action sits (`check[0]`).
    pub(crate) fn into_action(
        raw: Spanned<RawAction>,
        file: &Path,
        text: &str,
        field: &str,
    ) -> Result<Action, SourceError> {
        let span = raw.span();
        let r = raw.into_inner();
        let err = |message: String| SourceError::at(file, text, span.clone(), field, message);
        let kinds: Vec<&str> = [
            ("run", r.run.is_some()),
            ("file", r.file.is_some()),
            ("package", r.package.is_some()),
            ("service", r.service.is_some()),
            ("builtin", r.builtin.is_some()),
            ("fail", r.fail.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, present)| present.then_some(k))
        .collect();
        let kind =
            match kinds.as_slice() {
                [one] => *one,
                [] => return Err(err(
                    "an action needs one of `run`, `file`, `package`, `service`, `builtin`, `fail`"
                        .into(),
                )),
                many => {
                    return Err(err(format!(
                        "an action has exactly one kind, this one has {}",
                        many.join(" and ")
                    )));
                }
            };
        let allowed: &[&str] = match kind {
            "run" => &["expect_exit", "expect_stdout"],
            "file" => &[
                "template", "content", "source", "mode", "owner", "restart", "vars",
            ],
            "service" => &["enabled", "active"],
            "builtin" => &["args"],
            _ => &[],
        };
        let modifiers = [
            ("expect_exit", r.expect_exit.is_some()),
            ("expect_stdout", r.expect_stdout.is_some()),
            ("template", r.template.is_some()),
            ("content", r.content.is_some()),
            ("source", r.source.is_some()),
            ("mode", r.mode.is_some()),
            ("owner", r.owner.is_some()),
            ("restart", r.restart.is_some()),
            ("vars", r.vars.is_some()),
            ("enabled", r.enabled.is_some()),
            ("active", r.active.is_some()),
            ("args", r.args.is_some()),
        ];
        if let Some((bad, _)) = modifiers
            .iter()
            .find(|(m, present)| *present && !allowed.contains(m))
        {
            return Err(err(format!("`{bad}` does not belong to a `{kind}` action")));
        }
        Ok(match kind {
            "run" => {
                if let Some(re) = r
                    .expect_stdout
                    .as_ref()
                    .filter(|re| !re.contains("{{") && !re.contains("{%"))
                {
                    regex::Regex::new(re).map_err(|e| {
                        err(format!("`expect_stdout` is not a regular expression: {e}"))
                    })?;
                }
                Action::Run(RunAction {
                    command: r.run.unwrap_or_default(),
                    expect_exit: r.expect_exit.unwrap_or_else(|| vec![0]),
                    expect_stdout: r.expect_stdout,
                })
            }
            "file" => {
                let content =
                    match (r.template, r.content, r.source) {
                        (Some(t), None, None) => FileContent::Template(t),
                        (None, Some(c), None) => FileContent::Inline(c),
                        (None, None, Some(s)) => FileContent::Source(s),
                        _ => return Err(err(
                            "a `file` action needs exactly one of `template`, `content`, `source`"
                                .into(),
                        )),
                    };
                let mode = match r.mode {
                    None => DEFAULT_FILE_MODE,
                    Some(m) => u32::from_str_radix(&m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            err(format!(
                                "`mode = \"{m}\"` is not an octal file mode like \"0644\""
                            ))
                        })?,
                };
                Action::File(FileAction {
                    path: r.file.unwrap_or_default(),
                    content,
                    mode,
                    owner: r.owner,
                    restart: r.restart,
                    vars: r.vars.unwrap_or_default(),
                })
            }
            "package" => {
                let packages = r.package.unwrap_or_default();
                if packages.is_empty() {
                    return Err(err("`package` lists no packages".into()));
                }
                Action::Package(PackageAction { packages })
            }
            "service" => {
                let enabled = r.enabled.unwrap_or(true);
                let active = r.active.unwrap_or(true);
                if !enabled && !active {
                    return Err(err(
                        "a `service` action with enabled = false and active = false checks nothing"
                            .into(),
                    ));
                }
                Action::Service(ServiceAction {
                    unit: r.service.unwrap_or_default(),
                    enabled,
                    active,
                })
            }
            "builtin" => Action::Builtin(BuiltinAction {
                name: r.builtin.unwrap_or_default(),
                args: r.args.unwrap_or_default(),
            }),
            _ => Action::Fail(r.fail.unwrap_or_default()),
        })
    }
}
