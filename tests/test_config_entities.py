"""
Tests for L{twistgate.config.entities}: the admin API's JSON for each entity
has Kong's field names and values.
"""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from twistgate.config.entities import filterChainToDict, filterFileToDict, routeToDict, serviceToDict
from twistgate.config.filters import FilterFile
from twistgate.config.loader import loadConfigFile

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

FILTERS = {
    name: FilterFile(name, "filters/%s.wasm" % (name,), "a" * 64, 1234, schema, ())
    for name, schema in (("greeting", {"type": "object"}), ("rate-limiting", {"type": "object"}), ("raw", None))
}


class EntitiesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.config = loadConfigFile(os.path.join(DATA, "full.yml"), FILTERS)

    def test_service(self) -> None:
        """
        A service shows Kong's fields, C{null} for what is unset.
        """
        httpbin = self.config.services[1]
        self.assertEqual(
            serviceToDict(httpbin),
            {
                "id": httpbin.id,
                "name": "httpbin",
                "protocol": "https",
                "host": "httpbin.example",
                "port": 8443,
                "path": "/anything",
                "connect_timeout": 1000,
                "read_timeout": 2000,
                "write_timeout": 3000,
                "retries": 0,
                "enabled": False,
                "tags": None,
                "client_certificate": None,
                "tls_verify": None,
                "tls_verify_depth": None,
                "ca_certificates": None,
            },
        )
        self.assertEqual(serviceToDict(self.config.services[0])["tags"], ["demo"])

    def test_route(self) -> None:
        """
        A route names its service by id.
        """
        users = self.config.routes[2]
        self.assertEqual(
            routeToDict(users),
            {
                "id": users.id,
                "name": "users",
                "protocols": ["https"],
                "methods": ["GET", "POST"],
                "hosts": ["*.example.com", "api.example.*", "exact.example.com:8000"],
                "paths": ["~/users/(?<id>\\d+)$"],
                "headers": {"x-version": ["v1", "~*^beta"]},
                "https_redirect_status_code": 426,
                "regex_priority": 10,
                "strip_path": True,
                "path_handling": "v0",
                "preserve_host": True,
                "request_buffering": True,
                "response_buffering": True,
                "snis": None,
                "sources": None,
                "destinations": None,
                "tags": None,
                "service": {"id": self.config.services[1].id},
            },
        )

    def test_routeUnset(self) -> None:
        """
        Unset lists and headers are C{null}, as in Kong.
        """
        shown = routeToDict(self.config.routes[0])
        self.assertEqual((shown["methods"], shown["hosts"], shown["headers"]), (None, None, None))
        self.assertEqual(shown["paths"], ["/greet"])

    def test_chainOnRoute(self) -> None:
        """
        A route's chain has C{route} set and C{service} null; each filter's
        config is shown as written in the file.
        """
        chain = self.config.filterChains[0]
        self.assertEqual(
            filterChainToDict(chain),
            {
                "id": chain.id,
                "name": "greeting-chain",
                "enabled": True,
                "service": None,
                "route": {"id": self.config.routes[0].id},
                "filters": [
                    {
                        "name": "greeting",
                        "config": {"my_greeting": "Hello from Kong using WebAssembly!"},
                        "enabled": True,
                    }
                ],
                "tags": None,
            },
        )

    def test_chainOnService(self) -> None:
        """
        A service's chain has C{service} set; twistgate's filter extensions
        appear when they are not the defaults.
        """
        chain = self.config.filterChains[1]
        shown = filterChainToDict(chain)
        self.assertEqual((shown["service"], shown["route"]), ({"id": self.config.services[0].id}, None))
        self.assertEqual(
            shown["filters"],
            [
                {"name": "rate-limiting", "config": {"minute": 60}, "enabled": True},
                {
                    "name": "raw",
                    "config": "plain text, passed as is",
                    "enabled": False,
                    "root_id": "raw_root",
                    "failure_policy": "fail_open",
                    "env": {"GREETING_LANG": "en"},
                },
            ],
        )

    def test_jsonSerializable(self) -> None:
        """
        Every entity's dict is JSON.
        """
        shown = (
            [serviceToDict(s) for s in self.config.services]
            + [routeToDict(r) for r in self.config.routes]
            + [filterChainToDict(c) for c in self.config.filterChains]
        )
        self.assertEqual(json.loads(json.dumps(shown)), shown)

    def test_filterFile(self) -> None:
        self.assertEqual(
            filterFileToDict(FILTERS["greeting"]),
            {"name": "greeting", "file": "filters/greeting.wasm", "sha256": "a" * 64, "size": 1234},
        )
