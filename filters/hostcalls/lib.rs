//! hostcalls: twistgate's Proxy-Wasm test filter. Its configuration is a small language of directives
//! (`<step> <action> [arg ...]`, see README.md) that says which hostcalls to make in which callback, and
//! every action appends an item to a report the tests read back.

#[path = "../rust/proxy_abi.rs"]
mod proxy_abi;

use proxy_abi::{buffer_type, log_level, map_type, metric_type, raw, stream_type, Action, HttpContext, RootContext, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Configure,
    Tick,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    HttpCallResponse,
    QueueReady,
    Done,
    Log,
    Delete,
}

const STEPS: &[(&str, Step)] = &[
    ("configure", Step::Configure),
    ("tick", Step::Tick),
    ("request_headers", Step::RequestHeaders),
    ("request_body", Step::RequestBody),
    ("request_trailers", Step::RequestTrailers),
    ("response_headers", Step::ResponseHeaders),
    ("response_body", Step::ResponseBody),
    ("response_trailers", Step::ResponseTrailers),
    ("http_call_response", Step::HttpCallResponse),
    ("queue_ready", Step::QueueReady),
    ("done", Step::Done),
    ("log", Step::Log),
    ("delete", Step::Delete),
];

/// Every action with its minimum and maximum argument count.
const ACTIONS: &[(&str, usize, usize)] = &[
    ("get_header", 2, 2),
    ("get_headers", 1, 1),
    ("header_size", 1, 1),
    ("add_header", 3, 3),
    ("replace_header", 3, 3),
    ("remove_header", 2, 2),
    ("set_headers", 2, 2),
    ("get_body", 1, 3),
    ("set_body", 4, 4),
    ("buffer_status", 1, 1),
    ("local_response", 3, 4),
    ("return", 1, 1),
    ("continue_stream", 1, 1),
    ("close_stream", 1, 1),
    ("resume", 0, 0),
    ("dispatch", 3, 7),
    ("set_tick_period", 1, 1),
    ("set_shared", 2, 3),
    ("get_shared", 1, 1),
    ("incr_shared", 1, 1),
    ("register_queue", 1, 1),
    ("resolve_queue", 2, 2),
    ("enqueue", 2, 2),
    ("dequeue", 1, 1),
    ("define_metric", 2, 2),
    ("increment_metric", 2, 2),
    ("record_metric", 2, 2),
    ("get_metric", 1, 1),
    ("get_property", 1, 1),
    ("set_property", 2, 2),
    ("log", 2, 2),
    ("get_log_level", 0, 0),
    ("now", 0, 0),
    ("trap", 0, 1),
    ("panic", 0, 1),
    ("loop", 0, 0),
    ("grow_memory", 1, 1),
    ("bad_pointer", 1, 1),
    ("bad_size", 1, 1),
    ("bad_enum", 1, 1),
    ("bad_pairs", 0, 0),
    ("report_header", 0, 1),
    ("report_body", 0, 0),
    ("report_log", 0, 0),
    ("root_report", 0, 0),
];

