//! greeting-rust: the greeting filter in Rust (no crates). It reads `my_greeting` from its JSON
//! configuration and adds `X-Greeting: <my_greeting>` to every response ("Hello, World!" when the
//! field or the whole configuration is absent). A configuration that is not a JSON object, or whose
//! `my_greeting` is not a string, is rejected.

#[path = "../rust/proxy_abi.rs"]
mod proxy_abi;
#[path = "../rust/json.rs"]
mod json;

use json::Json;
use proxy_abi::{buffer_type, log_level, map_type, Action, HttpContext, RootContext};
use std::rc::Rc;

const DEFAULT_GREETING: &str = "Hello, World!";

struct GreetingRoot {
    greeting: Rc<String>,
}

pub fn create_root_context(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(GreetingRoot { greeting: Rc::new(String::from(DEFAULT_GREETING)) })
}

/// Reads the greeting from a configuration text; an error says what is wrong.
fn greeting_from(config: &[u8]) -> Result<String, String> {
    if config.iter().all(|byte| byte.is_ascii_whitespace()) {
        return Ok(String::from(DEFAULT_GREETING));
    }
    let document = json::parse(config).map_err(|error| format!("configuration is not JSON: {}", error))?;
    if !matches!(document, Json::Object(_)) {
        return Err(format!("configuration must be a JSON object, not {}", document.type_name()));
    }
    match document.get("my_greeting") {
        None => Ok(String::from(DEFAULT_GREETING)),
        Some(Json::String(greeting)) => Ok(greeting.clone()),
        Some(other) => Err(format!("my_greeting must be a string, not {}", other.type_name())),
    }
}

impl RootContext for GreetingRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let config = proxy_abi::get_buffer_bytes(buffer_type::PLUGIN_CONFIGURATION, 0, plugin_configuration_size)
            .unwrap_or_default();
        match greeting_from(&config) {
            Ok(greeting) => {
                let _ = proxy_abi::log(log_level::INFO, &format!("greeting-rust: configured with {:?}", greeting));
                self.greeting = Rc::new(greeting);
                true
            }
            Err(error) => {
                let _ = proxy_abi::log(log_level::ERROR, &format!("greeting-rust: {}", error));
                false
            }
        }
    }

    fn create_http_context(&mut self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Greeting { greeting: self.greeting.clone() }))
    }
}

struct Greeting {
    greeting: Rc<String>,
}

impl HttpContext for Greeting {
    fn on_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Err(status) =
            proxy_abi::add_map_value(map_type::HTTP_RESPONSE_HEADERS, b"X-Greeting", self.greeting.as_bytes())
        {
            let _ = proxy_abi::log(log_level::ERROR, &format!("greeting-rust: adding X-Greeting: status {}", status.0));
        }
        Action::CONTINUE
    }
}
