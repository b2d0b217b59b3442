//! Checks on the workspace's shape that keep its rules true.

#[path = "architecture/imports.rs"]
mod imports;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn the_scheduler_depends_on_neither_tokio_nor_tonic() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "beowulf-scheduler",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(beowulf_tests::repo_root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("beowulf-scheduler"), "{tree}");
    for forbidden in ["tokio", "tonic", "redb", "hyper"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(forbidden)),
            "the pure scheduler depends on {forbidden}:\n{tree}"
        );
    }
}

/// `cargo metadata` of the workspace (with its dependency graph).
fn metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(beowulf_tests::repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn beowulf_types_depends_on_no_project_crate_and_not_on_tonic_or_prost() {
    let meta = metadata();
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|id| name_of.get(id.as_str().unwrap_or("")).copied())
        .collect();
    // The crates beowulf-types builds with (normal and build dependencies, transitively).
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| (n["id"].as_str().unwrap_or(""), n))
        .collect();
    let types_id = name_of
        .iter()
        .find(|(_, name)| **name == "beowulf-types")
        .map(|(id, _)| *id)
        .expect("beowulf-types is a workspace member");
    let mut seen = BTreeSet::new();
    let mut todo = vec![types_id];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let not_dev = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].as_str() != Some("dev"));
            let dep_id = dep["pkg"].as_str().unwrap_or("");
            if not_dev && seen.insert(dep_id) {
                todo.push(dep_id);
            }
        }
    }
    let used: BTreeSet<&str> = seen.iter().map(|id| name_of[id]).collect();
    let project: Vec<&&str> = used.iter().filter(|n| members.contains(**n)).collect();
    assert!(
        project.is_empty(),
        "beowulf-types must stay a leaf of the workspace; it depends on {project:?}"
    );
    let wire: Vec<&&str> = used
        .iter()
        .filter(|n| n.starts_with("tonic") || n.starts_with("prost"))
        .collect();
    assert!(
        wire.is_empty(),
        "beowulf-types must know nothing of the wire; it depends on {wire:?}"
    );
    // Not even for its tests: a dev-dependency on a project crate would be a circle in the graph.
    let types = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "beowulf-types")
        .expect("beowulf-types");
    let declared: Vec<&str> = types["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .filter(|n| members.contains(n))
        .collect();
    assert!(
        declared.is_empty(),
        "beowulf-types declares project crates: {declared:?}"
    );
}

/// The workspace's crates: name, directory and the project crates each declares a dependency on.
fn members(meta: &Value) -> Vec<(String, PathBuf, BTreeSet<String>)> {
    let ids: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages: Vec<&Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| ids.contains(p["id"].as_str().unwrap_or("")))
        .collect();
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let dir = Path::new(p["manifest_path"].as_str().expect("manifest_path"))
                .parent()
                .expect("a manifest has a directory")
                .to_path_buf();
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["name"].as_str())
                .filter(|n| names.contains(n))
                .map(str::to_string)
                .collect();
            (p["name"].as_str().unwrap_or("").to_string(), dir, deps)
        })
        .collect()
}