struct Directive {
    step: Step,
    action: &'static str,
    args: Vec<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------------------
// Parsing the configuration.

/// Splits raw text on unescaped separators, keeping escapes intact.
fn split_unescaped(text: &[u8], is_separator: impl Fn(u8) -> bool) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut current = Vec::new();
    let mut index = 0;
    while index < text.len() {
        let byte = text[index];
        if byte == b'\\' && index + 1 < text.len() {
            current.push(byte);
            current.push(text[index + 1]);
            index += 2;
            continue;
        }
        if is_separator(byte) {
            pieces.push(std::mem::take(&mut current));
        } else {
            current.push(byte);
        }
        index += 1;
    }
    pieces.push(current);
    pieces
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes `\s \n \r \t \; \\ \0 \xHH`; any other escape (such as `\.`) is kept as written.
fn decode_escapes(argument: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(argument.len());
    let mut index = 0;
    while index < argument.len() {
        let byte = argument[index];
        if byte != b'\\' || index + 1 == argument.len() {
            out.push(byte);
            index += 1;
            continue;
        }
        let escaped = argument[index + 1];
        index += 2;
        match escaped {
            b's' => out.push(b' '),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b';' => out.push(b';'),
            b'\\' => out.push(b'\\'),
            b'0' => out.push(0),
            b'x' => {
                let high = argument.get(index).copied().and_then(hex_value);
                let low = argument.get(index + 1).copied().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => out.push(high * 16 + low),
                    _ => return Err(String::from("\\x needs two hex digits")),
                }
                index += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

fn parse_config(text: &[u8]) -> Result<Vec<Directive>, String> {
    let mut directives = Vec::new();
    for (number, raw_directive) in split_unescaped(text, |byte| byte == b'\n' || byte == b';').iter().enumerate() {
        let words: Vec<Vec<u8>> = split_unescaped(raw_directive, |byte| byte == b' ' || byte == b'\t' || byte == b'\r')
            .into_iter()
            .filter(|word| !word.is_empty())
            .collect();
        if words.is_empty() || words[0].starts_with(b"#") {
            continue;
        }
        let shown = show(raw_directive);
        let step = STEPS
            .iter()
            .find(|(name, _)| name.as_bytes() == words[0].as_slice())
            .map(|(_, step)| *step)
            .ok_or_else(|| format!("directive {} ({}): unknown step {}", number + 1, shown, show(&words[0])))?;
        let action_word = words.get(1).ok_or_else(|| format!("directive {} ({}): missing action", number + 1, shown))?;
        let (action, minimum, maximum) = ACTIONS
            .iter()
            .find(|(name, _, _)| name.as_bytes() == action_word.as_slice())
            .copied()
            .ok_or_else(|| format!("directive {} ({}): unknown action {}", number + 1, shown, show(action_word)))?;
        let count = words.len() - 2;
        if count < minimum || count > maximum {
            return Err(format!(
                "directive {} ({}): {} takes {} to {} arguments, got {}",
                number + 1,
                shown,
                action,
                minimum,
                maximum,
                count
            ));
        }
        let mut args = Vec::with_capacity(count);
        for word in &words[2..] {
            args.push(decode_escapes(word).map_err(|error| format!("directive {} ({}): {}", number + 1, shown, error))?);
        }
        directives.push(Directive { step, action, args });
    }
    Ok(directives)
}

// ---------------------------------------------------------------------------------------------------
// Helpers for arguments and results.

/// Bytes as report text: printable ASCII as is, anything else as `\xHH`.
fn show(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if (0x20..0x7f).contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("\\x{:02x}", byte));
        }
    }
    out
}

fn status_text(status: Status) -> String {
    format!("status:{}", status.0)
}

fn outcome<T>(result: Result<T, Status>, render: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => render(value),
        Err(status) => status_text(status),
    }
}

fn raw_result(status: u32) -> String {
    done(if status == 0 { Ok(()) } else { Err(Status(status)) })
}

