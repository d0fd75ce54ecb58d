"""
The request router: which route (and so which service) handles a request, and
the path to send upstream, as Kong 3's default C{traditional_compatible}
router decides them.

Precedence (Kong C{kong/router/transform.lua} C{get_priority}, after Kong
3.3's split of multi-path routes into one matcher per path), most significant
first:

 1. the number of fields the route sets among C{methods}, C{hosts},
    C{headers} and C{paths};
 2. routes whose hosts are all plain (no wildcard) before the others;
 3. the number of C{headers} the route sets;
 4. a regex path before a prefix path;
 5. for regex paths, the higher C{regex_priority};
 6. for prefix paths, the longer prefix.

Kong leaves the order of routes of equal priority undefined; twistgate takes
them in the order they are written in the file, and a route's paths in the
order it lists them.

Request paths are normalized before matching as Kong does (percent-decoding
of characters that are not reserved, removal of dot segments, merged
slashes), and the upstream path is derived from the normalized path with
C{path_handling} C{v0} and re-escaped for the wire.
"""

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, FrozenSet, List, Mapping, Optional, Pattern, Sequence, Tuple

from twistgate.config.filters import pcreToPython
from twistgate.config.model import GatewayConfig, Route, Service

_DEFAULT_PORTS = {"http": 80, "https": 443}

CACHE_SIZE = 4096
"""
How many recent routing decisions a L{Router} remembers (as Kong's router
cache does); it starts afresh when full, so unbounded distinct paths cost
memory only up to this bound.
"""

_RESERVED = frozenset("!*'();:@&=+$,/?%#[]")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNSAFE = re.compile(r"[^!#$&'()*+,/:;=?@\[\]A-Za-z0-9\-_.~%]")


@dataclass(frozen=True)
class RouteMatch:
    """
    The outcome of routing one request.

    @ivar route: the matched route.
    @ivar service: its service.
    @ivar upstreamPath: the path (without query) to request upstream, after
        C{strip_path} and joining with C{service.path}.
    @ivar uriCaptures: the groups of a matched regex path: C{"0"} the whole
        match, C{"1"}... the numbered groups, and each named group by name
        (Kong's C{uri_captures}); empty for a prefix path.
    """

    route: Route
    service: Service
    upstreamPath: str
    uriCaptures: Mapping[str, str] = field(default_factory=dict)


def _decodeUnreserved(match) -> str:
    character = chr(int(match.group(1), 16))
    if character in _RESERVED:
        return match.group(0).upper()
    return character


def _removeDotSegments(path: str) -> str:
    output: List[str] = []
    remaining = path
    while remaining:
        if remaining == "/." or remaining == "/..":
            if remaining == "/.." and output:
                output.pop()
            remaining = "/"
        elif remaining == "." or remaining == "..":
            remaining = ""
        elif remaining.startswith("../"):
            remaining = remaining[3:]
        elif remaining.startswith("./"):
            remaining = remaining[2:]
        elif remaining.startswith("/./"):
            remaining = remaining[2:]
        elif remaining.startswith("/../"):
            remaining = remaining[3:]
            if output:
                output.pop()
        elif remaining.startswith("//"):
            remaining = remaining[1:]
        else:
            end = remaining.find("/", 1)
            if end == -1:
                output.append(remaining)
                remaining = ""
            else:
                output.append(remaining[:end])
                remaining = remaining[end:]
    return "".join(output)


def normalizePath(path: str) -> str:
    """
    Normalize a request path as Kong does before routing: decode
    percent-encoded characters that are not reserved (reserved ones keep
    their encoding, in upper case), remove C{.} and C{..} segments and merge
    repeated slashes.

    @param path: the raw request path, without query, decoded as Latin-1.
    @return: the normalized path.
    """
    if "%" in path:
        path = _PERCENT.sub(_decodeUnreserved, path)
    if "." not in path and "//" not in path:
        return path
    return _removeDotSegments(path)


def _escapeCharacter(match) -> str:
    character = match.group(0)
    encoded = character.encode("utf-8" if ord(character) > 255 else "latin-1")
    return "".join("%%%02X" % (byte,) for byte in encoded)


def escapePath(path: str) -> str:
    """
    Percent-encode what must not appear raw in a request target (spaces,
    controls, non-ASCII...), leaving reserved characters, unreserved
    characters and existing escapes alone.

    @param path: a normalized path.
    @return: the path as sent upstream.
    """
    if _UNSAFE.search(path) is None:
        return path
    return _UNSAFE.sub(_escapeCharacter, path)


