//! A small Proxy-Wasm ABI 0.2.1 binding for twistgate's Rust filters, written without crates.
//!
//! A filter includes this file with `#[path = "../rust/proxy_abi.rs"] mod proxy_abi;` and defines, at its
//! crate root, `fn create_root_context(context_id: u32) -> Box<dyn proxy_abi::RootContext>`. This module
//! exports every callback the host calls (`proxy_on_*`), the allocator (`proxy_on_memory_allocate` and
//! `malloc`), the ABI marker `proxy_abi_version_0_2_1`, dispatches callbacks to root and HTTP contexts,
//! and wraps every hostcall in a function returning `Result<_, Status>`.
//!
//! Buffers the host allocates with our allocator and hands back (`**data`, `*size`) become owned
//! `Vec<u8>`s; a null pointer reads as empty.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A `proxy_status_t` as the host returned it (the raw number is kept so callers can report it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const OK: Status = Status(0);
    pub const NOT_FOUND: Status = Status(1);
    pub const BAD_ARGUMENT: Status = Status(2);
    pub const SERIALIZATION_FAILURE: Status = Status(3);
    pub const PARSE_FAILURE: Status = Status(4);
    pub const INVALID_MEMORY_ACCESS: Status = Status(6);
    pub const EMPTY: Status = Status(7);
    pub const CAS_MISMATCH: Status = Status(8);
    pub const INTERNAL_FAILURE: Status = Status(10);
    pub const UNIMPLEMENTED: Status = Status(12);
}

/// What an HTTP callback returns (`proxy_action_t`; any other number is passed through as is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action(pub u32);

impl Action {
    pub const CONTINUE: Action = Action(0);
    pub const PAUSE: Action = Action(1);
}

pub mod log_level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

pub mod map_type {
    pub const HTTP_REQUEST_HEADERS: u32 = 0;
    pub const HTTP_REQUEST_TRAILERS: u32 = 1;
    pub const HTTP_RESPONSE_HEADERS: u32 = 2;
    pub const HTTP_RESPONSE_TRAILERS: u32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
}

pub mod buffer_type {
    pub const HTTP_REQUEST_BODY: u32 = 0;
    pub const HTTP_RESPONSE_BODY: u32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub const VM_CONFIGURATION: u32 = 6;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
}

pub mod stream_type {
    pub const HTTP_REQUEST: u32 = 0;
    pub const HTTP_RESPONSE: u32 = 1;
}

pub mod metric_type {
    pub const COUNTER: u32 = 0;
    pub const GAUGE: u32 = 1;
    pub const HISTOGRAM: u32 = 2;
}

/// The raw imports from module `env`, typed exactly as the ABI declares them.
pub mod raw {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
        pub fn proxy_get_log_level(return_level: *mut u32) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
        pub fn proxy_get_buffer_status(
            buffer_type: u32,
            return_size: *mut usize,
            return_flags: *mut u32,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            return_value: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize) -> u32;
        pub fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            return_value: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_close_stream(stream_type: u32) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_http_call(
            upstream: *const u8,
            upstream_size: usize,
            headers: *const u8,
            headers_size: usize,
            body: *const u8,
            body_size: usize,
            trailers: *const u8,
            trailers_size: usize,
            timeout_ms: u32,
            return_token: *mut u32,
        ) -> u32;
        pub fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            return_value: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_register_shared_queue(
            name: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_resolve_shared_queue(
            vm_id: *const u8,
            vm_id_size: usize,
            name: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_enqueue_shared_queue(queue_id: u32, value: *const u8, value_size: usize) -> u32;
        pub fn proxy_dequeue_shared_queue(
            queue_id: u32,
            return_value: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
        pub fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    }
}

fn check(status: u32) -> Result<(), Status> {
    if status == 0 {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Takes ownership of a buffer the host allocated through our allocator (null: empty).
unsafe fn take_host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

fn allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    allocate(size)
}

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut u8 {
    allocate(size)
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

// ---------------------------------------------------------------------------------------------------
// The pairs codec (header maps): u32 count, count x (u32 key length, u32 value length), then each key
// and value followed by a NUL.

pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub fn serialize_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut size = 4;
    for (key, value) in pairs {
        size += 8 + key.len() + value.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<usize> {
    let slice = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]) as usize)
}

/// Parses serialized pairs; C{None} when the bytes are malformed. Empty input is an empty map.
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Pairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)?;
    let mut lengths_end = count.checked_mul(8)?.checked_add(4)?;
    if lengths_end > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for index in 0..count {
        let key_size = read_u32(bytes, 4 + index * 8)?;
        let value_size = read_u32(bytes, 8 + index * 8)?;
        let key_end = lengths_end.checked_add(key_size)?;
        let value_start = key_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_size)?;
        if value_end >= bytes.len() || bytes[key_end] != 0 || bytes[value_end] != 0 {
            return None;
        }
        pairs.push((bytes[lengths_end..key_end].to_vec(), bytes[value_start..value_end].to_vec()));
        lengths_end = value_end + 1;
    }
    if lengths_end != bytes.len() {
        return None;
    }
    Some(pairs)
}

