"""
Properties (C{proxy_get_property}, C{proxy_set_property}): Envoy-style
attribute paths, Kong's C{kong.*} host properties and C{ngx.<variable>}.

As in Kong, every value is a string: numbers are decimal text, booleans
C{"true"}/C{"false"}. A path arrives as NUL-separated segments; it is looked
up as the segments joined by dots, so C{["request", "path"]} and
C{["request.path"]} mean the same.
"""

import json
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import parse_qsl

from twistgate.proxywasm.constants import Status

Reader = Callable[[object], Optional[bytes]]


def _text(value) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode("utf-8")


def _split(uri: bytes) -> Tuple[bytes, bytes]:
    path, _, query = uri.partition(b"?")
    return path, query


def _header(pairs, name: bytes) -> Optional[bytes]:
    values = [value for key, value in pairs if key.lower() == name]
    return b",".join(values) if values else None


def _hostOnly(authority: bytes) -> bytes:
    if authority.startswith(b"["):
        return authority.partition(b"]")[0] + b"]"
    return authority.rpartition(b":")[0] if b":" in authority else authority


def _entity(entity) -> Optional[bytes]:
    if entity is None:
        return None
    fields = {}
    for name in ("id", "name", "protocol", "host", "port", "path", "paths", "hosts", "methods"):
        if hasattr(entity, name):
            value = getattr(entity, name)
            fields[name] = list(value) if isinstance(value, tuple) else value
    return json.dumps(fields, sort_keys=True).encode("utf-8")


def _exchangeReaders() -> Dict[str, Reader]:
    """
    Readers of per-request properties; each takes the stream context.
    """

    def ex(ctx):
        return ctx.exchange

    def requestSize(ctx):
        length = _header(ex(ctx).requestHeaders, b"content-length")
        if length is not None:
            return length
        return _text(len(ex(ctx).requestBody or b""))

    def duration(ctx):
        return _text("{:.3f}".format(max(0.0, ctx.now() - ex(ctx).startedAt)))

    def startTime(ctx):
        return _text("{:.3f}".format(ex(ctx).startedAt))

    def responseCode(ctx):
        status = ex(ctx).responseStatus
        return _text(status) if status else None

    def upstream(index):
        def read(ctx):
            address = ex(ctx).upstreamAddress
            return None if address is None else _text(address[index])
        return read

    def routeField(name):
        def read(ctx):
            return _text(getattr(ex(ctx).route, name, None))
        return read

    def serviceField(name):
        def read(ctx):
            return _text(getattr(ex(ctx).service, name, None))
        return read

    return {
        "request.path": lambda ctx: ex(ctx).originalUri,
        "request.url_path": lambda ctx: _split(ex(ctx).originalUri)[0],
        "request.host": lambda ctx: ex(ctx).authority,
        "request.scheme": lambda ctx: ex(ctx).scheme,
        "request.method": lambda ctx: ex(ctx).method,
        "request.protocol": lambda ctx: b"HTTP/1.1",
        "request.useragent": lambda ctx: _header(ex(ctx).requestHeaders, b"user-agent"),
        "request.referer": lambda ctx: _header(ex(ctx).requestHeaders, b"referer"),
        "request.id": lambda ctx: _header(ex(ctx).requestHeaders, b"x-request-id"),
        "request.query": lambda ctx: _split(ex(ctx).path)[1],
        "request.time": startTime,
        "request.duration": duration,
        "request.size": requestSize,
        "request.total_size": requestSize,
        "request.is_subrequest": lambda ctx: b"false",
        "response.code": responseCode,
        "response.size": lambda ctx: _text(ctx.responseBodySize),
        "response.total_size": lambda ctx: _text(ctx.responseBodySize),
        "source.address": lambda ctx: _text(ex(ctx).clientAddress[0]),
        "source.port": lambda ctx: _text(ex(ctx).clientAddress[1]),
        "destination.address": lambda ctx: _text(ex(ctx).serverAddress[0]),
        "destination.port": lambda ctx: _text(ex(ctx).serverAddress[1]),
        "upstream.address": upstream(0),
        "upstream.port": upstream(1),
        "connection.id": lambda ctx: _text(ex(ctx).connectionId),
        "connection.mtls": lambda ctx: b"false",
        "kong.route_id": routeField("id"),
        "kong.route_name": routeField("name"),
        "kong.service_id": serviceField("id"),
        "kong.service_name": serviceField("name"),
        "kong.router.route": lambda ctx: _entity(ex(ctx).route),
        "kong.router.service": lambda ctx: _entity(ex(ctx).service),
        "kong.request.port": lambda ctx: _text(ex(ctx).serverAddress[1]),
        "kong.request.forwarded_host": lambda ctx: _hostOnly(ex(ctx).authority),
        "kong.request.forwarded_port": lambda ctx: _text(ex(ctx).serverAddress[1]),
        "kong.request.forwarded_scheme": lambda ctx: ex(ctx).scheme,
        "kong.service.response.status": responseCode,
    }


