"""
Load a declarative C{kong.yml} into a frozen L{GatewayConfig}.

The loader checks the whole file before it builds anything and reports every
problem it finds, one line each: C{<source>: <location>: <message>}, where the
location is the path of the offending field in the file, e.g.
C{services[0].routes[1].paths[0]}. Field names, defaults and rules are those of
Kong 3 (DB-less C{_format_version: "3.0"}), restricted to what twistgate
serves: services, routes and filter chains over HTTP and HTTPS.

Entities without an C{id} get a stable one: the UUIDv5 of
L{ENTITY_NAMESPACE} and C{"<kind>:<name>"}, or C{"<kind>@<location>"} for an
unnamed entity, so ids survive restarts and reloads of an unchanged file.
"""

import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.reader import ReaderError

from twistgate.config.errors import ConfigError
from twistgate.config.filters import FilterFile, pcreToPython, validateFilterConfig
from twistgate.config.model import FilterChain, FilterEntry, GatewayConfig, Route, Service

ENTITY_NAMESPACE = uuid.UUID("5f6e0a0e-8d52-5b0c-9c57-7477697374a7")
"""
The UUIDv5 namespace of generated entity ids. Never change it: ids derived
from it are what admin API users and logs refer to across restarts.
"""

SUPPORTED_FORMAT_VERSIONS = ("1.1", "2.1", "3.0")
LEGACY_FORMAT_VERSIONS = ("1.1", "2.1")
"""
Kong 2 formats, whose regex paths had no C{~}: as Kong 3 does when it reads
them, a path with any character outside C{[A-Za-z0-9._~/%-]} is taken as a
regex and given its C{~}.
"""

PROTOCOLS = ("http", "https")
MAX_TIMEOUT = 2**31 - 2
MAX_RETRIES = 32767
FAILURE_POLICIES = ("fail_closed", "fail_open")
MAX_NESTING = 100
"""
How deep collections may nest, aliases expanded: deeper documents are
refused before anything recurses over them.
"""
MAX_VALUES = 1_000_000
"""
How many values (collections and scalars) a document may hold once its
aliases are expanded: a few aliases can otherwise describe a structure too
large to write as JSON or validate ("billion laughs").
"""
MAX_INTEGER_DIGITS = 64

_TOP_LEVEL_FIELDS = ("_format_version", "_transform", "_comment", "services", "routes", "filter_chains")
_SERVICE_FIELDS = (
    "id", "name", "url", "protocol", "host", "port", "path", "connect_timeout", "read_timeout",
    "write_timeout", "retries", "enabled", "tags", "routes", "filter_chains",
)
_ROUTE_FIELDS = (
    "id", "name", "paths", "hosts", "methods", "headers", "strip_path", "preserve_host",
    "regex_priority", "protocols", "tags", "filter_chains",
)
_CHAIN_FIELDS = ("id", "name", "enabled", "tags", "filters")
_FILTER_FIELDS = ("name", "config", "enabled", "root_id", "failure_policy", "env")
_REFERENCE_FIELDS = ("id", "name")