fn done(result: Result<(), Status>) -> String {
    outcome(result, |_| String::from("ok"))
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

fn parse_i64(bytes: &[u8]) -> Option<i64> {
    text(bytes).parse().ok()
}

fn parse_u32(bytes: &[u8]) -> Option<u32> {
    let word = text(bytes);
    if let Some(hex) = word.strip_prefix("0x") {
        return u32::from_str_radix(hex, 16).ok();
    }
    word.parse().ok()
}

fn is_absent(argument: Option<&Vec<u8>>) -> bool {
    matches!(argument, None) || argument.map(|bytes| bytes.as_slice() == b"-").unwrap_or(false)
}

fn named_or_number(argument: &[u8], names: &[(&str, u32)]) -> Option<u32> {
    names
        .iter()
        .find(|(name, _)| name.as_bytes() == argument)
        .map(|(_, value)| *value)
        .or_else(|| parse_u32(argument))
}

const MAPS: &[(&str, u32)] = &[
    ("request", map_type::HTTP_REQUEST_HEADERS),
    ("request_trailers", map_type::HTTP_REQUEST_TRAILERS),
    ("response", map_type::HTTP_RESPONSE_HEADERS),
    ("response_trailers", map_type::HTTP_RESPONSE_TRAILERS),
    ("call_response", map_type::HTTP_CALL_RESPONSE_HEADERS),
    ("call_response_trailers", map_type::HTTP_CALL_RESPONSE_TRAILERS),
];

const BUFFERS: &[(&str, u32)] = &[
    ("request", buffer_type::HTTP_REQUEST_BODY),
    ("response", buffer_type::HTTP_RESPONSE_BODY),
    ("call_response", buffer_type::HTTP_CALL_RESPONSE_BODY),
    ("vm_config", buffer_type::VM_CONFIGURATION),
    ("plugin_config", buffer_type::PLUGIN_CONFIGURATION),
];

const STREAMS: &[(&str, u32)] = &[("request", stream_type::HTTP_REQUEST), ("response", stream_type::HTTP_RESPONSE)];

const METRIC_TYPES: &[(&str, u32)] = &[
    ("counter", metric_type::COUNTER),
    ("gauge", metric_type::GAUGE),
    ("histogram", metric_type::HISTOGRAM),
];

const LOG_LEVELS: &[(&str, u32)] = &[
    ("trace", log_level::TRACE),
    ("debug", log_level::DEBUG),
    ("info", log_level::INFO),
    ("warn", log_level::WARN),
    ("error", log_level::ERROR),
    ("critical", log_level::CRITICAL),
];

const RETURNS: &[(&str, u32)] = &[("continue", Action::CONTINUE.0), ("pause", Action::PAUSE.0)];

/// Parses `k=v,k=v` into pairs (an empty argument is an empty list).
fn parse_pairs(list: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.split(|&byte| byte == b',')
        .filter(|item| !item.is_empty())
        .map(|item| match item.iter().position(|&byte| byte == b'=') {
            Some(at) => (item[..at].to_vec(), item[at + 1..].to_vec()),
            None => (item.to_vec(), Vec::new()),
        })
        .collect()
}

fn borrow_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    pairs.iter().map(|(key, value)| (key.as_slice(), value.as_slice())).collect()
}

/// Splits a dotted property path into segments; `\.` keeps a dot inside a segment.
fn property_path(path: &[u8]) -> Vec<Vec<u8>> {
    let mut segments = vec![Vec::new()];
    let mut index = 0;
    while index < path.len() {
        if path[index] == b'\\' && path.get(index + 1) == Some(&b'.') {
            segments.last_mut().unwrap().push(b'.');
            index += 2;
            continue;
        }
        if path[index] == b'.' {
            segments.push(Vec::new());
        } else {
            segments.last_mut().unwrap().push(path[index]);
        }
        index += 1;
    }
    segments
}

fn trap(message: &str) -> ! {
    let _ = proxy_abi::log(log_level::CRITICAL, message);
    core::arch::wasm32::unreachable()
}

// ---------------------------------------------------------------------------------------------------
// Misbehaviour: hostcalls with invalid pointers, sizes and enums.

const BAD_POINTER: usize = 0xFFFF_FFF0;
const BAD_SIZE: usize = 0x7FFF_FFFF;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Misuse {
    Pointer,
    Size,
}

