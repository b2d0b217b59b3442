//! The Standard Workload Format of Feitelson's Parallel Workloads Archive: one job per line, 18
//! whitespace-separated fields, `;` header comment lines, -1 for unknown. Parsed from any `BufRead`
//! (or a `&str`) and written back as text; no file access here.
//!
//! Fields: 1 job number, 2 submit time (s), 3 wait time (s), 4 run time (s), 5 allocated processors,
//! 6 average CPU time, 7 used memory, 8 requested processors, 9 requested time (s), 10 requested memory,
//! 11 status, 12 user, 13 group, 14 executable, 15 queue, 16 partition, 17 preceding job, 18 think time.

use crate::error::SwfError;
use std::fmt::Write as _;
use std::io::BufRead;

const FIELD_NAMES: [&str; 18] = [
    "job number",
    "submit time",
    "wait time",
    "run time",
    "allocated processors",
    "average CPU time",
    "used memory",
    "requested processors",
    "requested time",
    "requested memory",
    "status",
    "user ID",
    "group ID",
    "executable",
    "queue",
    "partition",
    "preceding job",
    "think time",
];

/// The fields of one SWF line the simulator uses (times in seconds, -1 = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwfJob {
    pub number: u64,
    pub submit: i64,
    pub wait: i64,
    pub run: i64,
    pub allocated_procs: i64,
    pub requested_procs: i64,
    pub requested_time: i64,
    pub status: i64,
    pub user: i64,
}

/// A parsed trace: its `;` header lines (without the `;`) and its jobs in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    pub header: Vec<String>,
    pub jobs: Vec<SwfJob>,
}

/// Parses a trace from `text`; `file` names it in errors.
pub fn parse_str(file: &str, text: &str) -> Result<Trace, SwfError> {
    parse(file, text.as_bytes())
}

/// Parses a trace line by line; `file` names it in errors (`trace.swf:12: field 4 (run time): ...`).
pub fn parse(file: &str, reader: impl BufRead) -> Result<Trace, SwfError> {
    let mut trace = Trace::default();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| SwfError::Read {
            file: file.to_string(),
            source,
        })?;
        let number = index + 1;
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix(';') {
            trace.header.push(comment.trim().to_string());
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let job = parse_line(trimmed).map_err(|message| SwfError::Parse {
            file: file.to_string(),
            line: number,
            message,
        })?;
        trace.jobs.push(job);
    }
    Ok(trace)
}

fn parse_line(line: &str) -> Result<SwfJob, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != FIELD_NAMES.len() {
        return Err(format!(
            "expected {} fields, found {}",
            FIELD_NAMES.len(),
            fields.len()
        ));
    }
    // Every field must be a number, even the ones the simulator ignores.
    for (index, field) in fields.iter().enumerate() {
        if field.parse::<f64>().is_err() {
            return Err(field_error(index, field, "is not a number"));
        }
    }
    let int = |index: usize| -> Result<i64, String> {
        let field = fields[index];
        let value = field
            .parse::<i64>()
            .or_else(|_| field.parse::<f64>().map(|value| value.round() as i64))
            .map_err(|_| field_error(index, field, "is not a number"))?;
        if value < -1 {
            return Err(field_error(
                index,
                field,
                "is negative (only -1, unknown, is allowed)",
            ));
        }
        Ok(value)
    };
    let number = int(0)?;
    if number < 1 {
        return Err(field_error(0, fields[0], "must be a positive job number"));
    }
    Ok(SwfJob {
        number: number as u64,
        submit: int(1)?,
        wait: int(2)?,
        run: int(3)?,
        allocated_procs: int(4)?,
        requested_procs: int(7)?,
        requested_time: int(8)?,
        status: int(10)?,
        user: int(11)?,
    })
}

fn field_error(index: usize, value: &str, problem: &str) -> String {
    format!(
        "field {} ({}): `{value}` {problem}",
        index + 1,
        FIELD_NAMES[index]
    )
}

/// The trace as SWF text: header lines prefixed with `; `, then one 18-field line per job, with -1
/// for every field `SwfJob` does not carry.
pub fn write(trace: &Trace) -> String {
    let mut out = String::new();
    for line in &trace.header {
        let _ = writeln!(out, "; {line}");
    }
    for job in &trace.jobs {
        let _ = writeln!(
            out,
            "{} {} {} {} {} -1 -1 {} {} -1 {} {} -1 -1 -1 -1 -1 -1",
            job.number,
            job.submit,
            job.wait,
            job.run,
            job.allocated_procs,
            job.requested_procs,
            job.requested_time,
            job.status,
            job.user,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "7 120 5 3600 16 -1 -1 16 7200 -1 1 3 1 -1 1 -1 -1 -1";

    #[test]
    fn parses_the_used_fields_and_keeps_the_header() {
        let trace = parse_str("t.swf", &format!("; Version: 2.2\n;\n\n{LINE}\n")).unwrap();
        assert_eq!(
            trace.header,
            vec!["Version: 2.2".to_string(), String::new()]
        );
        assert_eq!(
            trace.jobs,
            vec![SwfJob {
                number: 7,
                submit: 120,
                wait: 5,
                run: 3600,
                allocated_procs: 16,
                requested_procs: 16,
                requested_time: 7200,
                status: 1,
                user: 3,
            }]
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let text =
            format!("; header\n{LINE}\n8 130 5 abc 16 -1 -1 16 7200 -1 1 3 1 -1 1 -1 -1 -1\n");
        let error = parse_str("trace.swf", &text).unwrap_err().to_string();
        assert_eq!(
            error,
            "trace.swf:3: field 4 (run time): `abc` is not a number"
        );
        let error = parse_str("trace.swf", "1 2 3\n").unwrap_err().to_string();
        assert_eq!(error, "trace.swf:1: expected 18 fields, found 3");
        let error = parse_str("t", "1 -5 5 3600 16 -1 -1 16 7200 -1 1 3 1 -1 1 -1 -1 -1")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "t:1: field 2 (submit time): `-5` is negative (only -1, unknown, is allowed)"
        );
    }

    #[test]
    fn fractional_times_are_rounded() {
        let trace = parse_str("t", "1 2.6 0 10.4 1 0.5 -1 1 20 -1 1 1 1 -1 1 -1 -1 -1").unwrap();
        assert_eq!((trace.jobs[0].submit, trace.jobs[0].run), (3, 10));
    }

    #[test]
    fn write_then_parse_round_trips() {
        let trace = parse_str("t", &format!("; a header\n{LINE}\n")).unwrap();
        let again = parse_str("t", &write(&trace)).unwrap();
        assert_eq!(again, trace);
    }
}
