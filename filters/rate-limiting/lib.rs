//! rate-limiting: Kong's rate-limiting plugin (policy `local`) as a Proxy-Wasm filter in Rust, no crates.
//!
//! Configuration (JSON object): limits per `second`, `minute`, `hour`, `day`, `month`, `year` (numbers
//! > 0, at least one, each not lower than the one of a shorter period); `limit_by` (`ip` default,
//! `header` with `header_name`, `path` with `path`, `service`); `policy` (`local`); `fault_tolerant`;
//! `hide_client_headers`; `error_code` (429); `error_message` ("API rate limit exceeded").
//!
//! Counters live in shared data, one key per scope, identifier, period and window start, holding the
//! count in decimal: `rl:<config hash>:<route id>:<service id>:<identifier>:<period>:<window start>`.
//! They are read in on_request_headers; when a limit is reached the request gets `error_code` with
//! `{"message":"<error_message>"}` and `Retry-After`; otherwise every counter is incremented with CAS
//! (retried on CAS_MISMATCH) and the response gets `X-RateLimit-Limit-<Period>`,
//! `X-RateLimit-Remaining-<Period>`, `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, as
//! Kong 3.4 sends them. Time comes from proxy_get_current_time_nanoseconds. A tick every second deletes
//! the counters of windows that have ended and logs the usage at DEBUG.

#[path = "../rust/proxy_abi.rs"]
mod proxy_abi;
#[path = "../rust/json.rs"]
mod json;

use json::Json;
use proxy_abi::{buffer_type, log_level, map_type, Action, HttpContext, RootContext, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

const TICK_PERIOD_MS: u32 = 1000;
const CAS_ATTEMPTS: usize = 32;
const DEFAULT_ERROR_MESSAGE: &str = "API rate limit exceeded";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

const PERIODS: [Period; 6] = [Period::Second, Period::Minute, Period::Hour, Period::Day, Period::Month, Period::Year];

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Period::Second => "Second",
            Period::Minute => "Minute",
            Period::Hour => "Hour",
            Period::Day => "Day",
            Period::Month => "Month",
            Period::Year => "Year",
        }
    }

    /// The window length Kong uses for `RateLimit-Reset` (a month counts 30 days, a year 365).
    fn seconds(self) -> i64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    /// Start of the window holding C{now} (UTC; months and years are calendar ones).
    fn window_start(self, now: i64) -> i64 {
        let day_start = now.div_euclid(86400) * 86400;
        match self {
            Period::Second => now,
            Period::Minute => now.div_euclid(60) * 60,
            Period::Hour => now.div_euclid(3600) * 3600,
            Period::Day => day_start,
            Period::Month | Period::Year => {
                let (year, month, _) = civil_from_days(now.div_euclid(86400));
                let month = if self == Period::Year { 1 } else { month };
                days_from_civil(year, month, 1) * 86400
            }
        }
    }

    /// End of the window that starts at C{start}.
    fn window_end(self, start: i64) -> i64 {
        match self {
            Period::Month | Period::Year => {
                let (year, month, _) = civil_from_days(start.div_euclid(86400));
                let (next_year, next_month) = match (self, month) {
                    (Period::Year, _) => (year + 1, 1),
                    (_, 12) => (year + 1, 1),
                    _ => (year, month + 1),
                };
                days_from_civil(next_year, next_month, 1) * 86400
            }
            _ => start + self.seconds(),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// A number as Kong prints it: integers without a fraction.
fn number_text(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{}", value)
    }
}

#[derive(Clone, PartialEq, Eq)]
enum LimitBy {
    Ip,
    Header(String),
    Path(String),
    Service,
}

struct Config {
    limits: Vec<(Period, f64)>,
    limit_by: LimitBy,
    fault_tolerant: bool,
    hide_client_headers: bool,
    error_code: u32,
    error_message: String,
    /// FNV-1a of the configuration text: filter entries with different configurations count apart.
    scope: u64,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const KNOWN_FIELDS: &[&str] = &[
    "second",
    "minute",
    "hour",
    "day",
    "month",
    "year",
    "limit_by",
    "header_name",
    "path",
    "policy",
    "fault_tolerant",
    "hide_client_headers",
    "error_code",
    "error_message",
];

fn optional_bool(document: &Json, name: &str, default: bool) -> Result<bool, String> {
    match document.get(name) {
        None | Some(Json::Null) => Ok(default),
        Some(Json::Bool(value)) => Ok(*value),
        Some(other) => Err(format!("{}: expected a boolean, got {}", name, other.type_name())),
    }
}

fn optional_string(document: &Json, name: &str) -> Result<Option<String>, String> {
    match document.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(value)) => Ok(Some(value.clone())),
        Some(other) => Err(format!("{}: expected a string, got {}", name, other.type_name())),
    }
}

