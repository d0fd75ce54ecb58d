/**
 * The HTTP-context callbacks of @solo-io/proxy-runtime 0.1.8, dispatched
 * without its getContext().
 *
 * The SDK looks a context up with a checked downcast (`as Context`), and
 * AssemblyScript 0.14 keeps one extra reference for every such cast: each
 * callback would leak its context (about 64 bytes a request). These exports
 * replace the SDK's for the HTTP steps and do exactly what the SDK's do,
 * with an unchecked cast: every id the host passes here was created by
 * proxy_on_context_create under a root, so it is a Context.
 */
import { Context, getBaseContext } from "@solo-io/proxy-runtime/runtime";

function httpContext(context_id: u32): Context {
  return changetype<Context>(changetype<usize>(getBaseContext(context_id)));
}

export function proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32): i32 {
  return httpContext(context_id).onRequestHeaders(headers, end_of_stream != 0) as i32;
}

export function proxy_on_request_body(context_id: u32, body_buffer_length: u32, end_of_stream: u32): i32 {
  return httpContext(context_id).onRequestBody(body_buffer_length, end_of_stream != 0) as i32;
}

export function proxy_on_request_trailers(context_id: u32, trailers: u32): i32 {
  return httpContext(context_id).onRequestTrailers(trailers) as i32;
}

export function proxy_on_request_metadata(context_id: u32, nelements: u32): i32 {
  return httpContext(context_id).onRequestMetadata(nelements) as i32;
}

export function proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: u32): i32 {
  return httpContext(context_id).onResponseHeaders(headers, end_of_stream != 0) as i32;
}

export function proxy_on_response_body(context_id: u32, body_buffer_length: u32, end_of_stream: u32): i32 {
  return httpContext(context_id).onResponseBody(body_buffer_length, end_of_stream != 0) as i32;
}

export function proxy_on_response_trailers(context_id: u32, trailers: u32): i32 {
  return httpContext(context_id).onResponseTrailers(trailers) as i32;
}

export function proxy_on_response_metadata(context_id: u32, nelements: u32): i32 {
  return httpContext(context_id).onResponseMetadata(nelements) as i32;
}

export function proxy_on_log(context_id: u32): void {
  httpContext(context_id).onLog();
}
