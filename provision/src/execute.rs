//! What each action kind means on a node: how it is checked and how it is applied.
//!
//! Self-applying actions (`file`, `package`, `service`, `builtin`) check themselves again before
//! applying, so a step with several files rewrites (and restarts for) only the ones that differ.

use crate::action::{Action, FileAction, FileContent, PackageAction, RunAction, ServiceAction};
use crate::builtin::{BuiltinCx, BuiltinRegistry};
use crate::check::Check;
use crate::error::{StepError, tail};
use crate::inventory::ClusterInventory;
use crate::template::Templates;
use crate::transport::{Transport, shell_quote};
use beowulf_types::NodeName;
use minijinja::Value;
use std::collections::BTreeMap;

/// Everything an action needs on one node.
#[derive(Debug, Clone, Copy)]
pub struct ActionCx<'a> {
    pub node: &'a NodeName,
    pub transport: &'a dyn Transport,
    pub templates: &'a Templates,
    pub context: &'a Value,
    pub builtins: &'a BuiltinRegistry,
    pub inventory: &'a ClusterInventory,
    pub vars: &'a BTreeMap<String, String>,
    pub peers: &'a dyn crate::builtin::Peers,
}

impl ActionCx<'_> {
    fn render(&self, s: &str) -> Result<String, StepError> {
        self.templates
            .render_str(s, self.context)
            .map_err(StepError::Template)
    }
}

/// Checks one action.
pub async fn check(action: &Action, cx: &ActionCx<'_>) -> Result<Check, StepError> {
    match action {
        Action::Run(r) => check_run(r, cx).await,
        Action::File(f) => check_file(f, cx).await,
        Action::Package(p) => Ok(match missing_packages(p, cx).await?.as_slice() {
            [] => Check::Satisfied,
            missing => Check::Unsatisfied(format!("packages missing: {}", missing.join(", "))),
        }),
        Action::Service(s) => check_service(s, cx).await,
        Action::Builtin(b) => {
            let builtin = cx.builtins.get(&b.name)?;
            builtin.check(&builtin_cx(b, cx)?).await
        }
        Action::Fail(message) => Ok(Check::Unsatisfied(cx.render(message)?)),
    }
}

/// Applies one action.
pub async fn apply(action: &Action, cx: &ActionCx<'_>) -> Result<(), StepError> {
    if action.applies_itself() && check(action, cx).await? == Check::Satisfied {
        return Ok(());
    }
    match action {
        Action::Run(r) => {
            let command = cx.render(&r.command)?;
            let out = cx.transport.exec(&command).await?;
            if run_matches(r, &out, cx)? {
                Ok(())
            } else {
                Err(StepError::command(
                    &command,
                    &out,
                    &r.expect_exit,
                    "fix the cause on the node",
                ))
            }
        }
        Action::File(f) => apply_file(f, cx).await,
        Action::Package(p) => install_packages(p, cx).await,
        Action::Service(s) => apply_service(s, cx).await,
        Action::Builtin(b) => {
            let builtin = cx.builtins.get(&b.name)?;
            builtin.apply(&builtin_cx(b, cx)?).await
        }
        Action::Fail(message) => Err(StepError::failed(cx.render(message)?, "then resume")),
    }
}

fn builtin_cx<'a>(
    b: &crate::action::BuiltinAction,
    cx: &ActionCx<'a>,
) -> Result<BuiltinCx<'a>, StepError> {
    let args = b
        .args
        .iter()
        .map(|(k, v)| Ok((k.clone(), cx.render(v)?)))
        .collect::<Result<BTreeMap<_, _>, StepError>>()?;
    Ok(BuiltinCx {
        node: cx.node,
        transport: cx.transport,
        inventory: cx.inventory,
        args,
        vars: cx.vars,
        peers: cx.peers,
    })
}

fn run_matches(
    r: &RunAction,
    out: &crate::transport::ExecOutput,
    cx: &ActionCx<'_>,
) -> Result<bool, StepError> {
    if !r.expect_exit.contains(&out.status) {
        return Ok(false);
    }
    match &r.expect_stdout {
        None => Ok(true),
        Some(re) => regex::Regex::new(&cx.render(re)?)
            .map(|re| re.is_match(&out.stdout))
            .map_err(|e| StepError::Template(format!("expect_stdout: {e}"))),
    }
}

