//! Slurm's filename patterns (`slurm-%j.out`, `out-%4t.txt`): one pass over the pattern, each
//! `%[width]letter` replaced by what the caller's lookup gives for the letter.
//!
//! The head expands a job's output paths with the job's values; `srun` expands a step's with the
//! step's and each task's.

/// Widest zero padding Slurm applies (`%10j`); a larger width is kept as written.
const MAX_WIDTH: usize = 10;

/// `pattern` with each `%letter` that `value` knows replaced, `%%` as `%`; a number between `%`
/// and the letter pads a numeric value with zeros (`%4a` → `0007`). Anything `value` does not
/// know is kept as written.
pub fn expand(pattern: &str, value: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = 0usize;
        let mut end = start + 1;
        while let Some(&(i, d)) = chars.peek() {
            match d.to_digit(10) {
                Some(digit) if width < MAX_WIDTH => {
                    width = width * 10 + digit as usize;
                    end = i + 1;
                    chars.next();
                }
                _ => break,
            }
        }
        let found = match chars.peek().map(|&(_, l)| l) {
            Some('%') if width == 0 => Some("%".to_string()),
            Some(letter) => value(letter),
            None => None,
        };
        match found {
            Some(found) => {
                chars.next();
                let pad = width.min(MAX_WIDTH).saturating_sub(found.len());
                if found.bytes().all(|b| b.is_ascii_digit()) {
                    out.extend(std::iter::repeat_n('0', pad));
                }
                out.push_str(&found);
            }
            None => out.push_str(&pattern[start..end]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(letter: char) -> Option<String> {
        match letter {
            'j' => Some("42".into()),
            'x' => Some("name".into()),
            _ => None,
        }
    }

    #[test]
    fn letters_are_replaced_padded_and_unknown_ones_kept() {
        assert_eq!(expand("slurm-%j.out", lookup), "slurm-42.out");
        assert_eq!(expand("%5j-%x", lookup), "00042-name");
        assert_eq!(expand("%3x", lookup), "name");
        assert_eq!(expand("100%%-%q-%", lookup), "100%-%q-%");
        assert_eq!(expand("%4q", lookup), "%4q");
    }
}