/// Reads and checks the configuration as Kong's rate-limiting schema does; errors name the field.
fn parse_config(text: &[u8]) -> Result<Config, String> {
    let blank = text.iter().all(|byte| byte.is_ascii_whitespace());
    let document = json::parse(if blank { b"{}" } else { text }).map_err(|error| format!("configuration is not JSON: {}", error))?;
    let members = match &document {
        Json::Object(members) => members,
        other => return Err(format!("configuration must be a JSON object, not {}", other.type_name())),
    };
    for (name, _) in members {
        if !KNOWN_FIELDS.contains(&name.as_str()) {
            return Err(format!("{}: unknown field", name));
        }
    }
    let mut limits = Vec::new();
    for period in PERIODS {
        match document.get(period.name()) {
            None | Some(Json::Null) => {}
            Some(Json::Number(limit)) if *limit > 0.0 => limits.push((period, *limit)),
            Some(Json::Number(limit)) => {
                return Err(format!("{}: {} must be greater than 0", period.name(), number_text(*limit)))
            }
            Some(other) => return Err(format!("{}: expected a number, got {}", period.name(), other.type_name())),
        }
    }
    if limits.is_empty() {
        return Err(String::from(
            "at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day', 'month', 'year'",
        ));
    }
    for (index, (shorter, shorter_limit)) in limits.iter().enumerate() {
        for (longer, longer_limit) in &limits[index + 1..] {
            if longer_limit < shorter_limit {
                return Err(format!(
                    "the limit for {}({:.1}) cannot be lower than the limit for {}({:.1})",
                    longer.name(),
                    longer_limit,
                    shorter.name(),
                    shorter_limit
                ));
            }
        }
    }
    let limit_by = match optional_string(&document, "limit_by")?.as_deref() {
        None | Some("ip") => LimitBy::Ip,
        Some("service") => LimitBy::Service,
        Some("header") => match optional_string(&document, "header_name")? {
            Some(name) if !name.is_empty() => LimitBy::Header(name.to_ascii_lowercase()),
            _ => return Err(String::from("header_name: required when limit_by is 'header'")),
        },
        Some("path") => match optional_string(&document, "path")? {
            Some(path) if path.starts_with('/') => LimitBy::Path(path),
            _ => return Err(String::from("path: required when limit_by is 'path' (starting with '/')")),
        },
        Some(other) => return Err(format!("limit_by: expected one of ip, header, path, service, got {:?}", other)),
    };
    match optional_string(&document, "policy")?.as_deref() {
        None | Some("local") => {}
        Some(other) => return Err(format!("policy: only 'local' is supported, got {:?}", other)),
    }
    let error_code = match document.get("error_code") {
        None | Some(Json::Null) => 429,
        Some(Json::Number(code)) if code.fract() == 0.0 && (100.0..=999.0).contains(code) => *code as u32,
        Some(other) => return Err(format!("error_code: expected an HTTP status, got {}", json_text(other))),
    };
    Ok(Config {
        limits,
        limit_by,
        fault_tolerant: optional_bool(&document, "fault_tolerant", true)?,
        hide_client_headers: optional_bool(&document, "hide_client_headers", false)?,
        error_code,
        error_message: optional_string(&document, "error_message")?.unwrap_or_else(|| String::from(DEFAULT_ERROR_MESSAGE)),
        scope: fnv1a(text),
    })
}

fn json_text(value: &Json) -> String {
    match value {
        Json::Number(number) => number_text(*number),
        other => String::from(other.type_name()),
    }
}

/// A JSON string literal for C{text}.
fn json_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", control as u32)),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------------
// Counters in shared data.

fn property_text(path: &[&[u8]]) -> Option<String> {
    proxy_abi::get_property(path)
        .ok()
        .and_then(|value| String::from_utf8(value).ok())
        .filter(|value| !value.is_empty())
}

/// The client address: Kong's `ngx.remote_addr`, else Envoy's `source.address` without its port.
fn client_address() -> String {
    if let Some(address) = property_text(&[b"ngx", b"remote_addr"]) {
        return address;
    }
    match property_text(&[b"source", b"address"]) {
        Some(address) if address.starts_with('[') => address[1..].split(']').next().unwrap_or("").to_string(),
        Some(address) if address.matches(':').count() == 1 => address.split(':').next().unwrap_or("").to_string(),
        Some(address) => address,
        None => String::from("unknown"),
    }
}

fn request_path() -> Option<String> {
    let path = proxy_abi::get_map_value(map_type::HTTP_REQUEST_HEADERS, b":path").ok()?;
    let path = String::from_utf8(path).ok()?;
    Some(path.split('?').next().unwrap_or("").to_string())
}