/// The tree shows the architecture: a crate sits inside another crate's directory only as a part
/// of it (the outer crate uses it, as headnoded uses the scheduler). A crate that uses neither
/// (the CLI, the lab and the simulator once sat under `headnode/` and `hardware/`) is a room of its
/// own at the top.
#[test]
fn a_crate_nested_in_another_is_a_part_the_outer_one_uses() {
    let crates = members(&metadata());
    assert!(crates.len() >= 10, "{} workspace crates", crates.len());
    let mut misplaced = Vec::new();
    for (inner, inner_dir, _) in &crates {
        for (outer, outer_dir, outer_deps) in &crates {
            if inner != outer && inner_dir.starts_with(outer_dir) && !outer_deps.contains(inner) {
                misplaced.push(format!(
                    "{inner} ({}) sits inside {outer} ({}), which does not use it",
                    inner_dir.display(),
                    outer_dir.display()
                ));
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "move these crates to a directory of their own:\n{}",
        misplaced.join("\n")
    );
}

#[test]
fn no_import_circle_between_the_files_of_a_crate() {
    let meta = metadata();
    let root = beowulf_tests::repo_root()
        .canonicalize()
        .expect("the repository's root");
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut report = Vec::new();
    let mut crates = 0;
    let packages = meta["packages"].as_array().expect("packages");
    for package in packages
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap_or("")))
    {
        let dir = Path::new(package["manifest_path"].as_str().expect("manifest_path"))
            .parent()
            .expect("a manifest's directory")
            .join("src");
        for target in package["targets"].as_array().into_iter().flatten() {
            let compiled = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| matches!(k.as_str(), Some("lib" | "bin" | "proc-macro")));
            let src = PathBuf::from(target["src_path"].as_str().expect("src_path"));
            if !compiled || !src.starts_with(&dir) {
                continue;
            }
            crates += 1;
            let graph = imports::crate_graph(&src);
            let name = |i: usize| {
                graph.files[i]
                    .strip_prefix(&root)
                    .unwrap_or(&graph.files[i])
                    .display()
                    .to_string()
            };
            for cycle in imports::cycles(&graph) {
                let files: Vec<String> = cycle.iter().map(|&i| name(i)).collect();
                let mut lines = vec![format!("circle: {}", files.join(", "))];
                for (&(from, to), names) in &graph.edges {
                    if cycle.contains(&from) && cycle.contains(&to) {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        lines.push(format!(
                            "  {} -> {}: {}",
                            name(from),
                            name(to),
                            names.join(", ")
                        ));
                    }
                }
                report.push(lines.join("\n"));
            }
        }
    }
    assert!(crates > 10, "only {crates} crate roots found");
    assert!(
        report.is_empty(),
        "files that import each other in a circle (move the shared item to the file that owns it, \
         or to a small module both use):\n{}",
        report.join("\n")
    );
}

/// The circle check itself, on a made-up crate: which references it counts and which it does not.
#[test]
fn the_import_graph_follows_re_exports_and_ignores_declarations_and_unit_tests() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = [
        // A parent declaring its children and publishing their items: no edge.
        (
            "lib.rs",
            "mod a;\nmod b;\nmod c;\nmod d;\npub use a::A;\npub use b::{B, helper};\npub const N: u8 = 1;\n",
        ),
        // a.rs takes `B` through the root's re-export: an edge to b.rs, not to lib.rs.
        ("a.rs", "use crate::B;\npub struct A(B);\n"),
        // b.rs reaches a.rs by a path in code, without a `use`.
        (
            "b.rs",
            "pub struct B;\npub fn helper() -> Option<crate::a::A> { None }\n",
        ),
        // c.rs and d.rs: a circle only through unit tests, which is not read.
        (
            "c.rs",
            "pub struct C;\n#[cfg(test)]\nmod tests {\n    use crate::d::D;\n}\n",
        ),
        // d.rs takes an item its parent's file defines: an edge to lib.rs.
        (
            "d.rs",
            "use super::c::C;\npub struct D(C, [u8; crate::N as usize]);\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write a source file");
    }
    let graph = imports::crate_graph(&dir.path().join("lib.rs"));
    let name = |i: usize| {
        graph.files[i]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string()
    };
    let edges: BTreeSet<(String, String)> = graph
        .edges
        .keys()
        .map(|&(from, to)| (name(from), name(to)))
        .collect();
    let edge = |from: &str, to: &str| (from.to_string(), to.to_string());
    assert_eq!(
        edges,
        BTreeSet::from([
            edge("a.rs", "b.rs"),
            edge("b.rs", "a.rs"),
            edge("d.rs", "c.rs"),
            edge("d.rs", "lib.rs"),
        ])
    );
    let cycles: Vec<Vec<String>> = imports::cycles(&graph)
        .into_iter()
        .map(|c| c.into_iter().map(name).collect())
        .collect();
    assert_eq!(cycles, [["a.rs", "b.rs"]]);
}