/// Calls hostcall C{call} with a bad pointer or size; returns the raw status, C{None} for an unknown call.
fn misuse(call: &[u8], kind: Misuse) -> Option<u32> {
    let sample = b"hostcalls-sample";
    let (pointer, size) = match kind {
        Misuse::Pointer => (BAD_POINTER as *const u8, sample.len()),
        Misuse::Size => (sample.as_ptr(), BAD_SIZE),
    };
    let empty_pairs = proxy_abi::serialize_pairs(&[]);
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut data_size = 0usize;
    let mut cas = 0u32;
    let mut token = 0u32;
    let status = unsafe {
        match call {
            b"log" => raw::proxy_log(log_level::INFO, pointer, size),
            b"get_header" => raw::proxy_get_header_map_value(0, pointer, size, &mut data, &mut data_size),
            b"add_header" => raw::proxy_add_header_map_value(2, pointer, size, sample.as_ptr(), 1),
            b"get_body" => match kind {
                Misuse::Pointer => raw::proxy_get_buffer_bytes(0, 0, 1024, BAD_POINTER as *mut *mut u8, &mut data_size),
                Misuse::Size => raw::proxy_get_buffer_bytes(0, BAD_SIZE, BAD_SIZE, &mut data, &mut data_size),
            },
            b"set_body" => raw::proxy_set_buffer_bytes(0, 0, 0, pointer, size),
            b"get_property" => raw::proxy_get_property(pointer, size, &mut data, &mut data_size),
            b"set_shared" => raw::proxy_set_shared_data(b"hostcalls".as_ptr(), 9, pointer, size, 0),
            b"get_shared" => raw::proxy_get_shared_data(pointer, size, &mut data, &mut data_size, &mut cas),
            b"dispatch" => raw::proxy_http_call(
                b"127.0.0.1".as_ptr(),
                9,
                pointer,
                size,
                std::ptr::null(),
                0,
                empty_pairs.as_ptr(),
                empty_pairs.len(),
                1000,
                &mut token,
            ),
            b"local_response" => raw::proxy_send_local_response(
                200,
                std::ptr::null(),
                0,
                pointer,
                size,
                empty_pairs.as_ptr(),
                empty_pairs.len(),
                -1,
            ),
            b"get_headers" => match kind {
                Misuse::Pointer => raw::proxy_get_header_map_pairs(0, BAD_POINTER as *mut *mut u8, &mut data_size),
                Misuse::Size => {
                    let memory_end = core::arch::wasm32::memory_size(0) * 65536;
                    raw::proxy_get_header_map_pairs(0, &mut data, (memory_end - 2) as *mut usize)
                }
            },
            _ => return None,
        }
    };
    Some(status)
}

/// Calls hostcall C{call} with the unknown enum value 99; C{None} for an unknown call.
fn bad_enum(call: &[u8]) -> Option<u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut data_size = 0usize;
    let mut id = 0u32;
    let name = b"hostcalls";
    let status = unsafe {
        match call {
            b"get_header" => raw::proxy_get_header_map_value(99, name.as_ptr(), name.len(), &mut data, &mut data_size),
            b"get_body" => raw::proxy_get_buffer_bytes(99, 0, 1024, &mut data, &mut data_size),
            b"log" => raw::proxy_log(99, name.as_ptr(), name.len()),
            b"define_metric" => raw::proxy_define_metric(99, name.as_ptr(), name.len(), &mut id),
            b"continue_stream" => raw::proxy_continue_stream(99),
            _ => return None,
        }
    };
    Some(status)
}

/// Sends pair bytes that claim three pairs but hold less than one.
fn bad_pairs() -> u32 {
    let malformed: [u8; 14] = [3, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, b'a', b'b'];
    unsafe { raw::proxy_set_header_map_pairs(map_type::HTTP_REQUEST_HEADERS, malformed.as_ptr(), malformed.len()) }
}

// ---------------------------------------------------------------------------------------------------
// State and execution.

/// What a root context and its HTTP contexts share.
struct RootState {
    directives: Rc<Vec<Directive>>,
    report: Vec<String>,
    ticks: u64,
    /// Call token to the id of the HTTP context that dispatched it (0: the root).
    calls: HashMap<u32, u32>,
    queues: HashMap<Vec<u8>, u32>,
    metrics: HashMap<Vec<u8>, u32>,
}

type Shared = Rc<RefCell<RootState>>;

/// One run of a step's directives.
struct Run<'a> {
    shared: &'a Shared,
    report: &'a mut Vec<String>,
    step: Step,
    /// The HTTP context the run acts for (0 in a root step not tied to a request).
    context_id: u32,
    body_size: usize,
    end_of_stream: bool,
    returned: Option<u32>,
}

impl<'a> Run<'a> {
    fn all(&mut self) {
        let directives = self.shared.borrow().directives.clone();
        let step = self.step;
        for directive in directives.iter().filter(|directive| directive.step == step) {
            if let Some(result) = self.execute(directive) {
                let item = match directive.args.first() {
                    Some(first) => format!("{} {}={}", directive.action, show(first), result),
                    None => format!("{}={}", directive.action, result),
                };
                self.report.push(item);
            }
        }
    }

