//! The `%` formats of squeue and sinfo (`-o "%.18i %.9P %j"`): `%[.][width]letter`, a `.` to
//! right-justify, a width to pad and cut the value to, `%%` for a `%`.

/// One piece of a format: text as written, or a field with its width and justification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field {
        letter: char,
        width: Option<usize>,
        right: bool,
    },
}

/// A squeue format: `%[.][width]letter`, with `%%` a `%`.
pub fn parse_format(format: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            text.push('%');
            continue;
        }
        let right = chars.next_if_eq(&'.').is_some();
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        match chars.next() {
            Some(letter) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field {
                    letter,
                    // A width beyond a screen is a typo; capping it keeps the line bounded.
                    width: digits.parse::<usize>().ok().map(|w| w.min(1024)),
                    right,
                });
            }
            None => text.push('%'),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// A line: each field's value cut or padded to its width.
pub fn render(pieces: &[Piece], value: impl Fn(char) -> String) -> String {
    let mut line = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => line.push_str(t),
            Piece::Field {
                letter,
                width,
                right,
            } => {
                let v = value(*letter);
                match width {
                    None => line.push_str(&v),
                    Some(w) => {
                        let cut: String = v.chars().take(*w).collect();
                        if *right {
                            line.push_str(&format!("{cut:>w$}"));
                        } else {
                            line.push_str(&format!("{cut:<w$}"));
                        }
                    }
                }
            }
        }
    }
    line.trim_end().to_string()
}

/// A value in a column of `width` as sacct and sshare print it: cut and ended with `+` when too
/// long, padded to the left (`left`) or the right.
pub fn fit(value: String, width: usize, left: bool) -> String {
    let value = if value.chars().count() > width {
        let cut: String = value.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}+")
    } else {
        value
    };
    if left {
        format!("{value:<width$}")
    } else {
        format!("{value:>width$}")
    }
}

/// One line of cells: `separator`-joined (with one after the last for `--parsable`), or
/// space-joined columns.
pub fn join_line(cells: &[String], separator: Option<&str>, trailing: bool) -> String {
    match separator {
        Some(sep) => {
            let mut line = cells.join(sep);
            if trailing {
                line.push_str(sep);
            }
            line.push('\n');
            line
        }
        None => format!("{} \n", cells.join(" ")),
    }
}
