"""
The admin API: Kong's DB-less admin endpoints, read-only over the current
configuration, plus C{POST /config} to replace it.
"""

import hashlib
import json
import os
import socket
import uuid
from urllib.parse import parse_qs
from typing import Callable, Dict, List, Optional, Tuple

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

import twistgate
from twistgate.config.entities import filterChainToDict, filterEntryToDict, filterFileToDict, routeToDict, serviceToDict
from twistgate.config.errors import ConfigError
from twistgate.config.filters import configSchemaOf
from twistgate.web.metrics import MetricsResource

NODE_ID = str(uuid.uuid4())


def _notFound(message: str = "Not found") -> Tuple[int, object]:
    return http.NOT_FOUND, {"message": message}


def _listing(items: List[dict]) -> Tuple[int, object]:
    return http.OK, {"data": items, "next": None}


def _find(entities, key: str):
    """
    @return: the entity whose id, or else name, is C{key}, or L{None}.
    """
    for entity in entities:
        if entity.id == key:
            return entity
    for entity in entities:
        if entity.name == key:
            return entity
    return None


class AdminResource(Resource):
    """
    The admin API's root: dispatches on the path segments.

    @ivar gateway: the L{twistgate.service.GatewayService} (its C{state},
        C{settings}, C{filters}, C{reloadText}).
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, gateway, clock, metrics=None) -> None:
        """
        @param gateway: the L{twistgate.service.GatewayService}.
        @param clock: an C{IReactorTime}.
        @param metrics: the L{GatewayMetrics} served on C{GET /metrics}, or
            L{None} for no such endpoint.
        """
        super().__init__()
        self.gateway = gateway
        self.metrics = metrics
        self._clock = clock
        self._startedAt = clock.seconds()

    def render(self, request: server.Request):
        segments = [segment.decode("utf-8", "replace") for segment in request.postpath if segment]
        method = request.method
        try:
            if method == b"POST" and segments == ["config"]:
                status, document = self._postConfig(request)
            elif method in (b"GET", b"HEAD"):
                if segments == ["config"]:
                    return self._getConfig(request)
                if segments == ["metrics"] and self.metrics is not None:
                    return MetricsResource(self.metrics).render(request)
                status, document = self._get(segments)
            else:
                status, document = http.NOT_ALLOWED, {"message": "Method not allowed"}
        except Exception:
            self._log.failure("admin API {method} {uri}", method=method, uri=request.uri)
            status, document = http.INTERNAL_SERVER_ERROR, {"message": "An unexpected error occurred"}
        body = json.dumps(document, indent=None).encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        request.setHeader(b"server", b"twistgate/" + twistgate.__version__.encode("ascii"))
        return body

    # GET

    def _get(self, segments: List[str]) -> Tuple[int, object]:
        config = self.gateway.state.current.config
        if not segments:
            return http.OK, self._root()
        head, rest = segments[0], segments[1:]
        handlers: Dict[str, Callable[[List[str]], Tuple[int, object]]] = {
            "status": lambda rest: (http.OK, self._status()) if not rest else _notFound(),
            "services": self._services,
            "routes": self._routes,
            "filter-chains": lambda rest: self._chains(rest, config.filterChains),
            "filters": self._filters,
            "schemas": self._schemas,
        }
        handler = handlers.get(head)
        if handler is None:
            return _notFound()
        return handler(rest)

    def _root(self) -> dict:
        settings = self.gateway.settings
        return {
            "tagline": "Welcome to twistgate",
            "version": twistgate.__version__,
            "hostname": socket.gethostname(),
            "node_id": NODE_ID,
            "pids": {"master": os.getpid(), "workers": [os.getpid()]},
            "plugins": {"available_on_server": {}, "enabled_in_cluster": []},
            "configuration": {
                "database": "off",
                "declarative_config": settings.configPath,
                "proxy_listen": list(settings.proxyListen),
                "admin_listen": list(settings.adminListen),
                "wasm": settings.wasmEnabled,
                "wasm_filters_path": settings.filtersPath,
                "wasm_modules_parsed": [{"name": name, "path": f.path}
                                        for name, f in sorted(self.gateway.filters.items())],
                "wasm_vm": settings.vm,
            },
        }

    def _status(self) -> dict:
        state = self.gateway.state
        current = state.current
        return {
            "database": {"reachable": True},
            "server": {
                "total_requests": state.totalRequests,
                "connections_active": state.inFlight,
            },
            "memory": {"rss_bytes": _rssBytes()},
            "configuration_hash": hashlib.md5(current.config.text.encode("utf-8")).hexdigest(),
            "configuration_generation": current.number,
            "uptime_seconds": round(self._clock.seconds() - self._startedAt, 3),
            "wasm": self._wasmStatus(),
        }

    def _wasmStatus(self) -> dict:
        """
        @return: counts of live Wasm state: filter instances, their root
            and stream contexts, and the configuration generations alive
            (the current one and replaced ones with requests in flight).
        """
        live = getattr(self.gateway, "live", None)
        return {
            "instances": live.instances if live is not None else 0,
            "root_contexts": live.rootContexts if live is not None else 0,
            "stream_contexts": live.streamContexts if live is not None else 0,
            "configuration_generations": self.gateway.liveGenerations(),
        }

    def _services(self, rest: List[str]) -> Tuple[int, object]:
        config = self.gateway.state.current.config
        if not rest:
            return _listing([serviceToDict(s) for s in config.services])
        service = _find(config.services, rest[0])
        if service is None:
            return _notFound()
        if len(rest) == 1:
            return http.OK, serviceToDict(service)
        if rest[1:] == ["routes"]:
            return _listing([routeToDict(r) for r in config.routes if r.serviceId == service.id])
        if rest[1:] == ["filter-chains"]:
            return self._chains([], [c for c in config.filterChains if c.serviceId == service.id])
        return _notFound()

    def _routes(self, rest: List[str]) -> Tuple[int, object]:
        config = self.gateway.state.current.config
        if not rest:
            return _listing([routeToDict(r) for r in config.routes])
        route = _find(config.routes, rest[0])
        if route is None:
            return _notFound()
        if len(rest) == 1:
            return http.OK, routeToDict(route)
        if rest[1:] == ["service"]:
            service = config.serviceById(route.serviceId) if route.serviceId else None
            return (http.OK, serviceToDict(service)) if service is not None else _notFound()
        if rest[1:] == ["filter-chains"]:
            return self._chains([], [c for c in config.filterChains if c.routeId == route.id])
        if len(rest) == 3 and rest[1] == "filters" and rest[2] in ("all", "enabled", "disabled"):
            return http.OK, {"filters": self._routeFilters(route, rest[2])}
        return _notFound()

    def _routeFilters(self, route, which: str) -> List[dict]:
        """
        The filters a request on C{route} meets: the service chain's, then
        the route chain's, each with C{from}; a filter counts as enabled when
        it and its chain are.
        """
        config = self.gateway.state.current.config
        found = []
        chains = []
        if route.serviceId is not None:
            chains.append(("service", config.chainFor(serviceId=route.serviceId)))
        chains.append(("route", config.chainFor(routeId=route.id)))
        for origin, chain in chains:
            if chain is None:
                continue
            for entry in chain.filters:
                enabled = chain.enabled and entry.enabled
                if which == "enabled" and not enabled or which == "disabled" and enabled:
                    continue
                shown = filterEntryToDict(entry)
                shown["enabled"] = enabled
                shown["from"] = origin
                shown["filter_chain"] = {"id": chain.id, "name": chain.name}
                found.append(shown)
        return found

    def _chains(self, rest: List[str], chains) -> Tuple[int, object]:
        if not rest:
            return _listing([filterChainToDict(c) for c in chains])
        chain = _find(chains, rest[0])
        if chain is None or len(rest) > 1:
            return _notFound()
        return http.OK, filterChainToDict(chain)

    def _filters(self, rest: List[str]) -> Tuple[int, object]:
        filters = self.gateway.filters
        if not rest:
            return _listing([filterFileToDict(f) for _, f in sorted(filters.items())])
        found = filters.get(rest[0])
        if found is None or len(rest) > 1:
            return _notFound("Filter '%s' not found" % (rest[0],))
        return http.OK, filterFileToDict(found)

    def _schemas(self, rest: List[str]) -> Tuple[int, object]:
        if len(rest) != 2 or rest[0] != "filters":
            return _notFound()
        found = self.gateway.filters.get(rest[1])
        if found is None:
            return _notFound("Filter '%s' not found" % (rest[1],))
        return http.OK, configSchemaOf(found)

    def _getConfig(self, request: server.Request) -> bytes:
        config = self.gateway.state.current.config
        body = config.text.encode("utf-8")
        request.setHeader(b"content-type", b"application/yaml; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    # POST

    def _postConfig(self, request: server.Request) -> Tuple[int, object]:
        contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if contentType == b"multipart/form-data" and request.args.get(b"config"):
            raw, contentType = request.args[b"config"][0], b""
        else:
            raw = request.content.read() if request.content is not None else b""
        try:
            text = _configText(raw, contentType)
        except ValueError as error:
            return http.BAD_REQUEST, {"code": 14, "name": "invalid declarative configuration",
                                      "message": "declarative config is invalid", "errors": [str(error)]}
        try:
            generation = self.gateway.applyPostedConfig(text)
        except ConfigError as error:
            self._log.warn("POST /config refused: {count} errors", count=len(error.errors))
            return http.BAD_REQUEST, {"code": 14, "name": "invalid declarative configuration",
                                      "message": "declarative config is invalid", "errors": error.errors}
        config = generation.config
        return http.CREATED, {
            "services": [serviceToDict(s) for s in config.services],
            "routes": [routeToDict(r) for r in config.routes],
            "filter_chains": [filterChainToDict(c) for c in config.filterChains],
        }


def _configText(raw: bytes, contentType: bytes) -> str:
    """
    The configuration text of a C{POST /config} body: the body itself, or
    the C{config} field of a JSON object or a form (as Kong accepts).

    @raise ValueError: the body is not UTF-8.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError("request body: not UTF-8 text: %s" % (error,))
    if contentType == b"application/x-www-form-urlencoded":
        fields = parse_qs(text, keep_blank_values=True)
        if "config" in fields:
            return fields["config"][0]
    if contentType == b"application/json":
        try:
            document = json.loads(text)
        except ValueError:
            return text
        if isinstance(document, dict) and isinstance(document.get("config"), str):
            return document["config"]
    return text


def _rssBytes() -> Optional[int]:
    """
    @return: this process's resident set size, where C{/proc} tells it.
    """
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
