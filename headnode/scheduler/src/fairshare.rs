//! Fair-share (Slurm's classic algorithm): usage decays with a half-life, and a user's or account's
//! factor is `2^(-effective_usage / normalized_shares)`, 1.0 for no usage, 0.5 for exactly its share.

use std::collections::{BTreeMap, BTreeSet};

/// Who usage and shares belong to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Association {
    User(String),
    Account(String),
}

/// `usage` decayed over `elapsed` milliseconds with the given half-life: `usage * 2^(-elapsed /
/// half_life)`. A zero half-life forgets everything at once (any elapsed time gives 0).
pub fn decay(usage: f64, elapsed: u64, half_life: u64) -> f64 {
    if elapsed == 0 {
        return usage;
    }
    if half_life == 0 {
        return 0.0;
    }
    usage * (-(elapsed as f64) / half_life as f64).exp2()
}

/// Slurm's classic fair-share factor: `2^(-(usage / total_usage) / (shares / total_shares))`.
/// No usage anywhere gives 1.0; zero shares give 0.0 (the association may run, last).
pub fn factor(usage: f64, total_usage: f64, shares: u32, total_shares: u64) -> f64 {
    if shares == 0 || total_shares == 0 {
        return 0.0;
    }
    let effective_usage = if total_usage > 0.0 {
        (usage / total_usage).max(0.0)
    } else {
        0.0
    };
    let normalized_shares = f64::from(shares) / total_shares as f64;
    (-effective_usage / normalized_shares).exp2()
}

/// Shares of an association missing from the input: one, so everyone is equal by default.
pub const DEFAULT_SHARES: u32 = 1;

/// One user's or account's line of the fair-share table (Slurm's `sshare` columns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// Configured shares ([`DEFAULT_SHARES`] when not configured).
    pub shares: u32,
    /// `shares` over the total of its level's (users' or accounts').
    pub norm_shares: f64,
    /// Decayed usage, CPU-milliseconds.
    pub usage: f64,
    /// `usage` over the total of its level's; 0 when nobody has any.
    pub effective_usage: f64,
    /// [`factor`]: what the priority's fair-share factor is made of.
    pub factor: f64,
}

/// The fair-share table of every user and account a pass meets, computed once per pass. Users
/// and accounts are two levels, each normalised among itself (no account tree): a job's factor is
/// the mean of its user's and its account's ([`ShareTable::of`]). A pass's is
/// [`crate::SchedulerInput::share_table`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShareTable {
    pub users: BTreeMap<String, Share>,
    pub accounts: BTreeMap<String, Share>,
}

impl ShareTable {
    /// Users and accounts are normalised among themselves: those with shares or usage in the
    /// input, plus `users` and `accounts` (the pending jobs').
    pub fn new<'a>(
        usage: &BTreeMap<Association, f64>,
        shares: &BTreeMap<Association, u32>,
        users: impl Iterator<Item = &'a str>,
        accounts: impl Iterator<Item = &'a str>,
    ) -> ShareTable {
        let mut user_set: BTreeSet<&str> = users.collect();
        let mut account_set: BTreeSet<&str> = accounts.filter(|a| !a.is_empty()).collect();
        for association in usage.keys().chain(shares.keys()) {
            match association {
                Association::User(name) => user_set.insert(name),
                Association::Account(name) => account_set.insert(name),
            };
        }
        let compute = |names: &BTreeSet<&str>, make: fn(String) -> Association| {
            let keyed: Vec<(&str, f64, u32)> = names
                .iter()
                .map(|&name| {
                    let key = make(name.to_string());
                    let used = usage.get(&key).copied().unwrap_or(0.0).max(0.0);
                    let share = shares.get(&key).copied().unwrap_or(DEFAULT_SHARES);
                    (name, used, share)
                })
                .collect();
            let total_usage: f64 = keyed.iter().map(|(_, used, _)| used).sum();
            let total_shares: u64 = keyed.iter().map(|(_, _, share)| u64::from(*share)).sum();
            keyed
                .into_iter()
                .map(|(name, used, share)| {
                    let line = Share {
                        shares: share,
                        norm_shares: if total_shares == 0 {
                            0.0
                        } else {
                            f64::from(share) / total_shares as f64
                        },
                        usage: used,
                        effective_usage: if total_usage > 0.0 {
                            used / total_usage
                        } else {
                            0.0
                        },
                        factor: factor(used, total_usage, share, total_shares),
                    };
                    (name.to_string(), line)
                })
                .collect::<BTreeMap<String, Share>>()
        };
        ShareTable {
            users: compute(&user_set, Association::User),
            accounts: compute(&account_set, Association::Account),
        }
    }

    /// The job's factor: the mean of its user's and its account's, or the user's alone when it has
    /// no account.
    pub fn of(&self, user: &str, account: &str) -> f64 {
        let user_factor = self.users.get(user).map_or(1.0, |s| s.factor);
        if account.is_empty() {
            return user_factor;
        }
        let account_factor = self.accounts.get(account).map_or(1.0, |s| s.factor);
        (user_factor + account_factor) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_halves_every_half_life() {
        assert_eq!(decay(100.0, 0, 10), 100.0);
        assert_eq!(decay(100.0, 10, 10), 50.0);
        assert_eq!(decay(100.0, 20, 10), 25.0);
        assert_eq!(decay(100.0, 5, 0), 0.0);
    }

    #[test]
    fn factor_is_one_without_usage_and_half_at_the_fair_share() {
        assert_eq!(factor(0.0, 0.0, 1, 2), 1.0);
        assert_eq!(factor(50.0, 100.0, 1, 2), 0.5);
        assert_eq!(factor(100.0, 100.0, 1, 2), 0.25);
        assert_eq!(factor(10.0, 100.0, 0, 2), 0.0);
    }

    #[test]
    fn heavy_users_get_lower_factors_and_accounts_average_in() {
        let usage = BTreeMap::from([
            (Association::User("ann".into()), 90.0),
            (Association::User("bob".into()), 10.0),
        ]);
        let fair = ShareTable::new(
            &usage,
            &BTreeMap::new(),
            ["ann", "bob", "cy"].into_iter(),
            ["phys"].into_iter(),
        );
        assert!(fair.of("ann", "") < fair.of("bob", ""));
        assert_eq!(fair.of("cy", ""), 1.0);
        // No account usage: the account factor is 1.0.
        assert_eq!(fair.of("ann", "phys"), (fair.of("ann", "") + 1.0) / 2.0);
        // The table's lines are what the factors are made of.
        let ann = &fair.users["ann"];
        assert_eq!(ann.shares, DEFAULT_SHARES);
        assert_eq!(ann.norm_shares, 1.0 / 3.0);
        assert_eq!(ann.effective_usage, 0.9);
        assert_eq!(ann.factor, factor(90.0, 100.0, 1, 3));
        assert_eq!(fair.accounts["phys"].usage, 0.0);
        assert_eq!(fair.accounts["phys"].factor, 1.0);
    }
}
