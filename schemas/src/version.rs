//! The one place that knows what each ClickHouse version can do. The engine (DDL, retention)
//! and the query gateway (Ask's prompt) both detect the server's version at start with
//! `SELECT version()`, parse it here, and ask this module, never the version number itself,
//! whether a feature is there.
//!
//! Supported: Debian's 18.16 (tested over HTTP) and 24.x to 26.x (tested through chdb-core
//! 26.9: the same statements, not the HTTP server). What differs is listed in the README's
//! "ClickHouse versions" section; every item there is a method here.

/// The version reported by `SELECT version()`, e.g. `18.16.1` or `26.9.2.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major version (the year for 20.x and later).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ServerVersion {
    /// Debian's ClickHouse, the oldest server the project supports.
    pub const OLDEST: ServerVersion = ServerVersion {
        major: 18,
        minor: 16,
    };

    /// Parses `major.minor[.anything]`; `None` when the text is not a version.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion { major, minor })
    }

    /// Parses like [`ServerVersion::parse`], reading an unknown text as [`ServerVersion::OLDEST`]
    /// (whose SQL every supported server runs).
    pub fn parse_or_oldest(text: &str) -> ServerVersion {
        Self::parse(text).unwrap_or(Self::OLDEST)
    }

    /// `LowCardinality(String)` for repetitive strings: it left experimental status in 19.x,
    /// so older servers get plain `String` (same RowBinary encoding, so the writer does not
    /// care).
    pub fn has_low_cardinality(self) -> bool {
        self.major >= 20
    }

    /// Table `TTL … TO VOLUME` and `TTL … DELETE WHERE`, `REMOVE TTL` and storage policies:
    /// they arrived between 19.6 and 21.x, so they are used from 24, the oldest current
    /// series supported (tested on 26.9). Without them, retention runs as `ALTER TABLE …
    /// DELETE` mutations on a schedule, and there are no tiers.
    pub fn has_ttl(self) -> bool {
        self.major >= 24
    }

    /// Subquery CTEs (`WITH name AS (SELECT …)`), several JOINs per SELECT, window functions,
    /// `CAST(x AS T)`: what models tend to write and 18.16 lacks. Ask's prompt says so when
    /// this is false; the guard lets the server refuse the rest.
    pub fn has_modern_select(self) -> bool {
        self.major >= 21
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(ServerVersion::parse("18.16.1"), Some(ServerVersion::OLDEST));
        assert_eq!(
            ServerVersion::parse("26.9.2.1\n"),
            Some(ServerVersion {
                major: 26,
                minor: 9
            })
        );
        assert_eq!(ServerVersion::parse("nonsense"), None);
        assert_eq!(
            ServerVersion::parse_or_oldest("nonsense"),
            ServerVersion::OLDEST
        );
    }

    #[test]
    fn the_oldest_server_gets_none_of_the_modern_features() {
        let old = ServerVersion::OLDEST;
        assert!(!old.has_low_cardinality() && !old.has_ttl() && !old.has_modern_select());
        let new = ServerVersion::parse("24.8").unwrap_or(old);
        assert!(new.has_low_cardinality() && new.has_ttl() && new.has_modern_select());
    }
}
