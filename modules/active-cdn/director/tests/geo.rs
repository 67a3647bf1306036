//! GeoIP against MaxMind's own test database (cross-checked with the source
//! data it was written from), databases a test writes itself, and MaxMind's
//! corrupt databases (an error or a miss, never a panic).

use netserv_cdn_director::geo::{GeoDb, Location};
use netserv_cdn_director::placement::{Landed, Placement, PlacementConfig, Route};
use std::net::IpAddr;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

#[derive(serde::Deserialize)]
struct Source {
    network: String,
    latitude: f64,
    longitude: f64,
}

#[test]
fn maxminds_city_test_database_matches_its_source_data() {
    let db = GeoDb::open(&data("GeoIP2-City-Test.mmdb")).expect("MaxMind's test database");
    let source: Vec<Source> =
        serde_json::from_slice(&std::fs::read(data("GeoIP2-City-Test.locations.json")).expect("read")).expect("json");
    assert_eq!(source.len(), 248);
    for s in &source {
        let first: IpAddr = s.network.split('/').next().and_then(|a| a.parse().ok()).expect("network address");
        let got = db.locate(first).unwrap_or_else(|| panic!("{} not found", s.network));
        assert_eq!((got.latitude, got.longitude), (s.latitude, s.longitude), "{}", s.network);
    }
    // Not in it: a miss, not an error.
    assert_eq!(db.locate("198.18.0.1".parse().expect("ip")), None);
    assert_eq!(db.locate("::1".parse().expect("ip")), None);
}

#[test]
fn corrupt_databases_are_refused_or_miss_never_panic() {
    let mut opened = 0;
    for entry in std::fs::read_dir(data("bad")).expect("bad data") {
        let path = entry.expect("entry").path();
        if let Ok(db) = GeoDb::open(&path) {
            opened += 1;
            for ip in ["1.1.1.1", "81.2.69.142", "::1", "2001:218::1"] {
                let _ = db.locate(ip.parse().expect("ip"));
            }
        }
    }
    assert!(opened < 17, "some are refused outright");
}

const NYC: Location = Location { latitude: 40.7128, longitude: -74.006 };
const BOSTON: Location = Location { latitude: 42.3601, longitude: -71.0589 };
const LONDON: Location = Location { latitude: 51.5074, longitude: -0.1278 };
const PARIS: Location = Location { latitude: 48.8566, longitude: 2.3522 };
const TOKYO: Location = Location { latitude: 35.6762, longitude: 139.6503 };

#[test]
fn the_nearest_node_for_every_fixture_address() {
    let places = [
        ("198.18.0.0/24", NYC),    // node in New York
        ("198.18.8.0/24", LONDON), // node in London
        ("198.18.1.0/24", BOSTON), // clients
        ("198.18.2.0/24", PARIS),  // clients
        ("198.18.3.0/24", TOKYO),  // clients, no node near
        ("198.18.4.0/24", NYC),    // clients
    ];
    let db = GeoDb::from_bytes(netserv_cdn_director::geo::write_test_db(&places).expect("written"))
        .expect("our database reads");
    let mut p = Placement::new(PlacementConfig::default());
    let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
    p.route(0, ip("198.18.4.9"), db.locate(ip("198.18.4.9")));
    let nodes = ["198.18.0.1", "198.18.8.1"]
        .iter()
        .map(|n| Landed { address: ip(n), node_id: (*n).into(), location: db.locate(ip(n)) })
        .collect();
    p.landed(1, ip("198.18.4.9"), nodes);
    for (client, want) in [
        ("198.18.1.7", Some("198.18.0.1")),
        ("198.18.4.200", Some("198.18.0.1")),
        ("198.18.2.1", Some("198.18.8.1")),
        ("198.18.3.3", None),
        ("198.18.9.9", None), // not in the database
    ] {
        let got = match p.route(2, ip(client), db.locate(ip(client))) {
            Route::Redirect { node, .. } => Some(node),
            Route::Origin { .. } => None,
        };
        assert_eq!(got, want.map(ip), "{client}");
    }
}
