//! Node choice inside a pass: best fit now, best fit around the top job's reservation, and whether a
//! job fits at all, with the per-shape memos that keep big queues cheap.

use super::Pass;
use super::job::JobContext;
use crate::placement::{Shape, best_fit, best_fit_including, count_fitting};

impl<'a> Pass<'a> {
    /// Best-fit nodes for a job among the free resources of the Up, unclaimed nodes it may use now
    /// (with every node it requires).
    pub(super) fn place_now(&mut self, context: &JobContext<'a>) -> Option<Vec<usize>> {
        let count = context.job.nodes as usize;
        let shape: Shape = (context.now_set, context.need.clone());
        if self.cannot_fit_now(context, &shape) {
            return None;
        }
        let cluster = &self.cluster;
        let need = &context.need;
        if !context.required.is_empty() {
            // Not memoized: the shape does not say which nodes the job requires.
            return self.with_required(context, context.now_set, |_| true);
        }
        let nodes = best_fit(
            self.eligibility
                .set(context.now_set)
                .up
                .iter()
                .filter(|&&node| cluster.open_for(node, need))
                .map(|&node| (node, cluster.free[node])),
            &need.per_node,
            count,
        );
        if nodes.is_none() {
            self.no_fit_now.record(&shape, count);
        }
        nodes
    }

    /// Best-fit nodes for a job running past the shadow time: free now, and outside what the
    /// reservation needs at the shadow time.
    pub(super) fn place_around_reservation(
        &mut self,
        context: &JobContext<'a>,
    ) -> Option<Vec<usize>> {
        let count = context.job.nodes as usize;
        let shape: Shape = (context.now_set, context.need.clone());
        if self.cannot_fit_now(context, &shape) || self.no_backfill.known_to_fail(&shape, count) {
            return None;
        }
        let reservation = self.reservation.as_ref()?;
        let cluster = &self.cluster;
        let need = &context.need;
        if !context.required.is_empty() {
            return self.with_required(context, context.now_set, |node| {
                reservation.allows(node, need)
            });
        }
        let nodes = best_fit(
            self.eligibility
                .set(context.now_set)
                .up
                .iter()
                .filter(|&&node| cluster.open_for(node, need) && reservation.allows(node, need))
                .map(|&node| (node, cluster.free[node])),
            &need.per_node,
            count,
        );
        if nodes.is_none() {
            self.no_backfill.record(&shape, count);
        }
        nodes
    }

    /// Whether a job fits the free resources of the Up, unclaimed nodes of `set` now, ignoring the
    /// reservation.
    pub(super) fn fits_now(&mut self, context: &JobContext<'a>, set: usize) -> bool {
        let count = context.job.nodes as usize;
        let shape: Shape = (set, context.need.clone());
        if self.cannot_fit_now(context, &shape) {
            return false;
        }
        if !context.required.is_empty() {
            return self.with_required(context, set, |_| true).is_some();
        }
        let cluster = &self.cluster;
        let eligibility = &self.eligibility;
        let need = &context.need;
        let fitting = self.fit_counts.get_or_count(&shape, || {
            count_fitting(
                eligibility
                    .set(set)
                    .up
                    .iter()
                    .filter(|&&node| cluster.open_for(node, need))
                    .map(|&node| (node, cluster.free[node])),
                &need.per_node,
            )
        });
        if fitting < count {
            self.no_fit_now.record(&shape, count);
        }
        fitting >= count
    }

    /// Best-fit nodes of `set` for a job that requires nodes: the Up, unclaimed nodes open to it
    /// now that `also` allows, all of its required nodes among them.
    fn with_required(
        &self,
        context: &JobContext<'a>,
        set: usize,
        also: impl Fn(usize) -> bool,
    ) -> Option<Vec<usize>> {
        let cluster = &self.cluster;
        let need = &context.need;
        best_fit_including(
            self.eligibility
                .set(set)
                .up
                .iter()
                .filter(|&&node| cluster.open_for(node, need) && also(node))
                .map(|&node| (node, cluster.free[node])),
            &need.per_node,
            context.job.nodes as usize,
            &context.required,
        )
    }

    /// Cheap early answers: no Up node has a free CPU, or this shape already failed (the memo
    /// holds only jobs that require no node).
    fn cannot_fit_now(&self, context: &JobContext<'a>, shape: &Shape) -> bool {
        (context.need.per_node.cpus > 0 && self.cluster.no_free_cpu())
            || (context.required.is_empty()
                && self
                    .no_fit_now
                    .known_to_fail(shape, context.job.nodes as usize))
    }
}
