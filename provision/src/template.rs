//! Templates: the files in `playbooks/templates/` and the template strings inside playbooks (commands,
//! paths, `when` expressions), rendered with minijinja. Undefined variables are errors, never empty
//! strings, so a typo (`{{ node.nmae }}`) fails loudly instead of writing a broken config.

use beowulf_types::SourceError;
use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// The loaded templates and the rendering environment.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    names: BTreeSet<String>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::empty()
    }
}

impl Templates {
    /// No template files (inline templates still render).
    pub fn empty() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files keep their last newline; block tags (`{% if %}`) do not leave blank lines.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        Self {
            env,
            names: BTreeSet::new(),
        }
    }

    /// Every file in `dir`, named by its file name (`nslcd.conf`).
    pub fn load(dir: &Path) -> Result<Self, SourceError> {
        let mut t = Self::empty();
        let entries = std::fs::read_dir(dir).map_err(|e| SourceError::unreadable(dir, &e))?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| SourceError::unreadable(&file, &e))?;
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            t = t.with(&name, &text).map_err(|message| SourceError {
                file: file.display().to_string(),
                line: 1,
                field: None,
                message,
            })?;
        }
        Ok(t)
    }

    /// Adds a template (tests, or templates from elsewhere).
    pub fn with(mut self, name: &str, source: &str) -> Result<Self, String> {
        self.env
            .add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| describe(&e))?;
        self.names.insert(name.to_string());
        Ok(self)
    }

    /// Whether a template file called `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The template files' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Renders the template file `name`.
    pub fn render_file(&self, name: &str, context: &Value) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(|e| describe(&e))?;
        t.render(context).map_err(|e| describe(&e))
    }

    /// Renders an inline template string.
    pub fn render_str(&self, source: &str, context: &Value) -> Result<String, String> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(source.to_string());
        }
        self.env
            .render_str(source, context)
            .map_err(|e| describe(&e))
    }

    /// Evaluates a `when` expression to a boolean.
    pub fn eval_when(&self, expression: &str, context: &Value) -> Result<bool, String> {
        let e = self
            .env
            .compile_expression(expression)
            .map_err(|e| describe(&e))?;
        e.eval(context)
            .map(|v| v.is_true())
            .map_err(|e| describe(&e))
    }

    /// Checks that a template string parses (without rendering it).
    pub fn check_syntax(&self, source: &str) -> Result<(), String> {
        self.env
            .template_from_str(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// Checks that a `when` expression parses.
    pub fn check_expression(&self, expression: &str) -> Result<(), String> {
        self.env
            .compile_expression(expression)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }
}

/// A minijinja error in one line: what went wrong, in which template and line.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    if let Some(name) = e.name() {
        s.push_str(&format!(" (template {name}"));
        if let Some(line) = e.line() {
            s.push_str(&format!(", line {line}"));
        }
        s.push(')');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_files_and_strings_strictly() {
        let t = Templates::empty()
            .with(
                "a.conf",
                "name {{ node.name }}\n{% if node.ib %}ib\n{% endif %}",
            )
            .unwrap();
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"node": {"name": "node1", "ib": true}}),
        ));
        assert_eq!(t.render_file("a.conf", &ctx).unwrap(), "name node1\nib\n");
        assert_eq!(t.render_str("x {{ node.name }}", &ctx).unwrap(), "x node1");
        let err = t.render_str("{{ node.nmae }}", &ctx).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        assert!(t.eval_when("node.name == 'node1'", &ctx).unwrap());
        assert!(!t.eval_when("node.name == 'node2'", &ctx).unwrap());
        assert!(t.check_syntax("{% if %}").is_err());
    }
}