    fn queue_id(&self, name: &[u8]) -> Option<u32> {
        self.shared.borrow().queues.get(name).copied().or_else(|| parse_u32(name))
    }

    fn metric_id(&self, name: &[u8]) -> Option<u32> {
        self.shared.borrow().metrics.get(name).copied().or_else(|| parse_u32(name))
    }

    fn report_text(&self, separator: &str) -> String {
        self.report.join(separator)
    }

    /// Runs one directive; returns its result, or C{None} when it adds no item.
    fn execute(&mut self, directive: &Directive) -> Option<String> {
        let args = &directive.args;
        let arg = |index: usize| args[index].as_slice();
        let invalid = |index: usize| Some(format!("invalid:{}", show(&args[index])));
        macro_rules! enumerated {
            ($index:expr, $names:expr) => {
                match named_or_number(arg($index), $names) {
                    Some(value) => value,
                    None => return invalid($index),
                }
            };
        }
        macro_rules! number {
            ($index:expr, $parse:expr) => {
                match $parse(arg($index)) {
                    Some(value) => value,
                    None => return invalid($index),
                }
            };
        }
        let result = match directive.action {
            "get_header" => outcome(proxy_abi::get_map_value(enumerated!(0, MAPS), arg(1)), |value| show(&value)),
            "get_headers" => outcome(proxy_abi::get_map(enumerated!(0, MAPS)), |pairs| {
                let items: Vec<String> =
                    pairs.iter().map(|(key, value)| format!("{}:{}", show(key), show(value))).collect();
                items.join(",")
            }),
            "header_size" => outcome(proxy_abi::get_map(enumerated!(0, MAPS)), |pairs| pairs.len().to_string()),
            "add_header" => done(proxy_abi::add_map_value(enumerated!(0, MAPS), arg(1), arg(2))),
            "replace_header" => done(proxy_abi::replace_map_value(enumerated!(0, MAPS), arg(1), arg(2))),
            "remove_header" => done(proxy_abi::remove_map_value(enumerated!(0, MAPS), arg(1))),
            "set_headers" => {
                let pairs = parse_pairs(arg(1));
                done(proxy_abi::set_map(enumerated!(0, MAPS), &borrow_pairs(&pairs)))
            }
            "get_body" => {
                let start = if is_absent(args.get(1)) { 0 } else { number!(1, parse_u32) as usize };
                let maximum = if is_absent(args.get(2)) { 0x7FFF_FFFF } else { number!(2, parse_u32) as usize };
                outcome(proxy_abi::get_buffer_bytes(enumerated!(0, BUFFERS), start, maximum), |body| show(&body))
            }
            "set_body" => done(proxy_abi::set_buffer_bytes(
                enumerated!(0, BUFFERS),
                number!(1, parse_u32) as usize,
                number!(2, parse_u32) as usize,
                arg(3),
            )),
            "buffer_status" => outcome(proxy_abi::get_buffer_status(enumerated!(0, BUFFERS)), |(size, flags)| {
                format!("{},{}", size, flags)
            }),
            "local_response" => {
                let status = number!(0, parse_u32);
                let reason: &[u8] = if is_absent(args.get(1)) { b"" } else { arg(1) };
                let body: &[u8] = if is_absent(args.get(2)) { b"" } else { arg(2) };
                let headers = if is_absent(args.get(3)) { Vec::new() } else { parse_pairs(arg(3)) };
                done(proxy_abi::send_local_response(status, reason, body, &borrow_pairs(&headers)))
            }
            "return" => {
                self.returned = Some(enumerated!(0, RETURNS));
                String::from("ok")
            }
            "continue_stream" => done(proxy_abi::continue_stream(enumerated!(0, STREAMS))),
            "close_stream" => done(proxy_abi::close_stream(enumerated!(0, STREAMS))),
            "resume" => done(proxy_abi::continue_stream(stream_type::HTTP_REQUEST)),
            "dispatch" => self.dispatch(args)?,
            "set_tick_period" => done(proxy_abi::set_tick_period_milliseconds(number!(0, parse_u32))),
            "set_shared" => {
                let value = if is_absent(args.get(1)) { None } else { Some(arg(1)) };
                let cas = if is_absent(args.get(2)) { 0 } else { number!(2, parse_u32) };
                done(proxy_abi::set_shared_data(arg(0), value, cas))
            }
            "get_shared" => outcome(proxy_abi::get_shared_data(arg(0)), |(value, cas)| format!("{},{}", show(&value), cas)),
            "incr_shared" => outcome(increment_shared(arg(0)), |value| value.to_string()),
            "register_queue" => outcome(proxy_abi::register_shared_queue(arg(0)), |id| {
                self.shared.borrow_mut().queues.insert(arg(0).to_vec(), id);
                id.to_string()
            }),
            "resolve_queue" => outcome(proxy_abi::resolve_shared_queue(arg(0), arg(1)), |id| {
                self.shared.borrow_mut().queues.insert(arg(1).to_vec(), id);
                id.to_string()
            }),
            "enqueue" => match self.queue_id(arg(0)) {
                Some(id) => done(proxy_abi::enqueue_shared_queue(id, arg(1))),
                None => String::from("unknown_queue"),
            },
            "dequeue" => match self.queue_id(arg(0)) {
                Some(id) => outcome(proxy_abi::dequeue_shared_queue(id), |value| show(&value)),
                None => String::from("unknown_queue"),
            },
            "define_metric" => outcome(proxy_abi::define_metric(enumerated!(0, METRIC_TYPES), arg(1)), |id| {
                self.shared.borrow_mut().metrics.insert(arg(1).to_vec(), id);
                id.to_string()
            }),
            "increment_metric" => match self.metric_id(arg(0)) {
                Some(id) => done(proxy_abi::increment_metric(id, number!(1, parse_i64))),
                None => String::from("unknown_metric"),
            },
            "record_metric" => match self.metric_id(arg(0)) {
                Some(id) => done(proxy_abi::record_metric(id, number!(1, parse_i64) as u64)),
                None => String::from("unknown_metric"),
            },
            "get_metric" => match self.metric_id(arg(0)) {
                Some(id) => outcome(proxy_abi::get_metric(id), |value| value.to_string()),
                None => String::from("unknown_metric"),
            },
            "get_property" => {
                let segments = property_path(arg(0));
                let path: Vec<&[u8]> = segments.iter().map(|segment| segment.as_slice()).collect();
                outcome(proxy_abi::get_property(&path), |value| show(&value))
            }
            "set_property" => {
                let segments = property_path(arg(0));
                let path: Vec<&[u8]> = segments.iter().map(|segment| segment.as_slice()).collect();
                done(proxy_abi::set_property(&path, arg(1)))
            }
            "log" => {
                let level = enumerated!(0, LOG_LEVELS);
                let message = arg(1);
                done(proxy_abi::log_bytes(level, message))
            }
            "get_log_level" => outcome(proxy_abi::get_log_level(), |level| level.to_string()),
            "now" => outcome(proxy_abi::get_current_time_nanoseconds(), |time| time.to_string()),
            "trap" => {
                let message = if is_absent(args.get(0)) { String::from("hostcalls: trap") } else { show(arg(0)) };
                trap(&message)
            }
            "panic" => {
                let message = if is_absent(args.get(0)) { String::from("hostcalls: panic") } else { show(arg(0)) };
                panic!("{}", message)
            }
            "loop" => {
                let spin = 0u8;
                loop {
                    unsafe { std::ptr::read_volatile(&spin) };
                }
            }
            "grow_memory" => {
                let pages = number!(0, parse_u32) as usize * 16;
                if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                    self.report.push(format!("grow_memory {}=fail", show(arg(0))));
                    trap("hostcalls: grow_memory failed");
                }
                String::from("ok")
            }
            "bad_pointer" => misuse(arg(0), Misuse::Pointer).map(raw_result)?,
            "bad_size" => misuse(arg(0), Misuse::Size).map(raw_result)?,
            "bad_enum" => bad_enum(arg(0)).map(raw_result)?,
            "bad_pairs" => raw_result(bad_pairs()),
            "report_header" => {
                let name: &[u8] = if is_absent(args.get(0)) { b"x-hostcalls-report" } else { arg(0) };
                let value = self.report_text("|");
                return match proxy_abi::add_map_value(map_type::HTTP_RESPONSE_HEADERS, name, value.as_bytes()) {
                    Ok(()) => None,
                    Err(status) => Some(status_text(status)),
                };
            }
            "report_body" => return self.report_body(),
            "report_log" => {
                let _ = proxy_abi::log(log_level::INFO, &self.report_text("|"));
                return None;
            }
            "root_report" => {
                let items = std::mem::take(&mut self.shared.borrow_mut().report);
                self.report.extend(items);
                return None;
            }
            other => format!("unknown:{}", other),
        };
        Some(result)
    }

    fn dispatch(&mut self, args: &[Vec<u8>]) -> Option<String> {
        let upstream = args[0].as_slice();
        let timeout = if is_absent(args.get(3)) {
            1000
        } else {
            match parse_u32(&args[3]) {
                Some(timeout) => timeout,
                None => return Some(format!("invalid:{}", show(&args[3]))),
            }
        };
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if !is_absent(args.get(1)) {
            headers.push((b":method".to_vec(), args[1].clone()));
        }
        if !is_absent(args.get(2)) {
            headers.push((b":path".to_vec(), args[2].clone()));
        }
        match args.get(4) {
            None => headers.push((b":authority".to_vec(), upstream.to_vec())),
            Some(authority) if authority.as_slice() != b"-" => headers.push((b":authority".to_vec(), authority.clone())),
            Some(_) => {}
        }
        let body: &[u8] = if is_absent(args.get(5)) { b"" } else { &args[5] };
        if !is_absent(args.get(6)) {
            headers.extend(parse_pairs(&args[6]));
        }
        let result = proxy_abi::http_call(upstream, &borrow_pairs(&headers), body, &[], timeout);
        if let Ok(token) = result {
            self.shared.borrow_mut().calls.insert(token, self.context_id);
        }
        Some(outcome(result, |token| token.to_string()))
    }

    fn report_body(&mut self) -> Option<String> {
        let mut body = String::new();
        for item in self.report.iter() {
            body.push_str(item);
            body.push('\n');
        }
        let result = match self.step {
            Step::ResponseBody => {
                let replacement: &[u8] = if self.end_of_stream { body.as_bytes() } else { b"" };
                proxy_abi::set_buffer_bytes(buffer_type::HTTP_RESPONSE_BODY, 0, self.body_size, replacement)
            }
            Step::RequestHeaders | Step::RequestBody | Step::ResponseHeaders | Step::HttpCallResponse => {
                proxy_abi::send_local_response(
                    200,
                    b"",
                    body.as_bytes(),
                    &[(b"content-type".as_slice(), b"text/plain".as_slice())],
                )
            }
            _ => return Some(String::from("unsupported")),
        };
        result.err().map(status_text)
    }
}

