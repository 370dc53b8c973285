//! Country, region and city of a client address, from MaxMind DB files (the `maxminddb`
//! crate).
//!
//! Two record layouts are read, chosen per file by its `database_type`:
//! - MaxMind's GeoIP2 / GeoLite2 and DB-IP's own files (`country.iso_code`,
//!   `subdivisions[0].names.en`, `city.names.en`);
//! - ip-location-db's files, which `deploy/` installs from npm (`country_code`, `state1`,
//!   `city`; <https://github.com/sapics/ip-location-db>).
//!
//! Files are tried in order and the first that knows the address answers, so an IPv4 and an
//! IPv6 file (ip-location-db ships them apart) work side by side. An address no file knows, a
//! private one or none gives empty values, never an error: location is a nicety, never a reason
//! to lose an event.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use schemas::{ArcStr, Location};
use serde::Deserialize;

/// The databases, in lookup order.
#[derive(Debug, Default)]
pub struct Geo {
    databases: Vec<Database>,
}

#[derive(Debug)]
struct Database {
    reader: Reader<Vec<u8>>,
    layout: Layout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    GeoIp2,
    IpLocationDb,
}

/// A database file that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the GeoIP database {path}: {source}")]
pub struct GeoError {
    path: PathBuf,
    source: maxminddb::MaxMindDbError,
}

/// The fields read of a MaxMind GeoIP2 record, borrowed from the database (one decode per
/// lookup; the rest of the record is skipped).
#[derive(Deserialize)]
struct GeoIp2Record<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Named<'a>>>,
    #[serde(borrow)]
    city: Option<Named<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    names: Option<EnglishName<'a>>,
}

#[derive(Deserialize)]
struct EnglishName<'a> {
    en: Option<&'a str>,
}

impl Named<'_> {
    fn english(&self) -> &str {
        self.names
            .as_ref()
            .and_then(|names| names.en)
            .unwrap_or_default()
    }
}

/// The fields read of an ip-location-db record.
#[derive(Deserialize)]
struct FlatRecord<'a> {
    country_code: Option<&'a str>,
    state1: Option<&'a str>,
    city: Option<&'a str>,
}

impl Geo {
    /// Opens every file (read into memory: the set-up's files are 60-70 MB each).
    pub fn open(paths: &[PathBuf]) -> Result<Geo, GeoError> {
        let databases = paths
            .iter()
            .map(|path| Database::open(path))
            .collect::<Result<_, _>>()?;
        Ok(Geo { databases })
    }

    /// Whether any database is loaded.
    pub fn is_empty(&self) -> bool {
        self.databases.is_empty()
    }

    /// Where `ip` is; empty fields where no database says.
    pub fn locate(&self, ip: Option<IpAddr>) -> Location {
        let Some(ip) = ip else {
            return Location::default();
        };
        self.databases
            .iter()
            .find_map(|database| database.locate(ip))
            .unwrap_or_default()
    }
}

impl Database {
    fn open(path: &Path) -> Result<Database, GeoError> {
        let reader = Reader::open_readfile(path).map_err(|source| GeoError {
            path: path.to_owned(),
            source,
        })?;
        // MaxMind's and DB-IP's own types are `GeoIP2-City`, `GeoLite2-Country`,
        // `DBIP-City-Lite`...; ip-location-db's are `city ipv4`, `country ipv6`...
        let kind = reader.metadata().database_type.to_ascii_lowercase();
        let layout = if ["geoip2", "geolite2", "dbip"]
            .iter()
            .any(|prefix| kind.starts_with(prefix))
        {
            Layout::GeoIp2
        } else {
            Layout::IpLocationDb
        };
        Ok(Database { reader, layout })
    }

    /// `None` when this database does not know the address (or cannot hold it: an IPv6
    /// address in an IPv4 file).
    fn locate(&self, ip: IpAddr) -> Option<Location> {
        let found = self.reader.lookup(ip).ok()?;
        if !found.has_data() {
            return None;
        }
        let location = match self.layout {
            Layout::GeoIp2 => {
                let record: GeoIp2Record<'_> = found.decode().ok().flatten()?;
                Location {
                    country: record
                        .country
                        .and_then(|country| country.iso_code)
                        .unwrap_or_default()
                        .into(),
                    region: record
                        .subdivisions
                        .as_ref()
                        .and_then(|all| all.first())
                        .map(|region| region.english().into())
                        .unwrap_or_default(),
                    city: record
                        .city
                        .map(|city| city.english().into())
                        .unwrap_or_default(),
                }
            }
            Layout::IpLocationDb => {
                let record: FlatRecord<'_> = found.decode().ok().flatten()?;
                let text = |value: Option<&str>| ArcStr::from(value.unwrap_or_default());
                Location {
                    country: text(record.country_code),
                    region: text(record.state1),
                    city: text(record.city),
                }
            }
        };
        (!location.country.is_empty()).then_some(location)
    }
}
