"""
Frozen model of a loaded C{kong.yml}: what the router, the chain runner and
the admin API read. Produced only by L{twistgate.config.loader}.
"""

from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple


@dataclass(frozen=True)
class FilterEntry:
    """
    One filter in a chain.

    @ivar name: the filter's name (its C{.wasm} file name without extension).
    @ivar config: the configuration passed to C{on_configure}: a JSON object
        from the file is serialized to JSON text, a string passed as is;
        L{None} when absent.
    @ivar rawConfig: the configuration as written in the file (for the admin
        API).
    @ivar enabled: disabled filters are skipped.
    @ivar rootId: the root context id name (C{root_id}, twistgate extension;
        AssemblyScript SDK filters choose their root context by it). Defaults
        to the filter name.
    @ivar failurePolicy: C{"fail_closed"} or C{"fail_open"} (twistgate
        extension C{failure_policy}).
    @ivar env: environment variables visible to the filter through WASI
        (twistgate extension C{env}); never the gateway's own.
    """

    name: str
    config: Optional[str] = None
    rawConfig: object = None
    enabled: bool = True
    rootId: str = ""
    failurePolicy: str = "fail_closed"
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterChain:
    """
    A C{filter_chains} entity, attached to exactly one service or route.
    """

    id: str
    name: Optional[str]
    enabled: bool
    filters: Tuple[FilterEntry, ...]
    serviceId: Optional[str] = None
    routeId: Optional[str] = None
    tags: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    """
    A C{services} entity. Timeouts are in milliseconds, as in Kong.
    """

    id: str
    name: Optional[str]
    protocol: str
    host: str
    port: int
    path: Optional[str]
    connectTimeout: int = 60000
    readTimeout: int = 60000
    writeTimeout: int = 60000
    retries: int = 5
    enabled: bool = True
    tags: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """
    A C{routes} entity. C{headers} maps a lower-cased header name to the
    accepted values.
    """

    id: str
    name: Optional[str]
    serviceId: Optional[str]
    paths: Tuple[str, ...] = ()
    hosts: Tuple[str, ...] = ()
    methods: Tuple[str, ...] = ()
    headers: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    stripPath: bool = True
    preserveHost: bool = False
    regexPriority: int = 0
    protocols: Tuple[str, ...] = ("http", "https")
    tags: Tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    """
    A whole declarative configuration.

    @ivar source: the file name it came from (for messages).
    @ivar text: the original text, served by C{GET /config}.
    """

    services: Tuple[Service, ...] = ()
    routes: Tuple[Route, ...] = ()
    filterChains: Tuple[FilterChain, ...] = ()
    source: str = "<config>"
    text: str = ""

    def serviceById(self, serviceId: str) -> Optional[Service]:
        for service in self.services:
            if service.id == serviceId:
                return service
        return None

    def routeById(self, routeId: str) -> Optional[Route]:
        for route in self.routes:
            if route.id == routeId:
                return route
        return None

    def chainFor(self, serviceId: Optional[str] = None, routeId: Optional[str] = None) -> Optional[FilterChain]:
        for chain in self.filterChains:
            if serviceId is not None and chain.serviceId == serviceId:
                return chain
            if routeId is not None and chain.routeId == routeId:
                return chain
        return None
