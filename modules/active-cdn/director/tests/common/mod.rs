//! What the director's tests share: a GeoIP database they write themselves.

#![allow(dead_code)]

use maxminddb_writer::Database;
use maxminddb_writer::paths::IpAddrWithMask;
use netserv_cdn_director::geo::Location;

/// A database of our own: the testbed's clients and nodes placed in cities.
pub fn testbed_db(places: &[(&str, Location)]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct City {
        location: Location,
    }
    let mut db = Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "NetServ-Testbed-City".into();
    db.metadata.languages = vec!["en".into()];
    db.metadata.description.insert("en".into(), "the testbed's clients and nodes in cities".into());
    for (net, loc) in places {
        let v = db.insert_value(City { location: *loc }).expect("value");
        db.insert_node(net.parse::<IpAddrWithMask>().expect("network"), v);
    }
    db.write_to(Vec::new()).expect("written")
}
