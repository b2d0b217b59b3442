//! Node choice for one job: best fit (the nodes left with the least free CPUs, then memory), and a
//! memo of request shapes already known not to fit during this pass.

use crate::gres::Need;
use beowulf_types::Resources;
use std::collections::BTreeMap;

/// A request shape: the node set it may use (an interned set ID) and what it needs per node.
pub(crate) type Shape = (usize, Need);

/// Picks `count` distinct nodes among `candidates` (node index, the resources usable there) that can
/// each hold `need`. Best fit: the smallest leftover CPUs, then the smallest leftover memory, then the
/// lowest index (= name), so small jobs fill partly used nodes and whole nodes stay whole for big
/// jobs. The key is a total order, so there are no exact ties to break.
///
/// Returns the chosen indices ascending (= sorted by node name), or `None` when fewer than `count`
/// candidates fit. O(candidates) plus O(count log count).
pub(crate) fn best_fit(
    candidates: impl Iterator<Item = (usize, Resources)>,
    need: &Resources,
    count: usize,
) -> Option<Vec<usize>> {
    if count == 0 {
        return None;
    }
    let mut fitting: Vec<(u32, u64, usize)> = candidates
        .filter(|(_, free)| free.fits(need))
        .map(|(node, free)| {
            let left = free.saturating_sub(need);
            (left.cpus, left.memory_mb, node)
        })
        .collect();
    if fitting.len() < count {
        return None;
    }
    if fitting.len() > count {
        fitting.select_nth_unstable(count - 1);
        fitting.truncate(count);
    }
    let mut chosen: Vec<usize> = fitting.into_iter().map(|(_, _, node)| node).collect();
    chosen.sort_unstable();
    Some(chosen)
}

/// Like [`best_fit`], but the choice holds every node of `required` (indices, ascending; at most
/// `count`), and the rest best fit: `None` when a required node is not among the candidates that can
/// hold `need`, or too few others are. A job asking for exactly its required nodes gets them.
pub(crate) fn best_fit_including(
    candidates: impl Iterator<Item = (usize, Resources)>,
    need: &Resources,
    count: usize,
    required: &[usize],
) -> Option<Vec<usize>> {
    if required.is_empty() {
        return best_fit(candidates, need, count);
    }
    if required.len() > count {
        return None;
    }
    let candidates: Vec<(usize, Resources)> = candidates.collect();
    let required_fitting = candidates
        .iter()
        .filter(|(node, free)| required.binary_search(node).is_ok() && free.fits(need))
        .count();
    if required_fitting < required.len() {
        return None;
    }
    let mut chosen = required.to_vec();
    let more = count - required.len();
    if more > 0 {
        let others = candidates
            .into_iter()
            .filter(|(node, _)| required.binary_search(node).is_err());
        chosen.extend(best_fit(others, need, more)?);
        chosen.sort_unstable();
    }
    Some(chosen)
}

/// How many of `candidates` can hold `need`.
pub(crate) fn count_fitting(
    candidates: impl Iterator<Item = (usize, Resources)>,
    need: &Resources,
) -> usize {
    candidates.filter(|(_, free)| free.fits(need)).count()
}

/// Request shapes that failed to fit during this pass. Within a pass free resources only shrink (and
/// claimed nodes only grow), so once `count` nodes of a shape did not fit, no later job asking for
/// the same shape on `count` or more nodes can fit either: a queue of many identical jobs costs one
/// node scan, not one per job.
#[derive(Debug, Default)]
pub(crate) struct NoFitMemo {
    /// Shape -> the smallest node count that failed.
    smallest_failed: BTreeMap<Shape, usize>,
}

impl NoFitMemo {
    pub fn known_to_fail(&self, shape: &Shape, count: usize) -> bool {
        self.smallest_failed
            .get(shape)
            .is_some_and(|&failed| count >= failed)
    }

    pub fn record(&mut self, shape: &Shape, count: usize) {
        let entry = self.smallest_failed.entry(shape.clone()).or_insert(count);
        *entry = (*entry).min(count);
    }
}

/// Per request shape, how many Up nodes can hold it now. Any start shrinks free resources, so the
/// counts are forgotten at every start; between starts, the many jobs of a queue that share a shape
/// (typically all waiting behind the top job) cost one node scan, not one each.
#[derive(Debug, Default)]
pub(crate) struct FitCounts {
    counts: BTreeMap<Shape, usize>,
}