const CAS_ATTEMPTS: usize = 64;

/// Adds one to a decimal counter in shared data with CAS, retrying on CAS_MISMATCH (a bounded number
/// of times).
fn increment_shared(key: &[u8]) -> Result<u64, Status> {
    for _ in 0..CAS_ATTEMPTS {
        let (current, cas) = match proxy_abi::get_shared_data(key) {
            Ok((value, cas)) => (text(&value).parse::<u64>().unwrap_or(0), cas),
            Err(Status::NOT_FOUND) => (0, 0),
            Err(status) => return Err(status),
        };
        let next = current + 1;
        match proxy_abi::set_shared_data(key, Some(next.to_string().as_bytes()), cas) {
            Ok(()) => return Ok(next),
            Err(Status::CAS_MISMATCH) => continue,
            Err(status) => return Err(status),
        }
    }
    Err(Status::CAS_MISMATCH)
}

// ---------------------------------------------------------------------------------------------------
// Contexts.

struct HostcallsRoot {
    context_id: u32,
    shared: Shared,
}

pub fn create_root_context(context_id: u32) -> Box<dyn RootContext> {
    Box::new(HostcallsRoot {
        context_id,
        shared: Rc::new(RefCell::new(RootState {
            directives: Rc::new(Vec::new()),
            report: Vec::new(),
            ticks: 0,
            calls: HashMap::new(),
            queues: HashMap::new(),
            metrics: HashMap::new(),
        })),
    })
}

