//! Whether a step's condition already holds on a node ([`Check`]): what checking an action or a
//! builtin answers, before the engine decides to apply it.

/// Is an action's condition already true on the node?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Satisfied,
    /// Not yet, with what differs (shown by `--plan` and in verify failures).
    Unsatisfied(String),
}

impl Check {
    /// Satisfied when there is no problem, else unsatisfied with it.
    pub fn from_problem(problem: Option<String>) -> Check {
        problem.map_or(Check::Satisfied, Check::Unsatisfied)
    }
}