def _ngxReaders() -> Dict[str, Reader]:
    """
    Readers of the nginx variables filters written for Kong read, by name.
    """

    def ex(ctx):
        return ctx.exchange

    def host(ctx):
        header = _header(ex(ctx).requestHeaders, b"host")
        return _hostOnly(header or ex(ctx).authority).lower()

    def args(ctx):
        return _split(ex(ctx).path)[1]

    return {
        "remote_addr": lambda ctx: _text(ex(ctx).clientAddress[0]),
        "remote_port": lambda ctx: _text(ex(ctx).clientAddress[1]),
        "binary_remote_addr": None,
        "server_addr": lambda ctx: _text(ex(ctx).serverAddress[0]),
        "server_port": lambda ctx: _text(ex(ctx).serverAddress[1]),
        "server_protocol": lambda ctx: b"HTTP/1.1",
        "request_uri": lambda ctx: ex(ctx).originalUri,
        "uri": lambda ctx: _split(ex(ctx).path)[0],
        "document_uri": lambda ctx: _split(ex(ctx).path)[0],
        "args": args,
        "query_string": args,
        "is_args": lambda ctx: b"?" if args(ctx) else b"",
        "host": host,
        "hostname": lambda ctx: _hostOnly(ex(ctx).authority),
        "scheme": lambda ctx: ex(ctx).scheme,
        "https": lambda ctx: b"on" if ex(ctx).scheme == b"https" else b"",
        "request_method": lambda ctx: ex(ctx).method,
        "request_length": lambda ctx: _text(len(ex(ctx).requestBody or b"")),
        "content_length": lambda ctx: _header(ex(ctx).requestHeaders, b"content-length"),
        "content_type": lambda ctx: _header(ex(ctx).requestHeaders, b"content-type"),
        "status": lambda ctx: _text(ex(ctx).responseStatus) if ex(ctx).responseStatus else None,
        "request_time": lambda ctx: _text("{:.3f}".format(max(0.0, ctx.now() - ex(ctx).startedAt))),
        "msec": lambda ctx: _text("{:.3f}".format(ctx.now())),
        "connection": lambda ctx: _text(ex(ctx).connectionId),
        "upstream_addr": lambda ctx: (
            None if ex(ctx).upstreamAddress is None
            else _text("{}:{}".format(*ex(ctx).upstreamAddress))),
    }


_EXCHANGE_READERS = _exchangeReaders()
_NGX_READERS = {name: reader for name, reader in _ngxReaders().items() if reader}
_KONG_CONSTANTS = {
    "kong.client.protocol": b"http",
    "kong.nginx.subsystem": b"http",
    "kong.version": b"3.4.0",
}

READ_ONLY_PREFIXES = ("request.", "response.", "source.", "destination.", "upstream.", "connection.")


