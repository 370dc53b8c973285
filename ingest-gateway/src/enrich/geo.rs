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

use maxminddb::{PathElement, Reader};
use schemas::Location;

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

const COUNTRY_GEOIP2: [PathElement<'static>; 2] =
    [PathElement::Key("country"), PathElement::Key("iso_code")];
const REGION_GEOIP2: [PathElement<'static>; 4] = [
    PathElement::Key("subdivisions"),
    PathElement::Index(0),
    PathElement::Key("names"),
    PathElement::Key("en"),
];
const CITY_GEOIP2: [PathElement<'static>; 3] = [
    PathElement::Key("city"),
    PathElement::Key("names"),
    PathElement::Key("en"),
];

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
        let text = |path: &[PathElement<'_>]| -> String {
            found
                .decode_path::<String>(path)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let location = match self.layout {
            Layout::GeoIp2 => Location {
                country: text(&COUNTRY_GEOIP2),
                region: text(&REGION_GEOIP2),
                city: text(&CITY_GEOIP2),
            },
            Layout::IpLocationDb => Location {
                country: text(&[PathElement::Key("country_code")]),
                region: text(&[PathElement::Key("state1")]),
                city: text(&[PathElement::Key("city")]),
            },
        };
        (!location.country.is_empty()).then_some(location)
    }
}