impl HostcallsRoot {
    /// Runs a root step against the root's report; returns what a `return` action chose.
    fn run(&mut self, step: Step, context_id: u32, first_item: Option<String>) -> Option<u32> {
        let mut report = std::mem::take(&mut self.shared.borrow_mut().report);
        report.extend(first_item);
        let mut run = Run {
            shared: &self.shared,
            report: &mut report,
            step,
            context_id,
            body_size: 0,
            end_of_stream: false,
            returned: None,
        };
        run.all();
        let returned = run.returned;
        let mut shared = self.shared.borrow_mut();
        let added = std::mem::replace(&mut shared.report, report);
        shared.report.extend(added);
        returned
    }
}

impl RootContext for HostcallsRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let config = match proxy_abi::get_buffer_bytes(buffer_type::PLUGIN_CONFIGURATION, 0, plugin_configuration_size) {
            Ok(config) => config,
            Err(Status::NOT_FOUND) => Vec::new(),
            Err(status) => {
                let _ = proxy_abi::log(log_level::ERROR, &format!("hostcalls: cannot read the configuration: {}", status_text(status)));
                return false;
            }
        };
        match parse_config(&config) {
            Ok(directives) => self.shared.borrow_mut().directives = Rc::new(directives),
            Err(error) => {
                let _ = proxy_abi::log(log_level::ERROR, &format!("hostcalls: bad configuration: {}", error));
                return false;
            }
        }
        self.run(Step::Configure, 0, None).map(|value| value != 0).unwrap_or(true)
    }

    fn on_tick(&mut self) {
        let ticks = {
            let mut shared = self.shared.borrow_mut();
            shared.ticks += 1;
            shared.ticks
        };
        self.run(Step::Tick, 0, Some(format!("tick={}", ticks)));
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.run(Step::QueueReady, 0, Some(format!("on_queue_ready={}", queue_id)));
    }

    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        let caller = self.shared.borrow_mut().calls.remove(&token).unwrap_or(0);
        let caller = if caller != 0 && proxy_abi::http_context_exists(caller) {
            let _ = proxy_abi::set_effective_context(caller);
            caller
        } else {
            0
        };
        let item = format!("on_http_call_response={},{},{},{}", token, num_headers, body_size, num_trailers);
        self.run(Step::HttpCallResponse, caller, Some(item));
        if caller != 0 {
            let _ = proxy_abi::set_effective_context(self.context_id);
        }
    }

    fn create_http_context(&mut self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HostcallsStream { context_id, shared: self.shared.clone(), report: Vec::new() }))
    }
}

