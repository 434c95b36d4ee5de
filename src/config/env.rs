//! Settings from the environment: `PGMUX_GENERAL_<KEY>` and `PGMUX_METRICS_<KEY>` override
//! `[general]` and `[metrics]` keys of the config file (a container image's config tuned per
//! deployment without editing the mounted file). A variable naming no key is skipped, not an
//! error: Kubernetes gives a pod `<SERVICE>_SERVICE_HOST` and the like for every Service, so
//! a Service called `pgmux-metrics` must not stop pgmux from starting.

use toml::{Table, Value};

/// Whether `section.key` is a key the environment may set.
fn known(section: &str, key: &str) -> bool {
    match section {
        "general" => super::general_keys().contains(&key),
        _ => super::validate::METRICS_KEYS.contains(&key),
    }
}

/// The variables that name no key (`PGMUX_GENERAL_X`), skipped: for a warning.
pub(crate) fn unknown(vars: impl Iterator<Item = (String, String)>) -> Vec<String> {
    all(vars)
        .into_iter()
        .filter(|(s, k, _)| !known(s, k))
        .map(|(s, k, _)| format!("PGMUX_{}_{}", s.to_uppercase(), k.to_uppercase()))
        .collect()
}

/// The variables that override keys, as (section, key, value), in name order.
pub(crate) fn overrides(
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<(&'static str, String, String)> {
    let mut out = all(vars);
    out.retain(|(s, k, _)| known(s, k));
    out
}

fn all(vars: impl Iterator<Item = (String, String)>) -> Vec<(&'static str, String, String)> {
    let mut out: Vec<(&'static str, String, String)> = vars
        .filter_map(|(name, value)| {
            let (section, key) = if let Some(k) = name.strip_prefix("PGMUX_GENERAL_") {
                ("general", k)
            } else if let Some(k) = name.strip_prefix("PGMUX_METRICS_") {
                ("metrics", k)
            } else {
                return None;
            };
            (!key.is_empty()).then(|| (section, key.to_ascii_lowercase(), value))
        })
        .collect();
    out.sort();
    out
}

/// A value as TOML reads it (`30`, `true`, `["a", "b"]`), else as a string (`127.0.0.1`, `*`).
fn value(text: &str) -> Value {
    match format!("v = {text}").parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(text.into())),
        Err(_) => Value::String(text.to_string()),
    }
}

/// Config text with the overrides applied (unchanged when there are none or the text does
/// not parse: validation then reports the file's own problem).
pub(crate) fn apply(text: &str, overrides: &[(&'static str, String, String)]) -> String {
    if overrides.is_empty() {
        return text.to_string();
    }
    let Ok(mut doc) = text.parse::<Table>() else {
        return text.to_string();
    };
    for (section, key, v) in overrides {
        let entry = doc
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = entry {
            t.insert(key.clone(), value(v));
        }
    }
    toml::to_string(&doc).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(&'static str, String, String)> {
        overrides(v.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    #[test]
    fn only_pgmux_section_variables_count() {
        let o = vars(&[
            ("PGMUX_GENERAL_DEFAULT_POOL_SIZE", "30"),
            ("PGMUX_METRICS_LISTEN", "*:9127"),
            ("PGMUX_CONFIG", "/etc/pgmux/pgmux.toml"),
            ("PGMUX_PGBENCH_SECS", "3"),
            ("PGMUX_GENERAL_", "x"),
            ("PGMUX_METRICS_SERVICE_HOST", "10.0.0.1"),
            ("HOME", "/root"),
        ]);
        assert_eq!(
            o,
            vec![
                ("general", "default_pool_size".into(), "30".into()),
                ("metrics", "listen".into(), "*:9127".into()),
            ]
        );
    }

    #[test]
    fn variables_naming_no_key_are_reported_not_applied() {
        let v = [
            ("PGMUX_METRICS_SERVICE_HOST", "10.0.0.1"),
            ("PGMUX_GENERAL_LISTEN_PORT", "1"),
        ];
        let it = || v.iter().map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(unknown(it()), ["PGMUX_METRICS_SERVICE_HOST"]);
        assert_eq!(overrides(it()).len(), 1);
    }

    #[test]
    fn values_are_typed_and_replace_the_file() {
        let text = "[general]\nlisten_addr = \"127.0.0.1\"\ndefault_pool_size = 5\n";
        let out = apply(
            text,
            &vars(&[
                ("PGMUX_GENERAL_DEFAULT_POOL_SIZE", "30"),
                ("PGMUX_GENERAL_LISTEN_ADDR", "*"),
                ("PGMUX_GENERAL_ADMIN_USERS", "[\"ops\"]"),
                ("PGMUX_METRICS_LISTEN", "0.0.0.0:9127"),
            ]),
        );
        let t: Table = out.parse().unwrap();
        assert_eq!(t["general"]["default_pool_size"].as_integer(), Some(30));
        assert_eq!(t["general"]["listen_addr"].as_str(), Some("*"));
        assert_eq!(
            t["general"]["admin_users"].as_array().unwrap()[0].as_str(),
            Some("ops")
        );
        assert_eq!(t["metrics"]["listen"].as_str(), Some("0.0.0.0:9127"));
    }
}