async fn check_run(r: &RunAction, cx: &ActionCx<'_>) -> Result<Check, StepError> {
    let command = cx.render(&r.command)?;
    let out = cx.transport.exec(&command).await?;
    if run_matches(r, &out, cx)? {
        return Ok(Check::Satisfied);
    }
    let output = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let want = r
        .expect_stdout
        .as_ref()
        .map(|re| format!(", stdout must match /{re}/"))
        .unwrap_or_default();
    Ok(Check::Unsatisfied(format!(
        "`{command}` exited {}{want}: {}",
        out.status,
        tail(output)
    )))
}

/// The bytes a file action wants, and its rendered path.
async fn desired_file(f: &FileAction, cx: &ActionCx<'_>) -> Result<(String, Vec<u8>), StepError> {
    let path = cx.render(&f.path)?;
    let bytes = match &f.content {
        FileContent::Template(name) => {
            let context = with_file_vars(f, cx)?;
            cx.templates
                .render_file(name, &context)
                .map_err(StepError::Template)?
                .into_bytes()
        }
        FileContent::Inline(text) => {
            let context = with_file_vars(f, cx)?;
            cx.templates
                .render_str(text, &context)
                .map_err(StepError::Template)?
                .into_bytes()
        }
        FileContent::Source(source) => {
            let source = cx.render(source)?;
            tokio::fs::read(&source).await.map_err(|e| {
                StepError::failed(
                    format!("cannot read {source} to copy it to {path}: {e}"),
                    "build or provide that file, then resume",
                )
            })?
        }
    };
    Ok((path, bytes))
}

/// The context with the action's own `vars` (rendered) merged over the run's.
fn with_file_vars(f: &FileAction, cx: &ActionCx<'_>) -> Result<Value, StepError> {
    if f.vars.is_empty() {
        return Ok(cx.context.clone());
    }
    let mut json = crate::context::node_json(cx.inventory, cx.node, cx.vars);
    for (k, v) in &f.vars {
        json["vars"][k] = serde_json::Value::String(cx.render(v)?);
    }
    Ok(Value::from(minijinja::value::Serde(json)))
}

async fn check_file(f: &FileAction, cx: &ActionCx<'_>) -> Result<Check, StepError> {
    let (path, want) = desired_file(f, cx).await?;
    match cx.transport.read_file(&path).await? {
        None => return Ok(Check::Unsatisfied(format!("{path} is missing"))),
        Some(have) if have != want => return Ok(Check::Unsatisfied(format!("{path} differs"))),
        Some(_) => {}
    }
    let command = format!("stat -c '%a %U:%G' {}", shell_quote(&path));
    let out = cx.transport.exec(&command).await?;
    if out.status != 0 {
        return Err(StepError::command(
            &command,
            &out,
            &[0],
            "check the file on the node",
        ));
    }
    let mut fields = out.stdout.split_whitespace();
    let (mode, owner) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    if u32::from_str_radix(mode, 8).ok() != Some(f.mode) {
        return Ok(Check::Unsatisfied(format!(
            "{path} has mode {mode}, wants {:o}",
            f.mode
        )));
    }
    let want_owner = f.owner.as_deref().unwrap_or("root:root");
    if owner != want_owner {
        return Ok(Check::Unsatisfied(format!(
            "{path} belongs to {owner}, wants {want_owner}"
        )));
    }
    Ok(Check::Satisfied)
}

async fn apply_file(f: &FileAction, cx: &ActionCx<'_>) -> Result<(), StepError> {
    let (path, bytes) = desired_file(f, cx).await?;
    cx.transport.put_file(&path, &bytes, f.mode).await?;
    let owner = f.owner.as_deref().unwrap_or("root:root");
    let mut command = format!("chown {} {}", shell_quote(owner), shell_quote(&path));
    if path.starts_with("/etc/systemd/") {
        command.push_str(" && systemctl daemon-reload");
    }
    // try-restart, and only a unit that exists: a service not installed or not running yet (a
    // first install) is left to the step that starts it.
    if let Some(unit) = &f.restart {
        let unit = shell_quote(&cx.render(unit)?);
        command.push_str(&format!(
            " && if systemctl cat {unit} >/dev/null 2>&1; then systemctl try-restart {unit}; fi"
        ));
    }
    let out = cx.transport.exec(&command).await?;
    if out.status != 0 {
        return Err(StepError::command(
            &command,
            &out,
            &[0],
            "the file was written; fix its owner or the service, then resume",
        ));
    }
    Ok(())
}