def _sanitizePostfix(postfix: str) -> str:
    if postfix in (".", ".."):
        return ""
    if postfix.startswith("./"):
        return postfix[2:]
    if postfix.startswith("../"):
        return postfix[3:]
    return postfix


def upstreamPathFor(stripPath: bool, servicePath: Optional[str], requestPath: str, matchedPath: Optional[str]) -> str:
    """
    Join a request path with a service path as Kong's C{path_handling} C{v0}
    does.

    @param stripPath: the route's C{strip_path}.
    @param servicePath: the service's C{path} (L{None} means C{/}).
    @param requestPath: the normalized request path.
    @param matchedPath: the part of the request path the route's path
        matched (the prefix, or a regex's whole match); L{None} for a route
        without paths.
    @return: the upstream path (not yet escaped).
    """
    if stripPath and matchedPath is not None:
        postfix = _sanitizePostfix(requestPath[len(matchedPath):])
    else:
        postfix = _sanitizePostfix(requestPath[1:])
    base = servicePath or "/"
    if base.endswith("/"):
        if not stripPath:
            return base + requestPath[1:]
        if postfix == "":
            if base == "/":
                return "/"
            if requestPath.endswith("/"):
                return base
            return base[:-1]
        if postfix.startswith("/"):
            return base[:-1] + postfix
        return base + postfix
    if not stripPath:
        if requestPath == "/":
            return base
        return base + requestPath
    if postfix == "":
        if len(requestPath) > 1 and requestPath.endswith("/"):
            return base + "/"
        return base
    if postfix.startswith("/"):
        return base + postfix
    return base + "/" + postfix


def splitHost(host: str, defaultPort: int) -> Tuple[str, int]:
    """
    Split a C{Host} header value into a lower-case name and a port.

    @param host: e.g. C{"Example.com:8000"}, C{"[::1]:8000"} or C{""}.
    @param defaultPort: the port when the value names none.
    @return: C{(name, port)}; a bracketed IPv6 name keeps its brackets.
    """
    host = host.strip().lower()
    colon = host.rfind(":")
    if colon != -1 and not host.endswith("]"):
        portText = host[colon + 1:]
        if portText.isdigit():
            return host[:colon], int(portText)
    return host, defaultPort


class _HostMatcher:
    """
    A route's C{hosts}: exact names, C{*.suffix} and C{prefix.*} wildcards,
    each optionally tied to a port.
    """

    __slots__ = ("exact", "exactWithPort", "wildcards")

    def __init__(self, hosts: Sequence[str]) -> None:
        exact = set()
        exactWithPort = set()
        wildcards = []
        for host in hosts:
            name, port = host, None
            colon = host.rfind(":")
            if colon != -1 and not host.endswith("]"):
                name, port = host[:colon], int(host[colon + 1:])
            if name.startswith("*"):
                wildcards.append((False, name[1:], port))
            elif name.endswith("*"):
                wildcards.append((True, name[:-1], port))
            elif port is None:
                exact.add(name)
            else:
                exactWithPort.add((name, port))
        self.exact: FrozenSet[str] = frozenset(exact)
        self.exactWithPort: FrozenSet[Tuple[str, int]] = frozenset(exactWithPort)
        self.wildcards: Tuple[Tuple[bool, str, Optional[int]], ...] = tuple(wildcards)

    def matches(self, name: str, port: int) -> bool:
        if name in self.exact or (name, port) in self.exactWithPort:
            return True
        for isPrefix, part, wantedPort in self.wildcards:
            if wantedPort is not None and wantedPort != port:
                continue
            if name.startswith(part) if isPrefix else name.endswith(part):
                return True
        return False