// ---------------------------------------------------------------------------------------------------
// Hostcall wrappers.

pub fn log(level: u32, message: &str) -> Result<(), Status> {
    log_bytes(level, message.as_bytes())
}

pub fn log_bytes(level: u32, message: &[u8]) -> Result<(), Status> {
    check(unsafe { raw::proxy_log(level, message.as_ptr(), message.len()) })
}

pub fn get_log_level() -> Result<u32, Status> {
    let mut level = 0u32;
    check(unsafe { raw::proxy_get_log_level(&mut level) })?;
    Ok(level)
}

pub fn get_current_time_nanoseconds() -> Result<u64, Status> {
    let mut time = 0u64;
    check(unsafe { raw::proxy_get_current_time_nanoseconds(&mut time) })?;
    Ok(time)
}

pub fn set_tick_period_milliseconds(period: u32) -> Result<(), Status> {
    check(unsafe { raw::proxy_set_tick_period_milliseconds(period) })
}

pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    check(unsafe { raw::proxy_set_effective_context(context_id) })
}

pub fn get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    check(unsafe { raw::proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) })?;
    Ok(unsafe { take_host_bytes(data, size) })
}

pub fn set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    check(unsafe { raw::proxy_set_buffer_bytes(buffer_type, start, size, data.as_ptr(), data.len()) })
}

/// Returns the buffer's (size, flags).
pub fn get_buffer_status(buffer_type: u32) -> Result<(usize, u32), Status> {
    let mut size = 0usize;
    let mut flags = 0u32;
    check(unsafe { raw::proxy_get_buffer_status(buffer_type, &mut size, &mut flags) })?;
    Ok((size, flags))
}

pub fn get_map(map_type: u32) -> Result<Pairs, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    check(unsafe { raw::proxy_get_header_map_pairs(map_type, &mut data, &mut size) })?;
    let bytes = unsafe { take_host_bytes(data, size) };
    deserialize_pairs(&bytes).ok_or(Status::SERIALIZATION_FAILURE)
}

pub fn set_map(map_type: u32, pairs: &[(&[u8], &[u8])]) -> Result<(), Status> {
    let bytes = serialize_pairs(pairs);
    check(unsafe { raw::proxy_set_header_map_pairs(map_type, bytes.as_ptr(), bytes.len()) })
}

pub fn get_map_value(map_type: u32, key: &[u8]) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    check(unsafe { raw::proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), &mut data, &mut size) })?;
    Ok(unsafe { take_host_bytes(data, size) })
}

pub fn add_map_value(map_type: u32, key: &[u8], value: &[u8]) -> Result<(), Status> {
    check(unsafe {
        raw::proxy_add_header_map_value(map_type, key.as_ptr(), key.len(), value.as_ptr(), value.len())
    })
}

pub fn replace_map_value(map_type: u32, key: &[u8], value: &[u8]) -> Result<(), Status> {
    check(unsafe {
        raw::proxy_replace_header_map_value(map_type, key.as_ptr(), key.len(), value.as_ptr(), value.len())
    })
}

pub fn remove_map_value(map_type: u32, key: &[u8]) -> Result<(), Status> {
    check(unsafe { raw::proxy_remove_header_map_value(map_type, key.as_ptr(), key.len()) })
}

/// Joins property path segments with NUL, as the ABI wants them.
pub fn serialize_property_path(path: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, segment) in path.iter().enumerate() {
        if index > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment);
    }
    out
}

pub fn get_property(path: &[&[u8]]) -> Result<Vec<u8>, Status> {
    let serialized = serialize_property_path(path);
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    check(unsafe { raw::proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) })?;
    Ok(unsafe { take_host_bytes(data, size) })
}

pub fn set_property(path: &[&[u8]], value: &[u8]) -> Result<(), Status> {
    let serialized = serialize_property_path(path);
    check(unsafe { raw::proxy_set_property(serialized.as_ptr(), serialized.len(), value.as_ptr(), value.len()) })
}