_NAME = re.compile(r"^(?:[A-Za-z0-9._~-]|[^\x00-\x7f])+$")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(r"^%s(?:\.%s)*\.?$" % (_LABEL, _LABEL))
_METHOD = re.compile(r"^[A-Z]+$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_PATH_CHARACTER = re.compile(r"[\x00-\x20\x7f]|%(?![0-9A-Fa-f]{2})")
_ENV_NAME = re.compile(r"^[^=\x00]+$")
_PLAIN_LEGACY_PATH = re.compile(r"^[A-Za-z0-9._~/%-]*$")


class _YamlLoader(yaml.SafeLoader):
    """
    PyYAML's safe loader, minus implicit timestamps (a date stays the string
    it was written as, so it can reach a filter as JSON), and noting
    duplicate mapping keys instead of silently keeping the last one.
    """

    duplicates: List[str]
    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise ComposerError(None, None, "nested deeper than %d levels" % (MAX_NESTING,),
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_yaml_int(self, node):
        text = node.value.replace("_", "").lstrip("+-").lower()
        if text[:2] in ("0b", "0o", "0x"):
            text = text[2:]
        digits = sum(character.isalnum() for character in text)
        if digits > MAX_INTEGER_DIGITS:
            raise ConstructorError(None, None, "integer of %d digits is too large (at most %d)"
                                   % (digits, MAX_INTEGER_DIGITS), node.start_mark)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for keyNode, _ in node.value:
                if keyNode.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(keyNode, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue
                if duplicate:
                    mark = keyNode.start_mark
                    self.duplicates.append(
                        "line %d, column %d: duplicate key %s" % (mark.line + 1, mark.column + 1, _describe(key))
                    )
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_constructor("tag:yaml.org,2002:int", _YamlLoader.construct_yaml_int)

_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _describe(value: object) -> str:
    """
    @return: C{value} as a message shows it: JSON for scalars, a word for
        collections.
    """
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    try:
        described = json.dumps(value, ensure_ascii=False)
        return described if described.isprintable() else json.dumps(value)
    except (TypeError, ValueError):
        return ascii(value)


def _printable(line: str) -> str:
    """
    @return: C{line} with every character that would break it (line
        breaks, controls, lone surrogates) escaped, so that it is one line
        of UTF-8-encodable text.
    """
    if line.isprintable():
        return line
    return "".join(character if character.isprintable() else ascii(character)[1:-1] for character in line)


def _field(location: str, key: object) -> str:
    if isinstance(key, str) and not key.isprintable():
        return '%s[%s]' % (location, json.dumps(key))
    return "%s.%s" % (location, key) if location else str(key)


def _item(location: str, index: int) -> str:
    return "%s[%d]" % (location, index)


def stableId(kind: str, name: Optional[str], location: str) -> str:
    """
    The id of an entity the file gives no C{id}.

    @param kind: C{"service"}, C{"route"} or C{"filter_chain"}.
    @param name: the entity's name, if it has one.
    @param location: where it sits in the file (used when unnamed).
    @return: a UUIDv5 in canonical text form.
    """
    key = "%s:%s" % (kind, name) if name is not None else "%s@%s" % (kind, location)
    return str(uuid.uuid5(ENTITY_NAMESPACE, key))


_MISSING = object()


@dataclass
class _Draft:
    """
    An entity read from the file, before references are resolved.
    """

    kind: str
    location: str
    id: str = ""
    name: Optional[str] = None
    values: Dict[str, object] = field(default_factory=dict)
    explicitId: bool = False
    reference: object = None
    referenceLocation: str = ""
    parent: Optional["_Draft"] = None


class _ConfigReader:
    """
    One pass over a parsed document, collecting drafts and errors.
    """

    def __init__(self, filters: Mapping[str, FilterFile]) -> None:
        self.filters = filters
        self.errors: List[str] = []
        self.services: List[_Draft] = []
        self.routes: List[_Draft] = []
        self.chains: List[_Draft] = []
        self.legacyPaths = False

    def error(self, location: str, message: str) -> None:
        self.errors.append("%s: %s" % (location, message))

    def typeError(self, location: str, expected: str, value: object) -> None:
        self.error(location, "expected %s, got %s" % (expected, _describe(value)))

    def checkFields(self, raw: dict, allowed: Tuple[str, ...], location: str, hint: str = "") -> None:
        for key in raw:
            if key not in allowed:
                self.error(_field(location, key), "unknown field" + hint)

    def mapping(self, value: object, location: str) -> Optional[dict]:
        if isinstance(value, dict):
            return value
        self.typeError(location, "a mapping", value)
        return None

    def listField(self, raw: dict, key: str, location: str) -> list:
        value = raw.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.typeError(_field(location, key), "a list", value)
        return []

    def string(self, raw: dict, key: str, location: str, default: Optional[str] = None, required: bool = False):
        value = raw.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.error(_field(location, key), "required field missing")
            return default
        if isinstance(value, bool):
            self.error(
                _field(location, key),
                "expected a string, got %s (YAML reads yes/no/on/off unquoted as booleans: quote it)"
                % (_describe(value),),
            )
            return default
        if not isinstance(value, str):
            self.typeError(_field(location, key), "a string", value)
            return default
        if value == "":
            self.error(_field(location, key), "must not be empty")
            return default
        return value

    def boolean(self, raw: dict, key: str, location: str, default: bool) -> bool:
        value = raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.typeError(_field(location, key), "a boolean", value)
            return default
        return value

    def integer(self, raw: dict, key: str, location: str, default: Optional[int], low=None, high=None):
        value = raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.typeError(_field(location, key), "an integer", value)
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            self.error(_field(location, key), "%d is out of range (%d..%d)" % (value, low, high))
            return default
        return value

    def strings(self, raw: dict, key: str, location: str) -> List[Tuple[str, str]]:
        """
        @return: C{(location, value)} of each string of a list field.
        """
        found = []
        where = _field(location, key)
        for index, value in enumerate(self.listField(raw, key, location)):
            if isinstance(value, str) and value:
                found.append((_item(where, index), value))
            elif isinstance(value, str):
                self.error(_item(where, index), "must not be empty")
            else:
                self.typeError(_item(where, index), "a string", value)
        return found

    def tags(self, raw: dict, location: str) -> Tuple[str, ...]:
        tags = []
        where = _field(location, "tags")
        for index, tag in enumerate(self.listField(raw, "tags", location)):
            if not isinstance(tag, str) or not tag:
                self.typeError(_item(where, index), "a non-empty string", tag)
            elif "," in tag or "/" in tag:
                self.error(_item(where, index), "invalid tag %s: must not contain \",\" or \"/\"" % (_describe(tag),))
            else:
                tags.append(tag)
        return tuple(tags)

    def identity(self, draft: _Draft, raw: dict) -> None:
        """
        Read C{name} and C{id} and give the draft its id.
        """
        name = self.string(raw, "name", draft.location)
        if name is not None and not _NAME.match(name):
            self.error(
                _field(draft.location, "name"),
                "invalid value %s: the only accepted ascii characters are alphanumerics or ., -, _, and ~"
                % (_describe(name),),
            )
        draft.name = name
        given = self.string(raw, "id", draft.location)
        if given is not None:
            try:
                draft.id = str(uuid.UUID(given))
                draft.explicitId = True
            except ValueError:
                self.error(_field(draft.location, "id"), "%s is not a valid UUID" % (_describe(given),))
        if not draft.id:
            draft.id = stableId(draft.kind, name, draft.location)

    def document(self, doc: object) -> None:
        if not isinstance(doc, dict):
            what = "an empty document" if doc is None else _describe(doc)
            self.error(
                "(root)", "expected a mapping with _format_version, services, routes and filter_chains, got " + what
            )
            return
        self.checkFields(doc, _TOP_LEVEL_FIELDS, "", " (twistgate reads services, routes and filter_chains)")
        self.formatVersion(doc)
        for index, raw in enumerate(self.listField(doc, "services", "")):
            self.service(raw, _item("services", index))
        for index, raw in enumerate(self.listField(doc, "routes", "")):
            self.route(raw, _item("routes", index), None)
        for index, raw in enumerate(self.listField(doc, "filter_chains", "")):
            self.chain(raw, _item("filter_chains", index), None)

    def formatVersion(self, doc: dict) -> None:
        version = doc.get("_format_version", _MISSING)
        supported = ", ".join('"%s"' % (each,) for each in SUPPORTED_FORMAT_VERSIONS)
        if version is _MISSING:
            self.error("_format_version", "required field missing (use \"3.0\")")
        elif isinstance(version, (int, float)) and not isinstance(version, bool):
            self.error("_format_version", "expected a string, got %s (write it in quotes: \"3.0\")" % (version,))
        elif not isinstance(version, str):
            self.typeError("_format_version", "a string", version)
        elif version not in SUPPORTED_FORMAT_VERSIONS:
            self.error("_format_version", "unsupported version %s (supported: %s)" % (_describe(version), supported))
        else:
            self.legacyPaths = version in LEGACY_FORMAT_VERSIONS

    def service(self, raw: object, location: str) -> None:
        raw = self.mapping(raw, location)
        if raw is None:
            return
        self.checkFields(raw, _SERVICE_FIELDS, location)
        draft = _Draft("service", location)
        self.identity(draft, raw)
        values = draft.values
        values["protocol"], values["host"], values["port"], values["path"] = self.upstream(raw, location)
        for key in ("connect_timeout", "read_timeout", "write_timeout"):
            values[key] = self.integer(raw, key, location, 60000, 1, MAX_TIMEOUT)
        values["retries"] = self.integer(raw, "retries", location, 5, 0, MAX_RETRIES)
        values["enabled"] = self.boolean(raw, "enabled", location, True)
        values["tags"] = self.tags(raw, location)
        self.services.append(draft)
        for index, nested in enumerate(self.listField(raw, "routes", location)):
            self.route(nested, _item(_field(location, "routes"), index), draft)
        for index, nested in enumerate(self.listField(raw, "filter_chains", location)):
            self.chain(nested, _item(_field(location, "filter_chains"), index), draft)

    def upstream(self, raw: dict, location: str):
        """
        Read C{url}, or C{protocol}, C{host}, C{port} and C{path}.

        @return: C{(protocol, host, port, path)}.
        """
        url = self.string(raw, "url", location)
        if url is not None:
            for key in ("protocol", "host", "port", "path"):
                if raw.get(key) is not None:
                    self.error(_field(location, key), "cannot be set together with \"url\"")
            return self.parseUrl(url, _field(location, "url"))
        protocol = self.string(raw, "protocol", location, "http")
        if protocol not in PROTOCOLS:
            self.error(
                _field(location, "protocol"),
                "%s is not supported (expected \"http\" or \"https\")" % (_describe(protocol),),
            )
            protocol = "http"
        host = self.string(raw, "host", location, required=True)
        if host is not None and not self.validUpstreamHost(host, _field(location, "host")):
            host = None
        port = self.integer(raw, "port", location, 80, 1, 65535)
        path = self.string(raw, "path", location)
        if path is not None and not self.validServicePath(path, _field(location, "path")):
            path = None
        return protocol, host or "", port, path

    def parseUrl(self, url: str, location: str):
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            self.error(location, "invalid URL %s: %s" % (_describe(url), error))
            return "http", "", 80, None
        if parts.scheme not in PROTOCOLS:
            self.error(location, "invalid URL %s: the scheme must be \"http\" or \"https\"" % (_describe(url),))
            return "http", "", 80, None
        if not parts.hostname:
            self.error(location, "invalid URL %s: no host" % (_describe(url),))
            return parts.scheme, "", 80, None
        if parts.username is not None or parts.query or parts.fragment:
            self.error(location, "invalid URL %s: user info, query and fragment are not allowed" % (_describe(url),))
        if port == 0:
            self.error(location, "invalid URL %s: port 0 is out of range (1..65535)" % (_describe(url),))
        host = parts.hostname
        if not self.validUpstreamHost(host, location):
            host = ""
        path = parts.path or None
        if path is not None and not self.validServicePath(path, location):
            path = None
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path

    def validUpstreamHost(self, host: str, location: str) -> bool:
        candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(candidate)
            return True
        except ValueError:
            pass
        if _HOSTNAME.match(host) and ".." not in host:
            return True
        self.error(location, "invalid host %s" % (_describe(host),))
        return False

    def validServicePath(self, path: str, location: str) -> bool:
        if not path.startswith("/"):
            self.error(location, "path %s must start with \"/\"" % (_describe(path),))
            return False
        if _BAD_PATH_CHARACTER.search(path):
            self.error(
                location, "path %s has a space, a control character or a bad percent-encoding" % (_describe(path),)
            )
            return False
        return True

    def route(self, raw: object, location: str, service: Optional[_Draft]) -> None:
        raw = self.mapping(raw, location)
        if raw is None:
            return
        self.checkFields(raw, _ROUTE_FIELDS + ("service",), location)
        if service is not None and "service" in raw:
            self.error(_field(location, "service"), "unknown field (a route nested in a service belongs to it)")
        draft = _Draft("route", location, parent=service)
        self.identity(draft, raw)
        if service is None:
            draft.reference = self.reference(raw, "service", location, required=True)
            draft.referenceLocation = _field(location, "service")
        values = draft.values
        values["paths"] = self.paths(raw, location)
        values["hosts"] = self.hosts(raw, location)
        values["methods"] = self.methods(raw, location)
        values["headers"] = self.headers(raw, location)
        values["strip_path"] = self.boolean(raw, "strip_path", location, True)
        values["preserve_host"] = self.boolean(raw, "preserve_host", location, False)
        values["regex_priority"] = self.integer(raw, "regex_priority", location, 0)
        values["protocols"] = self.protocols(raw, location)
        values["tags"] = self.tags(raw, location)
        matchFields = ("methods", "hosts", "headers", "paths")
        if not any(raw.get(key) for key in matchFields):
            self.error(location, "must set one of \"methods\", \"hosts\", \"headers\", \"paths\"")
        self.routes.append(draft)
        for index, nested in enumerate(self.listField(raw, "filter_chains", location)):
            self.chain(nested, _item(_field(location, "filter_chains"), index), draft)

    def paths(self, raw: dict, location: str) -> Tuple[str, ...]:
        paths = []
        for where, path in self.strings(raw, "paths", location):
            if self.legacyPaths and not path.startswith("~") and not _PLAIN_LEGACY_PATH.match(path):
                path = "~" + path
            if path.startswith("~"):
                try:
                    re.compile(pcreToPython(path[1:]))
                except re.error as error:
                    self.error(where, "invalid regex %s: %s" % (_describe(path), error))
                    continue
            elif not path.startswith("/"):
                self.error(where, "%s must start with \"/\" or \"~\"" % (_describe(path),))
                continue
            elif _BAD_PATH_CHARACTER.search(path):
                self.error(where, "%s has a space, a control character or a bad percent-encoding" % (_describe(path),))
                continue
            paths.append(path)
        return tuple(paths)

    def hosts(self, raw: dict, location: str) -> Tuple[str, ...]:
        hosts = []
        for where, host in self.strings(raw, "hosts", location):
            name, port = host, None
            if ":" in host and not host.endswith("]"):
                name, _, portText = host.rpartition(":")
                if not portText.isdigit() or not 1 <= int(portText) <= 65535:
                    self.error(where, "invalid port in %s (1..65535)" % (_describe(host),))
                    continue
                port = int(portText)
            stars = name.count("*")
            if stars > 1:
                self.error(where, "invalid wildcard %s: must have at most one wildcard" % (_describe(host),))
                continue
            if stars == 1 and not (name.startswith("*.") or name.endswith(".*")):
                self.error(
                    where, "invalid wildcard %s: must be placed at leftmost or rightmost label" % (_describe(host),)
                )
                continue
            plain = name.replace("*", "a")
            bracketed = plain[1:-1] if plain.startswith("[") and plain.endswith("]") else None
            try:
                ipaddress.ip_address(bracketed if bracketed is not None else plain)
                valid = True
            except ValueError:
                valid = bracketed is None and bool(_HOSTNAME.match(plain)) and ".." not in plain
            if not valid:
                self.error(where, "invalid host %s" % (_describe(host),))
                continue
            hosts.append(name.lower() if port is None else "%s:%d" % (name.lower(), port))
        return tuple(hosts)

    def methods(self, raw: dict, location: str) -> Tuple[str, ...]:
        methods = []
        for where, method in self.strings(raw, "methods", location):
            if not _METHOD.match(method):
                self.error(
                    where, "invalid method %s: methods are upper-case letters, e.g. \"GET\"" % (_describe(method),)
                )
                continue
            methods.append(method)
        return tuple(methods)

    def headers(self, raw: dict, location: str) -> Dict[str, Tuple[str, ...]]:
        value = raw.get("headers")
        if value is None:
            return {}
        where = _field(location, "headers")
        if not isinstance(value, dict):
            self.typeError(where, "a mapping of header names to lists of values", value)
            return {}
        headers: Dict[str, Tuple[str, ...]] = {}
        for name, values in value.items():
            nameWhere = _field(where, name)
            if not isinstance(name, str) or not _TOKEN.match(name):
                self.error(nameWhere, "invalid header name %s" % (_describe(name),))
                continue
            if name.lower() == "host":
                self.error(nameWhere, "cannot contain \"host\" header, which must be specified in \"hosts\"")
                continue
            if name.lower() in headers:
                self.error(nameWhere, "header %s is given twice" % (_describe(name),))
                continue
            if isinstance(values, str) or not isinstance(values, list) or not values:
                self.typeError(nameWhere, "a non-empty list of strings", values)
                continue
            accepted = []
            for index, headerValue in enumerate(values):
                valueWhere = _item(nameWhere, index)
                if not isinstance(headerValue, str):
                    self.typeError(valueWhere, "a string", headerValue)
                    continue
                if headerValue.startswith("~*"):
                    try:
                        re.compile(pcreToPython(headerValue[2:]))
                    except re.error as error:
                        self.error(valueWhere, "invalid regex %s: %s" % (_describe(headerValue), error))
                        continue
                accepted.append(headerValue)
            if len(accepted) == len(values):
                headers[name.lower()] = tuple(accepted)
        return headers

    def protocols(self, raw: dict, location: str) -> Tuple[str, ...]:
        if raw.get("protocols") is None:
            return PROTOCOLS
        found = self.strings(raw, "protocols", location)
        if isinstance(raw["protocols"], list) and not raw["protocols"]:
            self.error(_field(location, "protocols"), "must have at least one of \"http\", \"https\"")
        protocols = []
        for where, protocol in found:
            if protocol not in PROTOCOLS:
                self.error(where, "%s is not supported (expected \"http\" or \"https\")" % (_describe(protocol),))
            elif protocol not in protocols:
                protocols.append(protocol)
        return tuple(protocols) or PROTOCOLS

    def reference(self, raw: dict, key: str, location: str, required: bool):
        """
        Read a foreign key: a name or id string, or C{{name: ...}} /
        C{{id: ...}}.

        @return: the referenced name or id, or L{None}.
        """
        value = raw.get(key)
        where = _field(location, key)
        if value is None:
            if required:
                self.error(where, "required field missing")
            return None
        if isinstance(value, dict):
            self.checkFields(value, _REFERENCE_FIELDS, where)
            given = [value[each] for each in _REFERENCE_FIELDS if value.get(each) is not None]
            if len(given) != 1 or not isinstance(given[0], str):
                self.error(where, "expected a name, an id, {name: ...} or {id: ...}")
                return None
            return given[0]
        if not isinstance(value, str) or not value:
            self.typeError(where, "a name or an id", value)
            return None
        return value

    def chain(self, raw: object, location: str, parent: Optional[_Draft]) -> None:
        raw = self.mapping(raw, location)
        if raw is None:
            return
        self.checkFields(raw, _CHAIN_FIELDS + ("service", "route"), location)
        if parent is not None:
            for key in ("service", "route"):
                if key in raw:
                    self.error(
                        _field(location, key),
                        "unknown field (a nested filter chain belongs to its %s)" % (parent.kind,),
                    )
        draft = _Draft("filter_chain", location, parent=parent)
        self.identity(draft, raw)
        if parent is None:
            given = [key for key in ("service", "route") if raw.get(key) is not None]
            if len(given) != 1:
                self.error(location, "must set exactly one of \"service\", \"route\"")
            else:
                kind = given[0]
                target = self.reference(raw, kind, location, required=True)
                if target is not None:
                    draft.reference = (kind, target)
                    draft.referenceLocation = _field(location, kind)
        draft.values["enabled"] = self.boolean(raw, "enabled", location, True)
        draft.values["tags"] = self.tags(raw, location)
        filtersWhere = _field(location, "filters")
        if raw.get("filters") is None:
            self.error(filtersWhere, "required field missing (at least one filter)")
        entries = self.listField(raw, "filters", location)
        if isinstance(raw.get("filters"), list) and not entries:
            self.error(filtersWhere, "must have at least one filter")
        draft.values["filters"] = tuple(
            entry
            for entry in (self.filterEntry(each, _item(filtersWhere, index)) for index, each in enumerate(entries))
            if entry is not None
        )
        self.chains.append(draft)

    def filterEntry(self, raw: object, location: str) -> Optional[FilterEntry]:
        raw = self.mapping(raw, location)
        if raw is None:
            return None
        self.checkFields(raw, _FILTER_FIELDS, location)
        name = self.string(raw, "name", location, required=True)
        installed = None
        if name is not None:
            installed = self.filters.get(name)
            if installed is None:
                self.error(_field(location, "name"), "no such filter: %s" % (_describe(name),))
        rawConfig = raw.get("config")
        config = self.filterConfig(rawConfig, _field(location, "config"))
        if installed is not None and config is not _MISSING:
            for line in validateFilterConfig(installed, rawConfig, _field(location, "config")):
                self.errors.append(line)
        enabled = self.boolean(raw, "enabled", location, True)
        rootId = self.string(raw, "root_id", location, name or "")
        policy = self.string(raw, "failure_policy", location, "fail_closed")
        if policy not in FAILURE_POLICIES:
            self.error(
                _field(location, "failure_policy"),
                "%s is not one of \"fail_closed\", \"fail_open\"" % (_describe(policy),),
            )
            policy = "fail_closed"
        env = self.environment(raw, location)
        if name is None:
            return None
        return FilterEntry(
            name=name,
            config=None if config is _MISSING else config,
            rawConfig=rawConfig,
            enabled=enabled,
            rootId=rootId,
            failurePolicy=policy,
            env=env,
        )

    def filterConfig(self, rawConfig: object, location: str):
        """
        @return: the text C{on_configure} receives: a string as written,
            anything else as compact JSON; L{None} when absent; L{_MISSING}
            when it cannot be JSON.
        """
        if rawConfig is None or isinstance(rawConfig, str):
            return rawConfig
        try:
            return json.dumps(rawConfig, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            self.error(location, "cannot be written as JSON: %s" % (error,))
            return _MISSING

    def environment(self, raw: dict, location: str) -> Dict[str, str]:
        value = raw.get("env")
        if value is None:
            return {}
        where = _field(location, "env")
        if not isinstance(value, dict):
            self.typeError(where, "a mapping of names to strings", value)
            return {}
        env = {}
        for name, text in value.items():
            nameWhere = _field(where, name)
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                self.error(nameWhere, "invalid environment variable name %s" % (_describe(name),))
            elif not isinstance(text, str):
                self.typeError(nameWhere, "a string (quote it)", text)
            elif "\x00" in text:
                self.error(nameWhere, "%s contains a NUL character" % (_describe(text),))
            else:
                env[name] = text
        return env


def _checkValues(document: object) -> List[str]:
    """
    Check what every later step assumes of a parsed document, aliases
    expanded: no collection contains itself, nesting and size are bounded,
    and every string (key or value) can be encoded as UTF-8 (YAML's
    C{"\\uD83D"} escape gives a lone surrogate, which cannot).

    @return: one C{"<location>: <message>"} per problem.
    """
    errors: List[str] = []
    measured: Dict[int, Tuple[int, int]] = {}
    onPath = set()
    collections = (dict, list, tuple, set)

    def children(container, location):
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            where = _field(location, key) if isinstance(container, dict) else _item(location, key)
            if isinstance(key, str) and not _encodable(key):
                errors.append("%s: %s is not valid Unicode text (a lone UTF-16 surrogate)" % (where, json.dumps(key)))
            yield where, value

    if not isinstance(document, collections):
        return errors
    stack = [(document, children(document, ""), [1, 0])]
    onPath.add(id(document))
    while stack:
        container, pending, measure = stack[-1]
        for where, value in pending:
            if isinstance(value, collections):
                if id(value) in onPath:
                    errors.append("%s: refers to itself (a recursive alias)" % (where,))
                elif id(value) in measured:
                    size, depth = measured[id(value)]
                    measure[0] += size
                    measure[1] = max(measure[1], depth)
                else:
                    onPath.add(id(value))
                    stack.append((value, children(value, where), [1, 0]))
                    break
            else:
                measure[0] += 1
                if isinstance(value, str) and not _encodable(value):
                    errors.append("%s: %s is not valid Unicode text (a lone UTF-16 surrogate)"
                                  % (where, json.dumps(value)))
        else:
            stack.pop()
            onPath.discard(id(container))
            size, depth = measure[0], measure[1] + 1
            measured[id(container)] = (size, depth)
            if stack:
                parent = stack[-1][2]
                parent[0] += size
                parent[1] = max(parent[1], depth)
    if errors:
        return errors
    size, depth = measured[id(document)]
    if size > MAX_VALUES:
        errors.append("(root): the document expands to more than %d values (through aliases?)" % (MAX_VALUES,))
    elif depth > MAX_NESTING:
        errors.append("(root): the document nests deeper than %d levels (through aliases?)" % (MAX_NESTING,))
    return errors


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _findDuplicates(reader: _ConfigReader, drafts: List[_Draft], what: str) -> None:
    byName: Dict[str, _Draft] = {}
    byId: Dict[str, _Draft] = {}
    for draft in drafts:
        if draft.name is not None:
            first = byName.setdefault(draft.name, draft)
            if first is not draft:
                reader.error(
                    _field(draft.location, "name"),
                    "duplicate %s name %s (also %s)" % (what, _describe(draft.name), first.location),
                )
        first = byId.setdefault(draft.id, draft)
        if first is not draft and (draft.explicitId or first.explicitId):
            reader.error(
                _field(draft.location, "id"),
                "duplicate %s id %s (also %s)" % (what, _describe(draft.id), first.location),
            )


def _index(drafts: List[_Draft]) -> Dict[str, _Draft]:
    """
    @return: drafts by id and by name (a name never shadows an id).
    """
    index = {}
    for draft in drafts:
        if draft.name is not None:
            index.setdefault(draft.name, draft)
    for draft in drafts:
        index[draft.id] = draft
    return index


def _build(reader: _ConfigReader, source: str, text: str) -> GatewayConfig:
    _findDuplicates(reader, reader.services, "service")
    _findDuplicates(reader, reader.routes, "route")
    _findDuplicates(reader, reader.chains, "filter chain")
    services = _index(reader.services)
    routes = _index(reader.routes)

    routeService: Dict[int, _Draft] = {}
    for route in reader.routes:
        if route.parent is not None:
            routeService[id(route)] = route.parent
        elif route.reference is not None:
            service = services.get(route.reference)
            if service is None:
                reader.error(route.referenceLocation, "no such service: %s" % (_describe(route.reference),))
            else:
                routeService[id(route)] = service

    owners: Dict[Tuple[str, str], _Draft] = {}
    chainOwner: Dict[int, Tuple[str, _Draft]] = {}
    for chain in reader.chains:
        if chain.parent is not None:
            kind, owner = chain.parent.kind, chain.parent
        elif chain.reference is not None:
            kind, key = chain.reference
            owner = (services if kind == "service" else routes).get(key)
            if owner is None:
                reader.error(chain.referenceLocation, "no such %s: %s" % (kind, _describe(key)))
                continue
        else:
            continue
        first = owners.setdefault((kind, owner.id), chain)
        if first is not chain:
            reader.error(
                chain.location,
                "%s %s already has a filter chain (%s); only one chain per %s"
                % (kind, _describe(owner.name or owner.id), first.location, kind),
            )
            continue
        chainOwner[id(chain)] = (kind, owner)

    if reader.errors:
        raise ConfigError(_printable("%s: %s" % (source, line)) for line in reader.errors)

    built = GatewayConfig(
        services=tuple(
            Service(
                id=draft.id,
                name=draft.name,
                protocol=draft.values["protocol"],
                host=draft.values["host"],
                port=draft.values["port"],
                path=draft.values["path"],
                connectTimeout=draft.values["connect_timeout"],
                readTimeout=draft.values["read_timeout"],
                writeTimeout=draft.values["write_timeout"],
                retries=draft.values["retries"],
                enabled=draft.values["enabled"],
                tags=draft.values["tags"],
            )
            for draft in reader.services
        ),
        routes=tuple(
            Route(
                id=draft.id,
                name=draft.name,
                serviceId=routeService[id(draft)].id,
                paths=draft.values["paths"],
                hosts=draft.values["hosts"],
                methods=draft.values["methods"],
                headers=draft.values["headers"],
                stripPath=draft.values["strip_path"],
                preserveHost=draft.values["preserve_host"],
                regexPriority=draft.values["regex_priority"],
                protocols=draft.values["protocols"],
                tags=draft.values["tags"],
            )
            for draft in reader.routes
        ),
        filterChains=tuple(
            FilterChain(
                id=draft.id,
                name=draft.name,
                enabled=draft.values["enabled"],
                filters=draft.values["filters"],
                serviceId=chainOwner[id(draft)][1].id if chainOwner[id(draft)][0] == "service" else None,
                routeId=chainOwner[id(draft)][1].id if chainOwner[id(draft)][0] == "route" else None,
                tags=draft.values["tags"],
            )
            for draft in reader.chains
        ),
        source=source,
        text=text,
    )
    return built


def loadConfigText(text: str, source: str, filters: Mapping[str, FilterFile]) -> GatewayConfig:
    """
    Parse and check a declarative configuration.

    @param text: the YAML (or JSON) text.
    @param source: the file name to put at the start of each message.
    @param filters: the installed filters, by name (see
        L{twistgate.config.filters.discoverFilters}).
    @return: the configuration; its C{text} is C{text}, its C{source}
        C{source}.
    @raise ConfigError: with every problem, one line each, C{"<source>:
        <location>: <message>"}.
    """
    try:
        loader = _YamlLoader(text)
    except ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        column = error.position - text.rfind("\n", 0, error.position)
        raise ConfigError([_printable("%s: line %d, column %d: invalid YAML: unacceptable character #x%04x"
                                      % (source, line, column, error.character))])
    loader.duplicates = []
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = "line %d, column %d" % (mark.line + 1, mark.column + 1) if mark is not None else "(root)"
        problem = error.problem or error.context or "invalid YAML"
        if error.context and error.problem:
            problem = "%s (%s)" % (error.problem, error.context)
        raise ConfigError([_printable("%s: %s: invalid YAML: %s" % (source, where, problem))])
    except yaml.YAMLError as error:
        raise ConfigError([_printable("%s: (root): invalid YAML: %s" % (source, str(error).splitlines()[0]))])
    finally:
        loader.dispose()
    problems = _checkValues(document)
    if problems:
        raise ConfigError(_printable("%s: %s" % (source, line)) for line in problems)
    reader = _ConfigReader(filters)
    reader.errors.extend(loader.duplicates)
    reader.document(document)
    return _build(reader, source, text)


def loadConfigFile(path: str, filters: Mapping[str, FilterFile]) -> GatewayConfig:
    """
    Read and check the declarative configuration in file C{path}.

    @param path: the file (UTF-8 YAML or JSON); also the source in messages.
    @param filters: the installed filters, by name.
    @return: the configuration.
    @raise ConfigError: the file cannot be read, or is invalid (every
        problem, one line each).
    """
    return loadConfigText(readConfigFile(path), path, filters)


def readConfigFile(path: str) -> str:
    """
    Read a declarative configuration file's text.

    @raise ConfigError: it cannot be read or is not UTF-8.
    """
    try:
        with open(path, "rb") as configFile:
            raw = configFile.read()
    except OSError as error:
        raise ConfigError(["%s: cannot be read: %s" % (path, error.strerror or error)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(["%s: (root): not UTF-8 text: %s" % (path, error)])
