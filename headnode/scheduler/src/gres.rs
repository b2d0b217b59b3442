//! Generic resources (GRES, e.g. GPUs) beside `Resources`: names interned to small indices per pass,
//! counts per node, and what a job needs on each node.

use std::collections::BTreeMap;

/// What a job needs on each node: CPUs and memory, plus GRES as (kind index, count), sorted by kind,
/// and whether it needs the node alone (`--exclusive`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Need {
    pub per_node: beowulf_types::Resources,
    pub gres: Vec<(usize, u32)>,
    pub exclusive: bool,
}

/// GRES names seen on the nodes, by index.
#[derive(Debug, Default)]
pub(crate) struct GresKinds<'a> {
    index: BTreeMap<&'a str, usize>,
}

/// Kind index of a GRES no node has: nothing can hold it.
pub(crate) const UNKNOWN_KIND: usize = usize::MAX;

impl<'a> GresKinds<'a> {
    pub fn new<'b>(names: impl Iterator<Item = &'a String>) -> GresKinds<'a> {
        let mut index = BTreeMap::new();
        for name in names {
            let next = index.len();
            index.entry(name.as_str()).or_insert(next);
        }
        GresKinds { index }
    }

    pub fn kind(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Counts by kind index; kinds not in `counts` are zero.
    pub fn table(&self, counts: &BTreeMap<String, u32>) -> Vec<u32> {
        let mut table = vec![0; self.len()];
        for (name, &count) in counts {
            if let Some(&kind) = self.index.get(name.as_str()) {
                table[kind] = count;
            }
        }
        table
    }

    /// A request as (kind, count) pairs, zero counts left out; unknown names map to
    /// [`UNKNOWN_KIND`].
    pub fn need(&self, counts: &BTreeMap<String, u32>) -> Vec<(usize, u32)> {
        let mut need: Vec<(usize, u32)> = counts
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(name, &count)| {
                let kind = self.index.get(name.as_str()).copied();
                (kind.unwrap_or(UNKNOWN_KIND), count)
            })
            .collect();
        need.sort_unstable();
        need
    }
}

/// Whether `free` (by kind) holds `need`.
pub(crate) fn fits(free: &[u32], need: &[(usize, u32)]) -> bool {
    need.iter()
        .all(|&(kind, count)| free.get(kind).is_some_and(|&have| have >= count))
}