pub fn continue_stream(stream_type: u32) -> Result<(), Status> {
    check(unsafe { raw::proxy_continue_stream(stream_type) })
}

pub fn close_stream(stream_type: u32) -> Result<(), Status> {
    check(unsafe { raw::proxy_close_stream(stream_type) })
}

/// Sends a local response (grpc_status -1: none).
pub fn send_local_response(
    status_code: u32,
    details: &[u8],
    body: &[u8],
    headers: &[(&[u8], &[u8])],
) -> Result<(), Status> {
    let serialized = serialize_pairs(headers);
    check(unsafe {
        raw::proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// Dispatches an HTTP call; returns its token.
pub fn http_call(
    upstream: &[u8],
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    trailers: &[(&[u8], &[u8])],
    timeout_ms: u32,
) -> Result<u32, Status> {
    let serialized_headers = serialize_pairs(headers);
    let serialized_trailers = serialize_pairs(trailers);
    let mut token = 0u32;
    check(unsafe {
        raw::proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            serialized_headers.as_ptr(),
            serialized_headers.len(),
            body.as_ptr(),
            body.len(),
            serialized_trailers.as_ptr(),
            serialized_trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Returns (value, cas) of a shared data key.
pub fn get_shared_data(key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    let mut cas = 0u32;
    check(unsafe { raw::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) })?;
    Ok((unsafe { take_host_bytes(data, size) }, cas))
}

/// Sets a shared data key; C{None} passes a null value pointer (delete).
pub fn set_shared_data(key: &[u8], value: Option<&[u8]>, cas: u32) -> Result<(), Status> {
    let (pointer, size) = match value {
        Some(bytes) => (bytes.as_ptr(), bytes.len()),
        None => (std::ptr::null(), 0),
    };
    check(unsafe { raw::proxy_set_shared_data(key.as_ptr(), key.len(), pointer, size, cas) })
}

pub fn register_shared_queue(name: &[u8]) -> Result<u32, Status> {
    let mut id = 0u32;
    check(unsafe { raw::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn resolve_shared_queue(vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
    let mut id = 0u32;
    check(unsafe { raw::proxy_resolve_shared_queue(vm_id.as_ptr(), vm_id.len(), name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn enqueue_shared_queue(queue_id: u32, value: &[u8]) -> Result<(), Status> {
    check(unsafe { raw::proxy_enqueue_shared_queue(queue_id, value.as_ptr(), value.len()) })
}

pub fn dequeue_shared_queue(queue_id: u32) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    check(unsafe { raw::proxy_dequeue_shared_queue(queue_id, &mut data, &mut size) })?;
    Ok(unsafe { take_host_bytes(data, size) })
}

pub fn define_metric(metric_type: u32, name: &[u8]) -> Result<u32, Status> {
    let mut id = 0u32;
    check(unsafe { raw::proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(metric_id: u32, offset: i64) -> Result<(), Status> {
    check(unsafe { raw::proxy_increment_metric(metric_id, offset) })
}

pub fn record_metric(metric_id: u32, value: u64) -> Result<(), Status> {
    check(unsafe { raw::proxy_record_metric(metric_id, value) })
}

pub fn get_metric(metric_id: u32) -> Result<u64, Status> {
    let mut value = 0u64;
    check(unsafe { raw::proxy_get_metric(metric_id, &mut value) })?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------------------
// Contexts and dispatch.

/// A root (plugin) context: one per filter entry. Every method has a harmless default.
pub trait RootContext {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }
    fn on_tick(&mut self) {}
    fn on_queue_ready(&mut self, _queue_id: u32) {}
    fn on_http_call_response(&mut self, _token: u32, _num_headers: usize, _body_size: usize, _num_trailers: usize) {}
    /// Makes the HTTP context for a new request; C{None} leaves the request alone.
    fn create_http_context(&mut self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        None
    }
    fn on_done(&mut self) -> bool {
        true
    }
    fn on_log(&mut self) {}
    fn on_delete(&mut self) {}
}

/// An HTTP (stream) context: one per filter per request.
pub trait HttpContext {
    fn on_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::CONTINUE
    }
    fn on_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::CONTINUE
    }
    fn on_request_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::CONTINUE
    }
    fn on_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::CONTINUE
    }
    fn on_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::CONTINUE
    }
    fn on_response_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::CONTINUE
    }
    fn on_done(&mut self) -> bool {
        true
    }
    fn on_log(&mut self) {}
    fn on_delete(&mut self) {}
}

type SharedRoot = Rc<RefCell<Box<dyn RootContext>>>;
type SharedHttp = Rc<RefCell<Box<dyn HttpContext>>>;

#[derive(Default)]
struct Registry {
    roots: HashMap<u32, SharedRoot>,
    streams: HashMap<u32, SharedHttp>,
    parents: HashMap<u32, u32>,
    panic_hook_installed: bool,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

fn exact_root(context_id: u32) -> Option<SharedRoot> {
    REGISTRY.with(|registry| registry.borrow().roots.get(&context_id).cloned())
}

/// The root context with this id, or the root that owns the HTTP context with this id.
fn root(context_id: u32) -> Option<SharedRoot> {
    REGISTRY.with(|registry| {
        let registry = registry.borrow();
        let root_id = registry.parents.get(&context_id).copied().unwrap_or(context_id);
        registry.roots.get(&root_id).cloned()
    })
}

fn stream(context_id: u32) -> Option<SharedHttp> {
    REGISTRY.with(|registry| registry.borrow().streams.get(&context_id).cloned())
}

/// Whether an HTTP context with this id currently exists.
pub fn http_context_exists(context_id: u32) -> bool {
    REGISTRY.with(|registry| registry.borrow().streams.contains_key(&context_id))
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = log(log_level::CRITICAL, &info.to_string());
    }));
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    let install = REGISTRY.with(|registry| {
        let mut registry = registry.borrow_mut();
        let install = !registry.panic_hook_installed;
        registry.panic_hook_installed = true;
        install
    });
    if install {
        install_panic_hook();
    }
    if parent_context_id == 0 {
        let created: Box<dyn RootContext> = crate::create_root_context(context_id);
        REGISTRY.with(|registry| {
            registry.borrow_mut().roots.insert(context_id, Rc::new(RefCell::new(created)));
        });
        return;
    }
    let parent = match root(parent_context_id) {
        Some(parent) => parent,
        None => return,
    };
    let created = parent.borrow_mut().create_http_context(context_id);
    REGISTRY.with(|registry| {
        let mut registry = registry.borrow_mut();
        registry.parents.insert(context_id, parent_context_id);
        if let Some(created) = created {
            registry.streams.insert(context_id, Rc::new(RefCell::new(created)));
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, vm_configuration_size: usize) -> u32 {
    match root(context_id) {
        Some(context) => context.borrow_mut().on_vm_start(vm_configuration_size) as u32,
        None => 1,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> u32 {
    match root(context_id) {
        Some(context) => context.borrow_mut().on_configure(plugin_configuration_size) as u32,
        None => 0,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    if let Some(context) = root(context_id) {
        context.borrow_mut().on_tick();
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(context_id: u32, queue_id: u32) {
    if let Some(context) = root(context_id) {
        context.borrow_mut().on_queue_ready(queue_id);
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    num_trailers: usize,
) {
    if let Some(context) = root(context_id) {
        context.borrow_mut().on_http_call_response(token, num_headers, body_size, num_trailers);
    }
}

fn stream_action(context_id: u32, call: impl FnOnce(&mut dyn HttpContext) -> Action) -> u32 {
    match stream(context_id) {
        Some(context) => call(context.borrow_mut().as_mut()).0,
        None => Action::CONTINUE.0,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, num_headers: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, |context| context.on_request_headers(num_headers, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, |context| context.on_request_body(body_size, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, num_trailers: usize) -> u32 {
    stream_action(context_id, |context| context.on_request_trailers(num_trailers))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, num_headers: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, |context| context.on_response_headers(num_headers, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, |context| context.on_response_body(body_size, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, num_trailers: usize) -> u32 {
    stream_action(context_id, |context| context.on_response_trailers(num_trailers))
}

#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    if let Some(context) = stream(context_id) {
        return context.borrow_mut().on_done() as u32;
    }
    match exact_root(context_id) {
        Some(context) => context.borrow_mut().on_done() as u32,
        None => 1,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    if let Some(context) = stream(context_id) {
        context.borrow_mut().on_log();
    } else if let Some(context) = exact_root(context_id) {
        context.borrow_mut().on_log();
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    if let Some(context) = stream(context_id) {
        context.borrow_mut().on_delete();
    } else if let Some(context) = exact_root(context_id) {
        context.borrow_mut().on_delete();
    }
    REGISTRY.with(|registry| {
        let mut registry = registry.borrow_mut();
        registry.streams.remove(&context_id);
        registry.parents.remove(&context_id);
        registry.roots.remove(&context_id);
    });
}
