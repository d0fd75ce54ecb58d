/**
 * twistgate greeting filter (AssemblyScript, @solo-io/proxy-runtime).
 *
 * Reads C{my_greeting} from the JSON plugin configuration and adds
 * C{X-Greeting: <my_greeting>} to every response. Without configuration or
 * without the field it greets with "Hello, World!". A configuration that is
 * not a JSON object, or whose my_greeting is not a string, fails on_configure.
 *
 * The SDK picks the root context factory by the host property
 * C{plugin_root_id}; this filter registers under "greeting" (the filter name)
 * and "" (hosts that report no root id).
 *
 * The module exports the SDK's callbacks (the same list as the SDK's
 * "@solo-io/proxy-runtime/proxy"), except proxy_on_context_create,
 * proxy_on_done, proxy_on_log, proxy_on_delete and the HTTP-context ones,
 * which come from ./callbacks (see there why).
 */
export * from "@solo-io/proxy-runtime/malloc";
export {
  proxy_abi_version_0_2_0, proxy_on_vm_start, proxy_validate_configuration, proxy_on_configure,
  proxy_on_tick, proxy_on_foreign_function, proxy_on_queue_ready,
  proxy_on_http_call_response, proxy_on_grpc_receive_initial_metadata, proxy_on_grpc_trailing_metadata,
  proxy_on_grpc_receive, proxy_on_grpc_close,
} from "@solo-io/proxy-runtime/exports";
export * from "./callbacks";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues,
  stream_context, log, LogLevelValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";
import { readStringField } from "./json";

const DEFAULT_GREETING = "Hello, World!";
const ROOT_ID = "greeting";

class GreetingRoot extends RootContext {
  greeting: string = DEFAULT_GREETING;

  createContext(context_id: u32): Context {
    return new Greeting(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const raw = get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size);
    const text = String.UTF8.decode(raw);
    if (text.trim().length == 0) {
      this.greeting = DEFAULT_GREETING;
      return true;
    }
    const field = readStringField(text, "my_greeting");
    if (!field.valid) {
      log(LogLevelValues.error, "greeting: configuration is not a JSON object: " + text);
      return false;
    }
    if (field.present && !field.isString) {
      log(LogLevelValues.error, "greeting: my_greeting must be a string");
      return false;
    }
    this.greeting = field.present ? field.value : DEFAULT_GREETING;
    log(LogLevelValues.info, "greeting: configured with \"" + this.greeting + "\"");
    return true;
  }
}

class Greeting extends Context {
  greeting: string;

  constructor(context_id: u32, root_context: GreetingRoot) {
    super(context_id, root_context);
    this.greeting = root_context.greeting;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("X-Greeting", this.greeting);
    return FilterHeadersStatusValues.Continue;
  }

  // The SDK's Context.onDone, onLog and onDelete do nothing but build a debug
  // log line each (which the host drops) and, for onDone, return true; only
  // RootContext.onDone cancels pending HTTP calls.

  onDone(): bool {
    return true;
  }

  onLog(): void {
  }

  onDelete(): void {
  }
}

function newGreetingRoot(context_id: u32): RootContext {
  return new GreetingRoot(context_id);
}

registerRootContext(newGreetingRoot, ROOT_ID);
registerRootContext(newGreetingRoot, "");