class _Matcher:
    """
    One route with (at most) one of its paths, compiled.
    """

    __slots__ = (
        "route", "service", "sortKey", "protocols", "methods", "hosts", "prefix", "regex", "headers",
    )

    def __init__(self, route: Route, service: Service, path: Optional[str], order: Tuple[int, int]) -> None:
        self.route = route
        self.service = service
        self.protocols: FrozenSet[str] = frozenset(route.protocols)
        self.methods: Optional[FrozenSet[str]] = frozenset(route.methods) if route.methods else None
        self.hosts: Optional[_HostMatcher] = _HostMatcher(route.hosts) if route.hosts else None
        self.prefix: Optional[str] = None
        self.regex: Optional[Pattern[str]] = None
        if path is not None and path.startswith("~"):
            self.regex = re.compile(pcreToPython(path[1:]))
        elif path is not None:
            self.prefix = normalizePath(path)
        self.headers: Tuple[Tuple[str, FrozenSet[str], Tuple[Pattern[str], ...]], ...] = tuple(
            (
                name,
                frozenset(value.lower() for value in values if not value.startswith("~*")),
                tuple(re.compile(pcreToPython(value[2:]), re.IGNORECASE) for value in values if value.startswith("~*")),
            )
            for name, values in route.headers.items()
        )
        weight = sum(1 for present in (route.methods, route.hosts, route.headers, path) if present)
        plainHostsOnly = bool(route.hosts) and not any("*" in host for host in route.hosts)
        isRegex = self.regex is not None
        self.sortKey = (
            -weight,
            -int(plainHostsOnly),
            -len(route.headers),
            -int(isRegex),
            -(route.regexPriority if isRegex else 0),
            -(len(self.prefix) if self.prefix is not None else 0),
        ) + order

    def matchesHeaders(self, headers: Mapping[str, Sequence[str]]) -> bool:
        for name, values, patterns in self.headers:
            given = headers.get(name)
            if not given:
                return False
            for value in given:
                if value.lower() in values or any(pattern.search(value) for pattern in patterns):
                    break
            else:
                return False
        return True


class Router:
    """
    Routes requests over one configuration. Build one per configuration: all
    patterns are compiled and all matchers sorted here, so that L{match}
    only compares, and recent decisions are remembered.
    """

    def __init__(self, config: GatewayConfig) -> None:
        """
        @param config: the configuration; routes of disabled services never
            match.
        """
        services: Dict[str, Service] = {service.id: service for service in config.services}
        matchers = []
        for routeIndex, route in enumerate(config.routes):
            service = services.get(route.serviceId) if route.serviceId is not None else None
            if service is None or not service.enabled:
                continue
            for pathIndex, path in enumerate(route.paths or (None,)):
                matchers.append(_Matcher(route, service, path, (routeIndex, pathIndex)))
        matchers.sort(key=lambda matcher: matcher.sortKey)
        self._matchers: Tuple[_Matcher, ...] = tuple(matchers)
        self._headerNames: Tuple[str, ...] = tuple(
            sorted({name for matcher in matchers for name, _, _ in matcher.headers})
        )
        self._cache: Dict[tuple, Optional[RouteMatch]] = {}

    def match(
        self,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, Sequence[str]],
        scheme: str = "http",
        port: Optional[int] = None,
    ) -> Optional[RouteMatch]:
        """
        Find the route for a request.

        @param method: the request method, e.g. C{"GET"}.
        @param host: the C{Host} header value (a port in it is split off).
        @param path: the request path without query string.
        @param headers: request header values by lower-case name.
        @param scheme: C{"http"} or C{"https"}: only routes whose
            C{protocols} include it match.
        @param port: the port the request arrived on, compared with a route
            host's port when C{host} names none (defaults to the scheme's).
        @return: the match, or L{None} when no route matches (Kong's 404).
        """
        key: tuple = (method, host, path, scheme, port)
        if self._headerNames:
            key += tuple(tuple(headers.get(name) or ()) for name in self._headerNames)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._find(method, host, path, headers, scheme, port)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _find(
        self,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, Sequence[str]],
        scheme: str,
        port: Optional[int],
    ) -> Optional[RouteMatch]:
        hostName, hostPort = splitHost(host, port if port is not None else _DEFAULT_PORTS.get(scheme, 80))
        path = normalizePath(path)
        for matcher in self._matchers:
            if scheme not in matcher.protocols:
                continue
            if matcher.methods is not None and method not in matcher.methods:
                continue
            found = None
            if matcher.prefix is not None:
                if not path.startswith(matcher.prefix):
                    continue
            elif matcher.regex is not None:
                found = matcher.regex.match(path)
                if found is None:
                    continue
            if matcher.hosts is not None and not matcher.hosts.matches(hostName, hostPort):
                continue
            if matcher.headers and not matcher.matchesHeaders(headers):
                continue
            return self._result(matcher, path, found)
        return None

    def _result(self, matcher: _Matcher, path: str, found) -> RouteMatch:
        captures: Dict[str, str] = {}
        if found is not None:
            matchedPath: Optional[str] = found.group(0)
            captures["0"] = found.group(0)
            for index, group in enumerate(found.groups(), 1):
                if group is not None:
                    captures[str(index)] = group
            captures.update((name, value) for name, value in found.groupdict().items() if value is not None)
        else:
            matchedPath = matcher.prefix
        upstream = upstreamPathFor(matcher.route.stripPath, matcher.service.path, path, matchedPath)
        return RouteMatch(matcher.route, matcher.service, escapePath(upstream), MappingProxyType(captures))