def propertyName(segments) -> str:
    """
    @param segments: the path's segments as bytes.
    @return: the dotted name, e.g. C{"request.path"}.
    """
    return ".".join(segment.decode("utf-8", "replace") for segment in segments)


def getProperty(ctx, name: str) -> Optional[bytes]:
    """
    Read a property.

    @param ctx: the effective context: a root context (no exchange) or a
        stream context (with C{exchange}, C{properties} its free C{kong.*}
        values, C{responseBodySize}, C{now()}).
    @param name: the dotted property name.
    @return: the value, or L{None} when the property does not exist here.
    """
    if name == "plugin_name":
        return ctx.vm.filterName.encode("utf-8")
    if name == "plugin_root_id":
        return ctx.root.rootIdName.encode("utf-8")
    if name == "plugin_vm_id":
        return ctx.vm.vmId
    if name in _KONG_CONSTANTS:
        return _KONG_CONSTANTS[name]
    if name in ctx.properties:
        return ctx.properties[name]
    exchange = getattr(ctx, "exchange", None)
    if exchange is None:
        return None
    if name.startswith("request.headers."):
        return _header(exchange.requestHeaders, name[len("request.headers."):].lower().encode("utf-8"))
    if name.startswith("response.headers."):
        return _header(exchange.responseHeaders, name[len("response.headers."):].lower().encode("utf-8"))
    if name.startswith("ngx."):
        variable = name[len("ngx."):]
        if variable.startswith("http_"):
            headerName = variable[len("http_"):].replace("_", "-").lower().encode("utf-8")
            return _header(exchange.requestHeaders, headerName)
        if variable.startswith("arg_"):
            wanted = variable[len("arg_"):]
            for key, value in parse_qsl(_split(exchange.path)[1].decode("latin-1"), keep_blank_values=True):
                if key == wanted:
                    return value.encode("latin-1")
            return None
        reader = _NGX_READERS.get(variable)
        return None if reader is None else reader(ctx)
    if name.startswith("kong.ctx.shared."):
        return exchange.properties.get(name)
    reader = _EXCHANGE_READERS.get(name)
    if reader is not None:
        return reader(ctx)
    if name.startswith("kong."):
        return exchange.properties.get(name)
    return None


def setProperty(ctx, name: str, value: bytes) -> int:
    """
    Write a property.

    C{kong.*} (except the entity properties), C{ngx.args}, C{request.query}
    and unknown names can be set: C{kong.*} values live in the request's
    C{exchange.properties} (shared by the request's filters), others in the
    context. Read-only properties answer INTERNAL_FAILURE, as Kong does.

    @return: a L{Status}.
    """
    exchange = getattr(ctx, "exchange", None)
    if name in ("request.query", "ngx.args"):
        if exchange is None:
            return Status.NOT_FOUND
        path = _split(exchange.path)[0]
        exchange.path = path + (b"?" + value if value else b"")
        return Status.OK
    if (name in _EXCHANGE_READERS or name in _KONG_CONSTANTS or name.startswith(READ_ONLY_PREFIXES)
            or name.startswith("ngx.") or name in ("plugin_name", "plugin_root_id", "plugin_vm_id")):
        return Status.INTERNAL_FAILURE
    if name == "kong.response.status":
        if exchange is None or not (value.isdigit() and 100 <= int(value) <= 999):
            return Status.BAD_ARGUMENT
        exchange.responseStatus = int(value)
        return Status.OK
    if name.startswith("kong.") and exchange is not None:
        exchange.properties[name] = value
        return Status.OK
    ctx.properties[name] = value
    return Status.OK


def exchangeProperty(name: str) -> bool:
    """
    @return: whether C{name} names a per-request property (for the
        capability table).
    """
    return name in _EXCHANGE_READERS


def knownNames() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """
    @return: the Envoy/Kong property names and the C{ngx.} variable names
        this host answers (for the capability table).
    """
    return tuple(sorted(_EXCHANGE_READERS)), tuple(sorted(_NGX_READERS))
