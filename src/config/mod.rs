//! Configuration: the TOML file model (`file.rs`), its compilation into the
//! immutable runtime [`Plan`] (`plan.rs`), and the units it is written in.
//!
//! Loading never half-succeeds: either every error is reported with its TOML
//! path, or a complete `Plan` comes back.

pub mod file;
pub mod plan;
pub mod units;

use std::fmt;
use std::path::Path;

pub use plan::Plan;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// TOML path, e.g. `routes[2].upstream`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "error: {}", e.message)?;
            } else {
                write!(f, "error: {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Reads, parses and compiles a config file. Relative paths in the file are
/// resolved against the file's directory.
pub fn load(path: &Path) -> Result<Plan, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base)
}

/// Parses and compiles config text.
pub fn parse(text: &str, base: &Path) -> Result<Plan, ConfigErrors> {
    let file = parse_file(text)?;
    plan::compile(&file, base)
}

/// Parses config text into the file model (no compilation).
pub fn parse_file(text: &str) -> Result<file::File, ConfigErrors> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigErrors::one("", with_line(text, e.span(), e.message())))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let msg = with_line(text, inner.span(), inner.message());
        ConfigErrors::one(if path == "." { String::new() } else { path }, msg)
    })
}

fn with_line(text: &str, span: Option<std::ops::Range<usize>>, msg: &str) -> String {
    match span {
        Some(s) => {
            let before = text.get(..s.start).unwrap_or("");
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{} (line {line}, column {col})", msg.trim())
        }
        None => msg.trim().to_owned(),
    }
}
