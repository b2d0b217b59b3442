//! Slurm's host lists: `node[1-3,7]` ⇄ `node1,node2,node3,node7`.

use std::collections::BTreeMap;

/// Compresses names into Slurm's host-list form: `node1,node2,node3,node7` → `node[1-3,7]`.
pub fn compress(names: &[String]) -> String {
    let mut groups: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
    let mut plain = Vec::new();
    for name in names {
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = name.split_at(name.len() - digits);
        match number.parse::<u64>() {
            Ok(n) if !number.is_empty() => {
                groups.entry(prefix).or_default().push((n, number.len()))
            }
            _ => plain.push(name.clone()),
        }
    }
    let mut parts = plain;
    for (prefix, mut numbers) in groups {
        numbers.sort();
        numbers.dedup();
        if numbers.len() == 1 {
            parts.push(format!(
                "{prefix}{:0width$}",
                numbers[0].0,
                width = numbers[0].1
            ));
            continue;
        }
        let mut ranges: Vec<String> = Vec::new();
        let mut i = 0;
        while i < numbers.len() {
            let mut j = i;
            while j + 1 < numbers.len()
                && numbers[j + 1].0 == numbers[j].0 + 1
                && numbers[j + 1].1 == numbers[i].1
            {
                j += 1;
            }
            let w = numbers[i].1;
            ranges.push(if i == j {
                format!("{:0w$}", numbers[i].0)
            } else {
                format!("{:0w$}-{:0w$}", numbers[i].0, numbers[j].0)
            });
            i = j + 1;
        }
        parts.push(format!("{prefix}[{}]", ranges.join(",")));
    }
    parts.join(",")
}

/// Expands a host list: `node[1-3,7],head` → `node1 node2 node3 node7 head` (zero padding kept:
/// `n[08-10]` → `n08 n09 n10`).
pub fn expand(list: &str) -> Result<Vec<String>, String> {
    expand_at_most(list, MAX_EXPANDED_NAMES)
}

/// The most names [`expand`] makes of one list: ten times the 10,000 nodes the largest cluster we
/// plan for has (issue 25), so a real list always fits, and `node[1-99999999999]` (a typo, or a
/// request meant to exhaust memory) is refused instead of allocated.
pub const MAX_EXPANDED_NAMES: usize = 100_000;

/// Like [`expand`], refusing a list of more than `max` names before making them.
fn expand_at_most(list: &str, max: usize) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        // One item runs to the next comma outside brackets.
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let item = rest[..end].trim();
        rest = rest[end..].trim_start_matches(',').trim_start();
        if item.is_empty() {
            continue;
        }
        match item.split_once('[') {
            None if names.len() >= max => {
                return Err(format!(
                    "the list names more than {max} nodes; give a shorter list"
                ));
            }
            None => names.push(item.to_string()),
            Some((prefix, ranges)) => {
                let ranges = ranges
                    .strip_suffix(']')
                    .ok_or_else(|| format!("`{item}`: missing `]`"))?;
                for range in ranges.split(',') {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    let parse = |s: &str| {
                        s.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("`{item}`: `{s}` is not a number"))
                    };
                    let (first, last) = (parse(a)?, parse(b)?);
                    if last < first {
                        return Err(format!("`{item}`: `{range}` counts down"));
                    }
                    let count = (last - first).saturating_add(1);
                    if count > (max - names.len()) as u64 {
                        return Err(format!(
                            "`{item}` names more than {max} nodes; give a shorter list"
                        ));
                    }
                    let width = a.trim().len();
                    names.extend((first..=last).map(|n| format!("{prefix}{n:0width$}")));
                }
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_too_long_is_refused_before_it_is_made() {
        let err = expand("node[1-18446744073709551615]").unwrap_err();
        assert!(err.contains("more than 100000 nodes"), "{err}");
        assert_eq!(expand_at_most("a[1-2],b[1-2]", 4).unwrap().len(), 4);
        assert!(expand_at_most("a[1-2],b[1-3]", 4).is_err());
        assert!(expand_at_most("a,b,c", 2).is_err());
    }

    fn owned(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hostlists_compress_like_slurm() {
        assert_eq!(
            compress(&owned(&["node1", "node2", "node3", "node7"])),
            "node[1-3,7]"
        );
        assert_eq!(compress(&owned(&["node4"])), "node4");
        assert_eq!(compress(&owned(&["head", "n01", "n02"])), "head,n[01-02]");
    }

    #[test]
    fn hostlists_expand_and_round_trip() {
        assert_eq!(
            expand("node[1-3,7],head").unwrap(),
            owned(&["node1", "node2", "node3", "node7", "head"])
        );
        assert_eq!(expand("n[08-10]").unwrap(), owned(&["n08", "n09", "n10"]));
        let names = owned(&["node1", "node2", "node5"]);
        assert_eq!(expand(&compress(&names)).unwrap(), names);
        assert!(expand("node[3-1]").is_err());
        assert!(expand("node[1-2").is_err());
    }
}