impl FitCounts {
    pub fn get_or_count(&mut self, shape: &Shape, count: impl FnOnce() -> usize) -> usize {
        if let Some(&known) = self.counts.get(shape) {
            return known;
        }
        let counted = count();
        self.counts.insert(shape.clone(), counted);
        counted
    }

    pub fn forget(&mut self) {
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpus: u32, memory_mb: u64) -> Resources {
        Resources::new(cpus, memory_mb)
    }

    #[test]
    fn best_fit_prefers_the_tightest_nodes_and_returns_them_sorted() {
        let free = [r(8, 100), r(2, 100), r(4, 50), r(2, 10), r(1, 100)];
        let candidates = free.iter().copied().enumerate();
        // Need 2 CPUs on 2 nodes: nodes 1 and 3 are left with 0 CPUs; node 3 has less memory left.
        assert_eq!(best_fit(candidates.clone(), &r(2, 10), 2), Some(vec![1, 3]));
        assert_eq!(
            best_fit(candidates.clone(), &r(2, 10), 3),
            Some(vec![1, 2, 3])
        );
        assert_eq!(best_fit(candidates.clone(), &r(2, 10), 5), None);
        assert_eq!(best_fit(candidates, &r(2, 10), 0), None);
    }

    #[test]
    fn required_nodes_are_always_chosen_and_the_rest_best_fit() {
        let free = [r(8, 100), r(2, 100), r(4, 50), r(2, 10), r(1, 100)];
        let candidates = free.iter().copied().enumerate();
        // Node 0 is the loosest fit, but required; the other one is the tightest (3).
        assert_eq!(
            best_fit_including(candidates.clone(), &r(2, 10), 2, &[0]),
            Some(vec![0, 3])
        );
        assert_eq!(
            best_fit_including(candidates.clone(), &r(2, 10), 2, &[0, 2]),
            Some(vec![0, 2])
        );
        // A required node too small, or missing from the candidates, fails the choice.
        assert_eq!(
            best_fit_including(candidates.clone(), &r(2, 10), 2, &[4]),
            None
        );
        assert_eq!(
            best_fit_including(
                candidates.clone().filter(|(n, _)| *n != 0),
                &r(2, 10),
                1,
                &[0]
            ),
            None
        );
        assert_eq!(
            best_fit_including(candidates.clone(), &r(2, 10), 1, &[0, 1]),
            None,
            "more required nodes than the job asks for"
        );
        assert_eq!(
            best_fit_including(candidates, &r(2, 10), 5, &[0]),
            None,
            "too few others"
        );
    }

    #[test]
    fn exact_ties_go_to_the_lowest_index() {
        let free = [r(4, 0), r(4, 0), r(4, 0)];
        assert_eq!(
            best_fit(free.iter().copied().enumerate(), &r(1, 0), 2),
            Some(vec![0, 1])
        );
    }

    fn shape(set: usize, cpus: u32) -> Shape {
        (
            set,
            Need {
                per_node: r(cpus, 0),
                ..Need::default()
            },
        )
    }

    #[test]
    fn memo_covers_larger_counts_of_the_same_shape_only() {
        let mut memo = NoFitMemo::default();
        memo.record(&shape(0, 2), 3);
        assert!(memo.known_to_fail(&shape(0, 2), 3));
        assert!(memo.known_to_fail(&shape(0, 2), 4));
        assert!(!memo.known_to_fail(&shape(0, 2), 2));
        assert!(!memo.known_to_fail(&shape(0, 1), 3));
        assert!(!memo.known_to_fail(&shape(1, 2), 3), "another node set");
        memo.record(&shape(0, 2), 1);
        assert!(memo.known_to_fail(&shape(0, 2), 1));
    }

    #[test]
    fn fit_counts_are_cached_until_forgotten() {
        let mut counts = FitCounts::default();
        assert_eq!(counts.get_or_count(&shape(0, 1), || 3), 3);
        assert_eq!(counts.get_or_count(&shape(0, 1), || 9), 3);
        counts.forget();
        assert_eq!(counts.get_or_count(&shape(0, 1), || 9), 9);
    }
}
