//! Rendering a run for people: per-node progress (indicatif bars) and the final step × node table.
//! Everything is derived from [`ProvisionEvent`]s by [`ProgressModel`], a pure fold, so the CLI can render
//! a run it watches from another shell exactly as one it started.

use crate::engine::Outline;
use crate::event::{Outcome, Phase, ProvisionEvent};
use beowulf_types::NodeName;
use comfy_table::{Cell, Table};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;

/// Up to this many nodes the summary has one column per node; beyond it, one column per outcome with
/// counts, because a 500-column table helps nobody (the failed and degraded nodes are listed below it).
pub const MAX_NODE_COLUMNS: usize = 16;

/// The playbook whose steps decide whether a node has InfiniBand (its steps degrade to gigabit).
pub const FABRIC_PLAYBOOK: &str = "infiniband";

/// One node's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeProgress {
    /// Steps finished on this node (any outcome).
    pub done: usize,
    pub total: usize,
    /// What it is doing now: `nfs/mount-home: apply`.
    pub current: String,
    pub failed: bool,
}

/// The state of a run as the events tell it.
#[derive(Debug, Clone)]
pub struct ProgressModel {
    outline: Outline,
    nodes: BTreeMap<NodeName, NodeProgress>,
    results: BTreeMap<(String, NodeName), Outcome>,
}

impl ProgressModel {
    /// Nothing done yet.
    pub fn new(outline: Outline) -> Self {
        let nodes = std::iter::once(outline.head.clone())
            .chain(outline.nodes.iter().cloned())
            .map(|n| {
                let total = outline.steps_for(&n);
                (
                    n,
                    NodeProgress {
                        total,
                        ..NodeProgress::default()
                    },
                )
            })
            .collect();
        Self {
            outline,
            nodes,
            results: BTreeMap::new(),
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, e: &ProvisionEvent) {
        let Some(p) = self.nodes.get_mut(&e.node) else {
            return;
        };
        if e.phase == Phase::Done {
            p.done += 1;
            p.failed |= matches!(e.outcome, Outcome::Failed { .. });
            p.current = format!("{}: {}", e.step, e.outcome.label());
            self.results
                .insert((e.step.clone(), e.node.clone()), e.outcome.clone());
        } else {
            p.current = format!("{}: {}", e.step, e.phase.as_str());
        }
    }

    /// All nodes, head first.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeName, &NodeProgress)> {
        std::iter::once(&self.outline.head)
            .chain(self.outline.nodes.iter())
            .filter_map(|n| self.nodes.get(n).map(|p| (n, p)))
    }

    /// The final outcome of `step` on `node`, if known.
    pub fn result(&self, step: &str, node: &NodeName) -> Option<&Outcome> {
        self.results.get(&(step.to_string(), node.clone()))
    }

    /// The step × node table (or step × outcome counts for big clusters).
    pub fn summary_table(&self) -> Table {
        let mut table = Table::new();
        let columns: Vec<&NodeName> = std::iter::once(&self.outline.head)
            .chain(self.outline.nodes.iter())
            .collect();
        let per_node = columns.len() <= MAX_NODE_COLUMNS;
        let labels = [
            "ok",
            "changed",
            "would change",
            "degraded",
            "FAILED",
            "skipped",
        ];
        let mut header = vec!["step".to_string()];
        if per_node {
            header.extend(columns.iter().map(|c| c.to_string()));
        } else {
            header.extend(labels.iter().map(|l| l.to_string()));
        }
        table.set_header(header);
        for (step, _, _) in &self.outline.steps {
            let mut row = vec![Cell::new(step)];
            if per_node {
                row.extend(
                    columns
                        .iter()
                        .map(|n| Cell::new(self.result(step, n).map_or("-", Outcome::label))),
                );
            } else {
                for label in labels {
                    let count = columns
                        .iter()
                        .filter(|n| self.result(step, n).is_some_and(|o| o.label() == label))
                        .count();
                    row.push(Cell::new(count));
                }
            }
            table.add_row(row);
        }
        table
    }

