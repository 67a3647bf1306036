//! GeoIP: where an address is, from a MaxMind database (`maxminddb`), and
//! how far apart two places are (great-circle distance).

use maxminddb::{PathElement, Reader};
use std::net::IpAddr;
use std::path::Path;

/// A place on Earth, degrees.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
}

/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

impl Location {
    /// Great-circle distance in km (haversine).
    pub fn km_to(&self, other: &Location) -> f64 {
        let (p1, p2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dp = p2 - p1;
        let dl = (other.longitude - self.longitude).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    fn valid(&self) -> bool {
        (-90.0..=90.0).contains(&self.latitude) && (-180.0..=180.0).contains(&self.longitude)
    }
}

/// A GeoIP database (City or any with `location.latitude` / `longitude`).
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb").field("type", &self.reader.metadata().database_type).finish()
    }
}

impl GeoDb {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<Self> {
        let reader = Reader::from_source(bytes).map_err(|e| anyhow::anyhow!("not a MaxMind database: {e}"))?;
        Ok(Self { reader })
    }

    /// Where `ip` is, if the database knows (only the location is decoded).
    pub fn locate(&self, ip: IpAddr) -> Option<Location> {
        let found = self.reader.lookup(ip).ok()?;
        let loc: Location = found.decode_path(&[PathElement::Key("location")]).ok()??;
        loc.valid().then_some(loc)
    }
}

/// A database a test writes itself (feature `testing`): each network placed
/// at its location, as a City database places it.
#[cfg(feature = "testing")]
pub fn write_test_db(places: &[(&str, Location)]) -> anyhow::Result<Vec<u8>> {
    use maxminddb_writer::{Database, paths::IpAddrWithMask};
    #[derive(serde::Serialize)]
    struct City {
        location: Location,
    }
    let mut db = Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "NetServ-Testbed-City".into();
    db.metadata.languages = vec!["en".into()];
    for (net, loc) in places {
        let v = db.insert_value(City { location: *loc }).map_err(|e| anyhow::anyhow!("{e}"))?;
        let net: IpAddrWithMask = net.parse().map_err(|e| anyhow::anyhow!("`{net}`: {e:?}"))?;
        db.insert_node(net, v);
    }
    db.write_to(Vec::new()).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_between_known_cities() {
        let nyc = Location { latitude: 40.7128, longitude: -74.0060 };
        let london = Location { latitude: 51.5074, longitude: -0.1278 };
        let d = nyc.km_to(&london);
        assert!((d - 5570.0).abs() < 15.0, "{d}");
        assert!(nyc.km_to(&nyc).abs() < 1e-9);
        let antipode = Location { latitude: -40.7128, longitude: 105.994 };
        assert!((nyc.km_to(&antipode) - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1.0);
    }

    #[test]
    fn garbage_is_not_a_database() {
        assert!(GeoDb::from_bytes(b"not an mmdb".to_vec()).is_err());
        assert!(GeoDb::from_bytes(Vec::new()).is_err());
    }
}
