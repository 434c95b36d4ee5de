//! Reload: read the config file again (SIGHUP, RELOAD) or change one `[general]` key (SET),
//! validate the result, and put it in force without dropping clients. An invalid config is
//! refused whole and the old one kept; keys that need a restart keep their old value.

use std::sync::Arc;

use crate::config::{is_restart_key, Config, ConfigError, ConfigProblem, RESTART_KEYS};
use crate::shared::Shared;

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Keys whose new value needs a restart (their old value stays in force).
    pub(crate) restart_needed: Vec<String>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload (pgmux was started from a config in memory)")]
    NoFile,
    #[error("{0}")]
    Load(#[from] ConfigError),
    #[error("{key} cannot be changed while pgmux runs: it needs a restart")]
    NeedsRestart { key: String },
    #[error("unknown setting: {0}")]
    UnknownKey(String),
    #[error("{0}")]
    Files(#[from] crate::shared::LoadError),
}

/// Re-read the config file and put it in force.
pub fn reload(shared: &Shared) -> Result<Reloaded, ReloadError> {
    let path = shared
        .config_path
        .lock()
        .clone()
        .ok_or(ReloadError::NoFile)?;
    match Config::load(&path) {
        Ok(c) => match apply(shared, c) {
            Ok(r) => {
                tracing::info!(file = %path.display(), "config reloaded");
                Ok(r)
            }
            Err(e) => {
                tracing::error!("reload refused: {}: {e}", path.display());
                Err(e)
            }
        },
        Err(e) => {
            if let ConfigError::Invalid(problems) = &e {
                for p in problems {
                    tracing::error!("reload refused: {}: {p}", path.display());
                }
            } else {
                tracing::error!("reload refused: {e}");
            }
            Err(e.into())
        }
    }
}

/// Put a validated config in force. Keys that need a restart keep their running value.
pub fn apply(shared: &Shared, mut new: Config) -> Result<Reloaded, ReloadError> {
    let old = shared.config();
    let old_g = old.general.as_table();
    let new_g = new.general.as_table();
    let mut out = Reloaded::default();
    for key in RESTART_KEYS {
        if old_g.get(*key) != new_g.get(*key) {
            tracing::warn!("{key} changed in the config: the new value needs a restart");
            out.restart_needed.push((*key).to_string());
        }
    }
    if old.metrics != new.metrics {
        tracing::warn!("[metrics] changed in the config: the new value needs a restart");
        out.restart_needed.push("metrics.listen".into());
    }
    if old.fleet != new.fleet {
        tracing::warn!("[fleet] changed in the config: the new value needs a restart");
        out.restart_needed.push("fleet".into());
        new.fleet = old.fleet.clone();
    }
    let g = &mut new.general;
    g.listen_addr = old.general.listen_addr.clone();
    g.listen_port = old.general.listen_port;
    g.workers = old.general.workers;
    g.so_reuseport = old.general.so_reuseport;
    g.log_format = old.general.log_format;
    new.metrics = old.metrics.clone();
    shared.set_config(Arc::new(new))?;
    Ok(out)
}

/// SET key = value on the admin console: change one `[general]` key.
pub fn set(shared: &Shared, key: &str, value: &str) -> Result<Reloaded, ReloadError> {
    if !crate::config::general_keys().contains(&key) {
        return Err(ReloadError::UnknownKey(key.to_string()));
    }
    if is_restart_key(key) {
        return Err(ReloadError::NeedsRestart {
            key: key.to_string(),
        });
    }
    let config = shared.config();
    let mut root = toml::Table::try_from(&*config).map_err(|e| {
        ReloadError::Load(ConfigError::Invalid(vec![ConfigProblem {
            key: key.into(),
            message: e.to_string(),
        }]))
    })?;
    let general = root
        .entry("general")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let defaults = crate::config::General::default().as_table();
    let typed = typed_value(defaults.get(key), value);
    if let toml::Value::Table(t) = general {
        t.insert(key.to_string(), typed);
    }
    let text = toml::to_string(&root).map_err(|e| {
        ReloadError::Load(ConfigError::Invalid(vec![ConfigProblem {
            key: key.into(),
            message: e.to_string(),
        }]))
    })?;
    let new = Config::parse(&text)?;
    apply(shared, new)
}

/// A SET value typed like the key's default: numbers, booleans (on/off, true/false, 1/0),
/// comma-separated lists, or text.
fn typed_value(like: Option<&toml::Value>, value: &str) -> toml::Value {
    use toml::Value;
    let v = value.trim();
    match like {
        Some(Value::Integer(_)) => v.parse().map(Value::Integer).ok(),
        Some(Value::Float(_)) => v.parse().map(Value::Float).ok(),
        Some(Value::Boolean(_)) => match v.to_ascii_lowercase().as_str() {
            "1" | "on" | "true" | "yes" => Some(Value::Boolean(true)),
            "0" | "off" | "false" | "no" => Some(Value::Boolean(false)),
            _ => None,
        },
        Some(Value::Array(_)) => Some(Value::Array(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        _ => None,
    }
    .unwrap_or_else(|| Value::String(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_typed_like_their_default() {
        use toml::Value;
        assert_eq!(
            typed_value(Some(&Value::Integer(20)), "7"),
            Value::Integer(7)
        );
        assert_eq!(
            typed_value(Some(&Value::Float(5.0)), "2.5"),
            Value::Float(2.5)
        );
        assert_eq!(
            typed_value(Some(&Value::Boolean(false)), "on"),
            Value::Boolean(true)
        );
        assert_eq!(
            typed_value(Some(&Value::Array(vec![])), "a, b"),
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())])
        );
        // Not a number: kept as text, so validation names the key.
        assert_eq!(
            typed_value(Some(&Value::Integer(20)), "lots"),
            Value::String("lots".into())
        );
    }
}