struct HostcallsStream {
    context_id: u32,
    shared: Shared,
    report: Vec<String>,
}

impl HostcallsStream {
    fn run(&mut self, step: Step, body_size: usize, end_of_stream: bool) -> Option<u32> {
        let mut run = Run {
            shared: &self.shared,
            report: &mut self.report,
            step,
            context_id: self.context_id,
            body_size,
            end_of_stream,
            returned: None,
        };
        run.all();
        run.returned
    }

    fn action(&mut self, step: Step, body_size: usize, end_of_stream: bool) -> Action {
        Action(self.run(step, body_size, end_of_stream).unwrap_or(Action::CONTINUE.0))
    }
}

impl HttpContext for HostcallsStream {
    fn on_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.action(Step::RequestHeaders, num_headers, end_of_stream)
    }
    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.action(Step::RequestBody, body_size, end_of_stream)
    }
    fn on_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.action(Step::RequestTrailers, num_trailers, true)
    }
    fn on_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.action(Step::ResponseHeaders, num_headers, end_of_stream)
    }
    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.action(Step::ResponseBody, body_size, end_of_stream)
    }
    fn on_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.action(Step::ResponseTrailers, num_trailers, true)
    }
    fn on_done(&mut self) -> bool {
        self.run(Step::Done, 0, true).map(|value| value != 0).unwrap_or(true)
    }
    fn on_log(&mut self) {
        self.run(Step::Log, 0, true);
    }
    fn on_delete(&mut self) {
        self.run(Step::Delete, 0, true);
    }
}