fn identifier(limit_by: &LimitBy) -> String {
    match limit_by {
        LimitBy::Ip => client_address(),
        LimitBy::Service => property_text(&[b"kong", b"service_id"]).unwrap_or_default(),
        LimitBy::Header(name) => match proxy_abi::get_map_value(map_type::HTTP_REQUEST_HEADERS, name.as_bytes()) {
            Ok(value) if !value.is_empty() => String::from_utf8_lossy(&value).into_owned(),
            _ => client_address(),
        },
        LimitBy::Path(path) => match request_path() {
            Some(requested) if &requested == path => path.clone(),
            _ => client_address(),
        },
    }
}

/// Reads a counter: (count, cas), (0, 0) when absent.
fn read_counter(key: &str) -> Result<(f64, u32), Status> {
    match proxy_abi::get_shared_data(key.as_bytes()) {
        Ok((value, cas)) => Ok((std::str::from_utf8(&value).ok().and_then(|text| text.parse().ok()).unwrap_or(0.0), cas)),
        Err(Status::NOT_FOUND) => Ok((0.0, 0)),
        Err(status) => Err(status),
    }
}

/// Adds one to a counter with CAS, re-reading and retrying on CAS_MISMATCH; returns the new count.
fn increment_counter(key: &str, mut current: f64, mut cas: u32) -> Result<f64, Status> {
    for _ in 0..CAS_ATTEMPTS {
        let next = current + 1.0;
        match proxy_abi::set_shared_data(key.as_bytes(), Some(number_text(next).as_bytes()), cas) {
            Ok(()) => return Ok(next),
            Err(Status::CAS_MISMATCH) => {
                let (reread, reread_cas) = read_counter(key)?;
                current = reread;
                cas = reread_cas;
            }
            Err(status) => return Err(status),
        }
    }
    Err(Status::CAS_MISMATCH)
}

/// Counter keys this instance wrote, with the second their window ends.
type Tracked = Rc<RefCell<HashMap<String, i64>>>;

// ---------------------------------------------------------------------------------------------------
// Contexts.

struct RateLimitingRoot {
    config: Option<Rc<Config>>,
    tracked: Tracked,
    ticking: bool,
}

pub fn create_root_context(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(RateLimitingRoot { config: None, tracked: Rc::new(RefCell::new(HashMap::new())), ticking: false })
}

fn now_seconds() -> Result<i64, Status> {
    Ok((proxy_abi::get_current_time_nanoseconds()? / 1_000_000_000) as i64)
}

impl RootContext for RateLimitingRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let text = proxy_abi::get_buffer_bytes(buffer_type::PLUGIN_CONFIGURATION, 0, plugin_configuration_size)
            .unwrap_or_default();
        match parse_config(&text) {
            Ok(config) => {
                let limits: Vec<String> =
                    config.limits.iter().map(|(period, limit)| format!("{}={}", period.name(), number_text(*limit))).collect();
                let _ = proxy_abi::log(log_level::INFO, &format!("rate-limiting: configured with {}", limits.join(", ")));
                self.config = Some(Rc::new(config));
            }
            Err(error) => {
                let _ = proxy_abi::log(log_level::ERROR, &format!("rate-limiting: invalid configuration: {}", error));
                return false;
            }
        }
        if !self.ticking {
            self.ticking = proxy_abi::set_tick_period_milliseconds(TICK_PERIOD_MS).is_ok();
        }
        true
    }

    fn on_tick(&mut self) {
        let now = match now_seconds() {
            Ok(now) => now,
            Err(_) => return,
        };
        let expired: Vec<String> = self
            .tracked
            .borrow()
            .iter()
            .filter(|(_, ends)| **ends <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &expired {
            if let Ok((_, cas)) = read_counter(key) {
                if cas != 0 {
                    let _ = proxy_abi::set_shared_data(key.as_bytes(), None, cas);
                }
            }
            self.tracked.borrow_mut().remove(key);
        }
        let _ = proxy_abi::log(
            log_level::DEBUG,
            &format!("rate-limiting: {} live counters, {} expired removed", self.tracked.borrow().len(), expired.len()),
        );
    }

    fn create_http_context(&mut self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(RateLimiting { config, tracked: self.tracked.clone(), headers: Vec::new(), answered: false }))
    }
}

struct RateLimiting {
    config: Rc<Config>,
    tracked: Tracked,
    /// Headers for the response, decided in on_request_headers.
    headers: Vec<(String, String)>,
    /// Whether this filter answered the request itself (limit reached or error).
    answered: bool,
}