/// Packages of `p` not installed on the node (dpkg on Debian/Ubuntu, rpm on Rocky/Alma).
async fn missing_packages(p: &PackageAction, cx: &ActionCx<'_>) -> Result<Vec<String>, StepError> {
    let names = rendered_packages(p, cx)?;
    let command = format!(
        "for p in {}; do if command -v dpkg-query >/dev/null 2>&1; then dpkg-query -W -f='${{Status}}' \"$p\" 2>/dev/null | grep -q 'install ok installed' || echo \"$p\"; else rpm -q \"$p\" >/dev/null 2>&1 || echo \"$p\"; fi; done",
        names
            .iter()
            .map(|n| shell_quote(n))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cx.transport.exec(&command).await?;
    if out.status != 0 {
        return Err(StepError::command(
            &command,
            &out,
            &[0],
            "check the node's package database",
        ));
    }
    Ok(out.stdout.split_whitespace().map(str::to_string).collect())
}

fn rendered_packages(p: &PackageAction, cx: &ActionCx<'_>) -> Result<Vec<String>, StepError> {
    p.packages.iter().map(|n| cx.render(n)).collect()
}

async fn install_packages(p: &PackageAction, cx: &ActionCx<'_>) -> Result<(), StepError> {
    let missing = missing_packages(p, cx).await?;
    let list = missing
        .iter()
        .map(|n| shell_quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    let command = format!(
        "if command -v apt-get >/dev/null 2>&1; then apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends {list}; else dnf install -y {list}; fi"
    );
    let out = cx.transport.exec(&command).await?;
    if out.status != 0 {
        return Err(StepError::Command {
            command,
            status: out.status,
            expected: vec![0],
            tail: format!(
                "packages missing on {}: {}; installing them failed (is a package repository reachable?): {}",
                cx.node,
                missing.join(", "),
                tail(&out.stderr)
            ),
            hint: format!(
                "give the node a reachable mirror or install {} by hand, then resume",
                missing.join(" ")
            ),
        });
    }
    Ok(())
}

async fn check_service(s: &ServiceAction, cx: &ActionCx<'_>) -> Result<Check, StepError> {
    let unit = shell_quote(&cx.render(&s.unit)?);
    let out = cx
        .transport
        // The last line of each: for a SysV service (Debian's nslcd) systemctl first says it is
        // redirecting to systemd-sysv-install, then the state.
        .exec(&format!(
            "echo \"$(systemctl is-enabled {unit} 2>&1 | tail -n1)\"; echo \"$(systemctl is-active {unit} 2>&1 | tail -n1)\""
        ))
        .await?;
    let mut lines = out.stdout.lines();
    let (enabled, active) = (
        lines.next().unwrap_or("").trim(),
        lines.next().unwrap_or("").trim(),
    );
    let mut wrong = Vec::new();
    if s.enabled && !matches!(enabled, "enabled" | "static" | "alias" | "generated") {
        wrong.push(format!("is-enabled says `{enabled}`"));
    }
    if s.active && active != "active" {
        wrong.push(format!("is-active says `{active}`"));
    }
    Ok(if wrong.is_empty() {
        Check::Satisfied
    } else {
        Check::Unsatisfied(format!("{unit}: {}", wrong.join(", ")))
    })
}

async fn apply_service(s: &ServiceAction, cx: &ActionCx<'_>) -> Result<(), StepError> {
    let unit = shell_quote(&cx.render(&s.unit)?);
    let verb = match (s.enabled, s.active) {
        (true, true) => "enable --now",
        (true, false) => "enable",
        _ => "start",
    };
    let command = format!("systemctl daemon-reload && systemctl {verb} {unit}");
    let out = cx.transport.exec(&command).await?;
    if out.status != 0 {
        let journal = cx
            .transport
            .exec(&format!("journalctl -u {unit} -n 20 --no-pager 2>&1"))
            .await
            .map(|o| o.stdout)
            .unwrap_or_default();
        let mut out = out;
        out.stderr.push_str(&journal);
        return Err(StepError::command(
            &command,
            &out,
            &[0],
            &format!("see `journalctl -u {unit}` on the node, fix the unit, then resume"),
        ));
    }
    Ok(())
}
