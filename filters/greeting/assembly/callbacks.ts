/**
 * The HTTP-context callbacks of @solo-io/proxy-runtime 0.1.8, with the HTTP
 * contexts kept in a map of this module's own.
 *
 * The SDK's versions cost every request for nothing:
 *  - its proxy_on_context_create (ensureContext) builds seven debug log
 *    strings, three of them listing every live context id, which a host that
 *    drops debug logs throws away;
 *  - it looks a context up with a checked downcast (`as Context`), and
 *    AssemblyScript 0.14 keeps one extra reference for every such cast, so
 *    each callback would leak its context (about 64 bytes a request).
 * The SDK's context map is private to it and only its logging ensureContext
 * adds HTTP contexts to it, so they live in httpContexts here. Root contexts
 * stay the SDK's: they are created, and their callbacks run, through its
 * functions; rootContexts only remembers them so that creating an HTTP
 * context does not go through ensureRootContext (which logs too).
 */
import { Context, RootContext, ensureRootContext } from "@solo-io/proxy-runtime/runtime";
import {
  proxy_on_done as sdk_proxy_on_done,
  proxy_on_log as sdk_proxy_on_log,
  proxy_on_delete as sdk_proxy_on_delete,
} from "@solo-io/proxy-runtime/exports";

const httpContexts = new Map<u32, Context>();
const rootContexts = new Map<u32, RootContext>();

/** The root context with this id, created by the SDK on first use. */
function rootContext(root_context_id: u32): RootContext {
  if (rootContexts.has(root_context_id)) {
    return rootContexts.get(root_context_id);
  }
  const root = ensureRootContext(root_context_id);
  rootContexts.set(root_context_id, root);
  return root;
}

function httpContext(context_id: u32): Context {
  return httpContexts.get(context_id);
}

export function proxy_on_context_create(context_id: u32, root_context_id: u32): void {
  if (root_context_id == 0) {
    rootContext(context_id);
    return;
  }
  const root = rootContext(root_context_id);
  if (!httpContexts.has(context_id)) {
    httpContexts.set(context_id, root.createContext(context_id));
  }
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

export function proxy_on_done(context_id: u32): u32 {
  if (httpContexts.has(context_id)) {
    return httpContext(context_id).onDone() ? 1 : 0;
  }
  return sdk_proxy_on_done(context_id);
}

export function proxy_on_log(context_id: u32): void {
  if (httpContexts.has(context_id)) {
    httpContext(context_id).onLog();
    return;
  }
  sdk_proxy_on_log(context_id);
}

export function proxy_on_delete(context_id: u32): void {
  if (httpContexts.has(context_id)) {
    httpContext(context_id).onDelete();
    httpContexts.delete(context_id);
    return;
  }
  rootContexts.delete(context_id);
  sdk_proxy_on_delete(context_id);
}
