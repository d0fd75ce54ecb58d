"""
Kong-shaped JSON objects of the configuration entities, for the admin API.

Field names and defaults are those Kong's admin API returns; fields Kong has
and twistgate does not support are given their Kong default, so clients that
read them keep working. An unset collection is C{null}, as in Kong.
"""

from typing import Optional, Sequence

from twistgate.config.filters import FilterFile
from twistgate.config.model import FilterChain, FilterEntry, Route, Service


def _listOrNull(values: Sequence) -> Optional[list]:
    return list(values) if values else None


def _reference(entityId: Optional[str]) -> Optional[dict]:
    return {"id": entityId} if entityId is not None else None


def serviceToDict(service: Service) -> dict:
    """
    @return: C{service} as Kong's C{GET /services/{id}} shows it.
    """
    return {
        "id": service.id,
        "name": service.name,
        "protocol": service.protocol,
        "host": service.host,
        "port": service.port,
        "path": service.path,
        "connect_timeout": service.connectTimeout,
        "read_timeout": service.readTimeout,
        "write_timeout": service.writeTimeout,
        "retries": service.retries,
        "enabled": service.enabled,
        "tags": _listOrNull(service.tags),
        "client_certificate": None,
        "tls_verify": None,
        "tls_verify_depth": None,
        "ca_certificates": None,
    }


def routeToDict(route: Route) -> dict:
    """
    @return: C{route} as Kong's C{GET /routes/{id}} shows it.
    """
    return {
        "id": route.id,
        "name": route.name,
        "protocols": list(route.protocols),
        "methods": _listOrNull(route.methods),
        "hosts": _listOrNull(route.hosts),
        "paths": _listOrNull(route.paths),
        "headers": {name: list(values) for name, values in route.headers.items()} or None,
        "https_redirect_status_code": 426,
        "regex_priority": route.regexPriority,
        "strip_path": route.stripPath,
        "path_handling": "v0",
        "preserve_host": route.preserveHost,
        "request_buffering": True,
        "response_buffering": True,
        "snis": None,
        "sources": None,
        "destinations": None,
        "tags": _listOrNull(route.tags),
        "service": _reference(route.serviceId),
    }


def filterEntryToDict(entry: FilterEntry) -> dict:
    """
    @return: one C{filters[]} item: C{name}, C{config} as written in the
        file, C{enabled}; twistgate's extensions (C{root_id},
        C{failure_policy}, C{env}) only when they differ from their
        defaults.
    """
    shown = {"name": entry.name, "config": entry.rawConfig, "enabled": entry.enabled}
    if entry.rootId and entry.rootId != entry.name:
        shown["root_id"] = entry.rootId
    if entry.failurePolicy != "fail_closed":
        shown["failure_policy"] = entry.failurePolicy
    if entry.env:
        shown["env"] = dict(entry.env)
    return shown


def filterChainToDict(chain: FilterChain) -> dict:
    """
    @return: C{chain} as Kong's C{GET /filter-chains/{id}} shows it.
    """
    return {
        "id": chain.id,
        "name": chain.name,
        "enabled": chain.enabled,
        "service": _reference(chain.serviceId),
        "route": _reference(chain.routeId),
        "filters": [filterEntryToDict(entry) for entry in chain.filters],
        "tags": _listOrNull(chain.tags),
    }


def filterFileToDict(filterFile: FilterFile) -> dict:
    """
    @return: an installed filter for C{GET /filters}: C{name}, C{file} (its
        path), C{sha256} and C{size} in bytes.
    """
    return {
        "name": filterFile.name,
        "file": filterFile.path,
        "sha256": filterFile.sha256,
        "size": filterFile.size,
    }