    /// Lines under the table: every failure and degradation with its reason, and a total.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for ((step, node), outcome) in &self.results {
            *counts.entry(outcome.label()).or_default() += 1;
            match outcome {
                Outcome::Failed { error } => {
                    notes.push(format!("FAILED {node} at {step}: {error}"))
                }
                Outcome::Degraded { reason } => {
                    notes.push(format!("degraded {node} at {step}: {reason}"))
                }
                _ => {}
            }
        }
        let total: Vec<String> = counts.iter().map(|(l, c)| format!("{c} {l}")).collect();
        notes.extend(self.fabric_note());
        notes.push(format!("steps × nodes: {}", total.join(", ")));
        notes
    }

    /// Whether a step fell back (`on_failure = "degrade"`) on some node.
    pub fn has_degraded(&self) -> bool {
        self.results
            .values()
            .any(|o| matches!(o, Outcome::Degraded { .. }))
    }

    /// Which nodes came out of the run with InfiniBand: those that took part in the fabric
    /// playbook's steps ([`FABRIC_PLAYBOOK`]) without any of them degrading or failing. `None` when
    /// the run had no such steps, or is a plan (nothing was probed).
    fn fabric_note(&self) -> Option<String> {
        let prefix = format!("{FABRIC_PLAYBOOK}/");
        let (mut ib, mut gigabit) = (Vec::new(), Vec::new());
        for node in &self.outline.nodes {
            let outcomes: Vec<&Outcome> = self
                .results
                .iter()
                .filter(|((step, n), _)| n == node && step.starts_with(&prefix))
                .map(|(_, outcome)| outcome)
                .collect();
            if outcomes
                .iter()
                .any(|o| matches!(o, Outcome::WouldChange { .. } | Outcome::Started))
            {
                return None;
            }
            if outcomes.is_empty() {
                continue;
            }
            let works = outcomes.iter().all(|o| {
                matches!(
                    o,
                    Outcome::Satisfied | Outcome::Changed | Outcome::Skipped { .. }
                )
            }) && !outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Skipped { .. }));
            if works {
                ib.push(node.as_str());
            } else {
                gigabit.push(node.as_str());
            }
        }
        if ib.is_empty() && gigabit.is_empty() {
            return None;
        }
        let list = |nodes: &[&str]| {
            if nodes.is_empty() {
                "none".to_string()
            } else {
                nodes.join(", ")
            }
        };
        Some(format!(
            "fabric: InfiniBand on {}; gigabit only on {}",
            list(&ib),
            list(&gigabit)
        ))
    }

    /// The table and the notes as text.
    pub fn summary(&self) -> String {
        let mut s = self.summary_table().to_string();
        for n in self.notes() {
            s.push('\n');
            s.push_str(&n);
        }
        s
    }
}

/// The summary of a finished run, from its events alone.
pub fn summarize(outline: Outline, events: &[ProvisionEvent]) -> String {
    let mut model = ProgressModel::new(outline);
    for e in events {
        model.apply(e);
    }
    model.summary()
}

/// Live per-node progress bars, fed with events.
#[derive(Debug)]
pub struct ProgressBars {
    model: ProgressModel,
    _multi: MultiProgress,
    bars: BTreeMap<NodeName, ProgressBar>,
}

impl ProgressBars {
    /// Bars on stderr (hidden when stderr is not a terminal, as indicatif does).
    pub fn new(outline: Outline) -> Self {
        Self::with_target(outline, ProgressDrawTarget::stderr())
    }

    /// Bars drawn nowhere (tests).
    pub fn hidden(outline: Outline) -> Self {
        Self::with_target(outline, ProgressDrawTarget::hidden())
    }