/// One period's state for this request.
struct Usage {
    period: Period,
    limit: f64,
    key: String,
    count: f64,
    cas: u32,
    window_start: i64,
}

impl RateLimiting {
    fn usages(&self, now: i64) -> Result<Vec<Usage>, Status> {
        let route = property_text(&[b"kong", b"route_id"]).unwrap_or_default();
        let service = property_text(&[b"kong", b"service_id"]).unwrap_or_default();
        let who = identifier(&self.config.limit_by);
        let mut usages = Vec::with_capacity(self.config.limits.len());
        for &(period, limit) in &self.config.limits {
            let window_start = period.window_start(now);
            let key = format!(
                "rl:{:016x}:{}:{}:{}:{}:{}",
                self.config.scope,
                route,
                service,
                who,
                period.name(),
                window_start
            );
            let (count, cas) = read_counter(&key)?;
            usages.push(Usage { period, limit, key, count, cas, window_start });
        }
        Ok(usages)
    }

    fn answer(&mut self, status: u32, message: &str, headers: &[(String, String)]) -> Action {
        let body = format!("{{\"message\":{}}}", json_quote(message));
        let mut pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())).collect();
        pairs.push((b"Content-Type", b"application/json; charset=utf-8"));
        if let Err(status) = proxy_abi::send_local_response(status, b"", body.as_bytes(), &pairs) {
            let _ = proxy_abi::log(log_level::ERROR, &format!("rate-limiting: local response failed: status {}", status.0));
        }
        self.answered = true;
        Action::PAUSE
    }

    fn fail(&mut self, status: Status) -> Action {
        let _ = proxy_abi::log(log_level::ERROR, &format!("rate-limiting: shared data failed: status {}", status.0));
        if self.config.fault_tolerant {
            Action::CONTINUE
        } else {
            self.answer(500, "An unexpected error occurred", &[])
        }
    }
}

impl HttpContext for RateLimiting {
    fn on_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let now = match now_seconds() {
            Ok(now) => now,
            Err(status) => return self.fail(status),
        };
        let mut usages = match self.usages(now) {
            Ok(usages) => usages,
            Err(status) => return self.fail(status),
        };
        let stop = usages.iter().rev().find(|usage| usage.limit - usage.count <= 0.0).map(|usage| usage.period);
        if stop.is_none() {
            for usage in usages.iter_mut() {
                match increment_counter(&usage.key, usage.count, usage.cas) {
                    Ok(count) => usage.count = count - 1.0,
                    Err(status) => return self.fail(status),
                }
                let ends = usage.period.window_end(usage.window_start);
                self.tracked.borrow_mut().insert(usage.key.clone(), ends);
            }
        }

        let mut headers = Vec::new();
        let mut chosen: Option<(f64, f64, Period)> = None;
        for usage in &usages {
            let mut remaining = usage.limit - usage.count;
            if stop.is_none() || stop == Some(usage.period) {
                remaining -= 1.0;
            }
            let remaining = remaining.max(0.0);
            let better = match chosen {
                None => true,
                Some((_, best_remaining, best_period)) => {
                    remaining < best_remaining || (remaining == best_remaining && usage.period.seconds() > best_period.seconds())
                }
            };
            if better {
                chosen = Some((usage.limit, remaining, usage.period));
            }
            headers.push((format!("X-RateLimit-Limit-{}", usage.period.title()), number_text(usage.limit)));
            headers.push((format!("X-RateLimit-Remaining-{}", usage.period.title()), number_text(remaining)));
        }
        let reset = match chosen {
            Some((limit, remaining, period)) => {
                let elapsed = now - period.window_start(now);
                let reset = (period.seconds() - elapsed).max(1);
                headers.push((String::from("RateLimit-Limit"), number_text(limit)));
                headers.push((String::from("RateLimit-Remaining"), number_text(remaining)));
                headers.push((String::from("RateLimit-Reset"), reset.to_string()));
                reset
            }
            None => 1,
        };
        if self.config.hide_client_headers {
            headers.clear();
        }
        if stop.is_some() {
            headers.push((String::from("Retry-After"), reset.to_string()));
            let (code, message) = (self.config.error_code, self.config.error_message.clone());
            return self.answer(code, &message, &headers);
        }
        self.headers = headers;
        Action::CONTINUE
    }

    fn on_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.answered {
            return Action::CONTINUE;
        }
        for (name, value) in &self.headers {
            if let Err(status) = proxy_abi::replace_map_value(map_type::HTTP_RESPONSE_HEADERS, name.as_bytes(), value.as_bytes()) {
                let _ = proxy_abi::log(log_level::ERROR, &format!("rate-limiting: setting {}: status {}", name, status.0));
            }
        }
        Action::CONTINUE
    }
}
