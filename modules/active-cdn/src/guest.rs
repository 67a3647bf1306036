//! The `http-module` world adapter: WIT types in, the plain logic of this
//! crate, WIT decisions and counters out.

// wit-bindgen generates the canonical-ABI glue with `unsafe` and `export_name`;
// this adapter is the only place it is allowed. The logic it calls is safe Rust.
#![allow(unsafe_code)]
// The generated glue flattens a request and a response head into 15 ABI arguments.
#![allow(clippy::too_many_arguments)]

use crate::{Config, RequestDecision, TRANSFORM_MAX_BYTES};
use std::cell::RefCell;

wit_bindgen::generate!({ path: "../wit", world: "http-module" });

use netserv::module::counters;

thread_local! {
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
    static BANNERS: RefCell<Option<counters::CounterId>> = const { RefCell::new(None) };
}

struct ActiveCdn;

impl Guest for ActiveCdn {
    fn init(properties: Vec<(String, String)>) -> Result<Hooks, String> {
        let cfg = Config::from_properties(properties.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.to_string())?;
        let hooks = Hooks {
            request_prefixes: cfg.request_prefixes(),
            response_types: cfg.response_types(),
            transform_max_bytes: if cfg.banner.is_empty() { 0 } else { TRANSFORM_MAX_BYTES },
        };
        BANNERS.set(counters::declare("banners_inserted"));
        CONFIG.set(Some(cfg));
        Ok(hooks)
    }

    fn on_request(req: Request) -> RequestAction {
        let decided = CONFIG.with_borrow(|c| c.as_ref().map(|c| crate::on_request(c, &req.path)));
        match decided {
            Some(RequestDecision::Deny(s)) => RequestAction::Deny(s),
            Some(RequestDecision::Bypass) => RequestAction::Bypass,
            Some(RequestDecision::Cache(key)) => RequestAction::Cache(key),
            None => RequestAction::Cache(None),
        }
    }

    fn on_response(_req: Request, head: ResponseHead, body: Option<Vec<u8>>) -> ResponseAction {
        let d = CONFIG.with_borrow(|c| c.as_ref().map(|c| crate::on_response(c, head.status, body.as_deref())));
        let d = d.unwrap_or_default();
        if let (Some(_), Some(id)) = (&d.body, BANNERS.with_borrow(|b| *b)) {
            counters::add(id, 1);
        }
        ResponseAction {
            store: true,
            ttl_secs: d.ttl_secs,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            body: d.body,
        }
    }
}

export!(ActiveCdn);