    fn with_target(outline: Outline, target: ProgressDrawTarget) -> Self {
        let model = ProgressModel::new(outline);
        let multi = MultiProgress::with_draw_target(target);
        let width = model
            .nodes()
            .map(|(n, _)| n.as_str().len())
            .max()
            .unwrap_or(4);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>{width}}} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bars = model
            .nodes()
            .map(|(name, p)| {
                let bar = multi.add(ProgressBar::new(p.total as u64));
                bar.set_style(style.clone());
                bar.set_prefix(name.to_string());
                (name.clone(), bar)
            })
            .collect();
        Self {
            model,
            _multi: multi,
            bars,
        }
    }

    /// Shows one event.
    pub fn handle(&mut self, event: &ProvisionEvent) {
        self.model.apply(event);
        if let (Some(bar), Some(p)) = (
            self.bars.get(&event.node),
            self.model.nodes.get(&event.node),
        ) {
            bar.set_position(p.done as u64);
            bar.set_message(p.current.clone());
            if p.done >= p.total || p.failed {
                bar.finish();
            }
        }
    }

    /// Ends the bars and returns the model (for the summary).
    pub fn finish(self) -> ProgressModel {
        for bar in self.bars.values() {
            bar.finish();
        }
        self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::Scope;
    use std::time::Duration;

    fn outline(nodes: usize) -> Outline {
        Outline {
            steps: vec![
                ("os/a".into(), "A".into(), Scope::Nodes),
                ("os/h".into(), "H".into(), Scope::Head),
                ("ib/b".into(), "B".into(), Scope::Nodes),
            ],
            head: "head".into(),
            nodes: (1..=nodes)
                .map(|i| NodeName::new(format!("node{i}")))
                .collect(),
        }
    }

    fn done(node: &str, step: &str, outcome: Outcome) -> ProvisionEvent {
        ProvisionEvent {
            node: node.into(),
            step: step.into(),
            phase: Phase::Done,
            outcome,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn the_model_counts_per_node_and_the_table_has_a_cell_per_result() {
        let events = vec![
            done("node1", "os/a", Outcome::Changed),
            done("node2", "os/a", Outcome::Satisfied),
            done("head", "os/h", Outcome::Satisfied),
            ProvisionEvent {
                phase: Phase::Apply,
                outcome: Outcome::Started,
                ..done("node1", "ib/b", Outcome::Started)
            },
            done(
                "node2",
                "ib/b",
                Outcome::Degraded {
                    reason: "no ACTIVE port".into(),
                },
            ),
        ];
        let mut m = ProgressModel::new(outline(2));
        for e in &events {
            m.apply(e);
        }
        let n: BTreeMap<_, _> = m.nodes().map(|(n, p)| (n.to_string(), p.clone())).collect();
        assert_eq!((n["node1"].done, n["node1"].total), (1, 2));
        assert_eq!(n["node1"].current, "ib/b: apply");
        assert_eq!((n["head"].done, n["head"].total), (1, 1));
        let text = summarize(outline(2), &events);
        let row = text.lines().find(|l| l.contains("ib/b")).unwrap();
        assert!(row.contains("degraded") && row.contains('-'), "{text}");
        assert!(
            text.contains("degraded node2 at ib/b: no ACTIVE port"),
            "{text}"
        );
        assert!(text.contains("1 changed"), "{text}");
        assert!(
            !text.contains("fabric:"),
            "no infiniband steps, no fabric note: {text}"
        );
    }

    #[test]
    fn the_summary_says_which_nodes_have_infiniband() {
        let events = vec![
            done("node1", "infiniband/port-active", Outcome::Satisfied),
            done("node2", "infiniband/port-active", Outcome::Changed),
            done(
                "node2",
                "infiniband/pair-probe",
                Outcome::Degraded {
                    reason: "verbs pair probe from node2 failed".into(),
                },
            ),
            done("node1", "infiniband/pair-probe", Outcome::Satisfied),
        ];
        let text = summarize(outline(2), &events);
        assert!(
            text.contains("fabric: InfiniBand on node1; gigabit only on node2"),
            "{text}"
        );
        let plan = vec![done(
            "node1",
            "infiniband/port-active",
            Outcome::WouldChange {
                detail: "rxe0 missing".into(),
            },
        )];
        assert!(!summarize(outline(2), &plan).contains("fabric:"));
    }

    #[test]
    fn big_clusters_get_counts_instead_of_columns() {
        let events: Vec<_> = (1..=40)
            .map(|i| done(&format!("node{i}"), "os/a", Outcome::Satisfied))
            .collect();
        let text = summarize(outline(40), &events);
        assert!(!text.contains("node17"), "{text}");
        let row = text.lines().find(|l| l.contains("os/a")).unwrap();
        assert!(row.contains("40"), "{text}");
    }

    /// What headnoded sends the CLI: node names as plain strings.
    #[test]
    fn outlines_and_events_carry_node_names_as_plain_strings() {
        let outline_json = serde_json::to_string(&outline(1)).unwrap();
        assert_eq!(
            outline_json,
            r#"{"steps":[["os/a","A","nodes"],["os/h","H","head"],["ib/b","B","nodes"]],"head":"head","nodes":["node1"]}"#
        );
        assert_eq!(
            serde_json::from_str::<Outline>(&outline_json).unwrap(),
            outline(1)
        );
        let event = done("node1", "os/a", Outcome::Changed);
        let event_json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            event_json,
            r#"{"node":"node1","step":"os/a","phase":"done","outcome":{"kind":"changed"},"elapsed":{"secs":0,"nanos":0}}"#
        );
        assert_eq!(
            serde_json::from_str::<ProvisionEvent>(&event_json).unwrap(),
            event
        );
    }

    #[test]
    fn bars_follow_events() {
        let mut bars = ProgressBars::hidden(outline(1));
        bars.handle(&done("node1", "os/a", Outcome::Changed));
        let model = bars.finish();
        let node1 = NodeName::new("node1");
        assert_eq!(model.result("os/a", &node1), Some(&Outcome::Changed));
    }
}
