//! pgmux configs for the tests, written as TOML by one builder.

use pgmux::config::Config;

use super::pg;

/// A pgmux config as TOML: `[general]` with listen_addr 127.0.0.1 and listen_port 0 plus the
/// lines given to [`general`](Self::general), then the sections added, in order.
pub struct ConfigBuilder {
    general: String,
    sections: String,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    pub fn new() -> ConfigBuilder {
        ConfigBuilder {
            general: "listen_addr = \"127.0.0.1\"\nlisten_port = 0\n".to_string(),
            sections: String::new(),
        }
    }

    /// Lines for `[general]`.
    pub fn general(mut self, lines: &str) -> ConfigBuilder {
        self.general.push_str(lines);
        self.general.push('\n');
        self
    }

    /// Sections as TOML text (see [`db_entry`]).
    pub fn sections(mut self, toml: &str) -> ConfigBuilder {
        self.sections.push_str(toml);
        self.sections.push('\n');
        self
    }

    /// `[databases.NAME]` on 127.0.0.1:`port`, with `settings` (TOML lines).
    pub fn database(self, name: &str, port: u16, settings: &str) -> ConfigBuilder {
        self.sections(&database_section(name, port, settings))
    }

    /// The shared cluster's databases: appdb, otherdb, and aliasdb (appdb under another name).
    pub fn shared_databases(self) -> ConfigBuilder {
        let port = pg().port;
        self.database("appdb", port, "")
            .database("otherdb", port, "")
            .database("aliasdb", port, "dbname = \"appdb\"")
    }

    /// `[users.NAME]`, with a password (plaintext or a stored secret) or none.
    pub fn user(self, name: &str, password: Option<&str>) -> ConfigBuilder {
        let password = password
            .map(|p| format!("password = \"{p}\"\n"))
            .unwrap_or_default();
        self.sections(&format!("[users.{name}]\n{password}"))
    }

    pub fn build(self) -> Config {
        let text = format!("[general]\n{}\n{}", self.general, self.sections);
        Config::parse(&text).unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"))
    }
}

/// A `[databases.NAME]` entry on 127.0.0.1:`port`, with `settings` (TOML lines).
pub fn database_section(name: &str, port: u16, settings: &str) -> String {
    format!("[databases.{name}]\nhost = \"127.0.0.1\"\nport = {port}\n{settings}\n")
}

/// A `[databases.NAME]` entry for the shared cluster's database `dbname`, with extra settings.
pub fn db_entry(name: &str, dbname: &str, settings: &str) -> String {
    database_section(
        name,
        pg().port,
        &format!("dbname = \"{dbname}\"\n{settings}"),
    )
}

/// The harness config: pgmux in front of the shared cluster with SCRAM, max_client_conn 2000,
/// default_pool_size 5, the shared databases (see [`ConfigBuilder::shared_databases`]) and the
/// users app, md5user and other with their passwords. `extra_general` is TOML for
/// `[general]`, `extra` more sections.
pub fn config(extra_general: &str, extra: &str) -> Config {
    ConfigBuilder::new()
        .general("max_client_conn = 2000\ndefault_pool_size = 5\nauth_type = \"scram-sha-256\"")
        .general(extra_general)
        .shared_databases()
        .user("app", Some("app_pw"))
        .user("md5user", Some("md5_pw"))
        .user("other", Some("other_pw"))
        .sections(extra)
        .build()
}

/// A config whose `[general]` is only listen_addr/listen_port plus `general` (so tests can set
/// keys the harness config already sets, like auth_type), with the shared databases, a `onedb`
/// entry (appdb, pool_size = 1), users app and other (not md5user), and `extra`.
pub fn custom_config(general: &str, extra: &str) -> Config {
    ConfigBuilder::new()
        .general(general)
        .shared_databases()
        .sections(&db_entry("onedb", "appdb", "pool_size = 1"))
        .user("app", Some("app_pw"))
        .user("other", Some("other_pw"))
        .sections(extra)
        .build()
}
