"""
Tests for L{twistgate.gateway.router}: Kong 3's route precedence (one test
per rule), matching on paths, hosts, methods and headers, and the upstream
path after C{strip_path} (Kong's C{path_handling} C{v0} table).
"""

import json
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from twistgate.config.loader import loadConfigText
from twistgate.gateway.router import CACHE_SIZE, Router, RouteMatch, normalizePath


def routerFor(yaml: str) -> Router:
    """
    A router over a config of one service C{s} (C{http://u.example}) plus
    the given top-level C{routes} (YAML list items, without the key).
    """
    text = '_format_version: "3.0"\nservices:\n- {name: s, url: "http://u.example"}\nroutes:\n' + textwrap.dedent(yaml)
    return Router(loadConfigText(text, "router.yml", {}))


class RouterTestMixin:
    def matchOf(self, router: Router, path="/", method="GET", host="u.example", headers=None, **kw):
        return router.match(method, host, path, headers or {}, **kw)

    def assertRoute(self, router: Router, expected, path="/", **kw) -> None:
        found = self.matchOf(router, path, **kw)
        self.assertEqual(found.route.name if found is not None else None, expected)


class PrecedenceTests(RouterTestMixin, SynchronousTestCase):
    """
    When several routes match, Kong's C{traditional_compatible} priority
    picks one.
    """

    def test_moreFieldsFirst(self) -> None:
        """
        A route that sets more of methods, hosts, headers and paths wins,
        wherever it is written.
        """
        router = routerFor(
            """
            - {name: paths-only, service: s, paths: [/api/v1/long/prefix]}
            - {name: paths-methods, service: s, paths: [/], methods: [GET]}
            """
        )
        self.assertRoute(router, "paths-methods", "/api/v1/long/prefix/x", method="GET")
        self.assertRoute(router, "paths-only", "/api/v1/long/prefix/x", method="POST")

    def test_plainHostBeforeWildcard(self) -> None:
        """
        With as many fields, a route whose hosts are all plain wins over one
        with a wildcard host.
        """
        router = routerFor(
            """
            - {name: wildcard, service: s, hosts: ["*.example.com"], paths: [/]}
            - {name: plain, service: s, hosts: [api.example.com], paths: [/]}
            """
        )
        self.assertRoute(router, "plain", host="api.example.com")
        self.assertRoute(router, "wildcard", host="www.example.com")

    def test_mixedHostsCountAsWildcard(self) -> None:
        """
        One wildcard among a route's hosts is enough to lose the plain-host
        rank.
        """
        router = routerFor(
            """
            - {name: mixed, service: s, hosts: [api.example.com, "*.other.com"], paths: [/long/path]}
            - {name: plain, service: s, hosts: [api.example.com], paths: [/]}
            """
        )
        self.assertRoute(router, "plain", "/long/path", host="api.example.com")

    def test_moreHeadersFirst(self) -> None:
        """
        With as many fields and host kinds, the route with more headers wins.
        """
        router = routerFor(
            """
            - {name: one, service: s, paths: [/], headers: {x-a: ["1"]}}
            - {name: two, service: s, paths: [/], headers: {x-a: ["1"], x-b: ["2"]}}
            """
        )
        self.assertRoute(router, "two", headers={"x-a": ["1"], "x-b": ["2"]})
        self.assertRoute(router, "one", headers={"x-a": ["1"]})

    def test_regexBeforePrefix(self) -> None:
        """
        A regex path wins over a prefix path, even a longer one.
        """
        router = routerFor(
            """
            - {name: prefix, service: s, paths: [/users/1]}
            - {name: regex, service: s, paths: ["~/users/\\\\d+"]}
            """
        )
        self.assertRoute(router, "regex", "/users/1")
        self.assertRoute(routerFor("- {name: prefix, service: s, paths: [/users/1]}\n"), "prefix", "/users/1")

    def test_regexPriority(self) -> None:
        """
        Between regex paths, the higher C{regex_priority} wins.
        """
        router = routerFor(
            """
            - {name: low, service: s, paths: ["~/a/b"], regex_priority: 1}
            - {name: high, service: s, paths: ["~/a/.*"], regex_priority: 5}
            """
        )
        self.assertRoute(router, "high", "/a/b")
        swapped = routerFor(
            """
            - {name: low, service: s, paths: ["~/a/b"], regex_priority: 5}
            - {name: high, service: s, paths: ["~/a/.*"], regex_priority: 1}
            """
        )
        self.assertRoute(swapped, "low", "/a/b")

    def test_negativeRegexPriority(self) -> None:
        """
        A negative C{regex_priority} ranks below the default 0.
        """
        router = routerFor(
            """
            - {name: last, service: s, paths: ["~/a"], regex_priority: -1}
            - {name: default, service: s, paths: ["~/a"]}
            """
        )
        self.assertRoute(router, "default", "/a")

    def test_regexPriorityIgnoredForPrefixes(self) -> None:
        """
        C{regex_priority} does not rank prefix paths: the longest prefix
        wins.
        """
        router = routerFor(
            """
            - {name: short, service: s, paths: [/a], regex_priority: 100}
            - {name: long, service: s, paths: [/a/b]}
            """
        )
        self.assertRoute(router, "long", "/a/b/c")

    def test_longestPrefix(self) -> None:
        """
        Between prefix paths, the longest matching prefix wins.
        """
        router = routerFor(
            """
            - {name: root, service: s, paths: [/]}
            - {name: a, service: s, paths: [/a]}
            - {name: ab, service: s, paths: [/a/b]}
            """
        )
        self.assertRoute(router, "ab", "/a/b/c")
        self.assertRoute(router, "a", "/a/c")
        self.assertRoute(router, "root", "/z")

    def test_pathsRankedOneByOne(self) -> None:
        """
        Each path of a route ranks on its own (Kong 3.3+): a route's short
        path does not borrow the rank of its long one.
        """
        router = routerFor(
            """
            - {name: both, service: s, paths: [/, /very/long/prefix]}
            - {name: middle, service: s, paths: [/very]}
            """
        )
        self.assertRoute(router, "both", "/very/long/prefix/x")
        self.assertRoute(router, "middle", "/very/short")
        self.assertRoute(router, "both", "/other")

    def test_tieInFileOrder(self) -> None:
        """
        Routes of equal priority are tried in the order they are written.
        """
        first = routerFor("- {name: x, service: s, paths: [/a]}\n- {name: y, service: s, paths: [/a]}\n")
        second = routerFor("- {name: y, service: s, paths: [/a]}\n- {name: x, service: s, paths: [/a]}\n")
        self.assertRoute(first, "x", "/a")
        self.assertRoute(second, "y", "/a")


class MatchingTests(RouterTestMixin, SynchronousTestCase):
    """
    What each route field matches.
    """

    def test_noMatch(self) -> None:
        """
        No matching route: L{None} (the proxy answers Kong's 404).
        """
        router = routerFor("- {name: a, service: s, paths: [/a]}\n")
        self.assertIsNone(self.matchOf(router, "/b"))
        self.assertIsNone(Router(loadConfigText('_format_version: "3.0"\n', "empty.yml", {})).match("GET", "", "/", {}))

    def test_result(self) -> None:
        """
        A match carries the route, its service and the upstream path.
        """
        router = routerFor("- {name: a, service: s, paths: [/a]}\n")
        found = self.matchOf(router, "/a/b")
        self.assertIsInstance(found, RouteMatch)
        self.assertEqual((found.route.name, found.service.name, found.upstreamPath), ("a", "s", "/b"))

    def test_prefixIsPlainPrefix(self) -> None:
        """
        A prefix path matches any path that starts with it, not only whole
        segments.
        """
        router = routerFor("- {name: a, service: s, paths: [/ab]}\n")
        self.assertRoute(router, "a", "/abc")
        self.assertRoute(router, None, "/a")

    def test_hostsExact(self) -> None:
        """
        Hosts compare case-insensitively, without the request's port.
        """
        router = routerFor("- {name: a, service: s, hosts: [api.example.com]}\n")
        self.assertRoute(router, "a", host="API.Example.com:8000")
        self.assertRoute(router, None, host="example.com")
        self.assertRoute(router, None, host="")

    def test_hostsLeadingWildcard(self) -> None:
        router = routerFor("- {name: a, service: s, hosts: ['*.example.com']}\n")
        self.assertRoute(router, "a", host="api.example.com")
        self.assertRoute(router, "a", host="a.b.example.com:8000")
        self.assertRoute(router, None, host="example.com")
        self.assertRoute(router, None, host="example.com.evil.org")

    def test_hostsTrailingWildcard(self) -> None:
        router = routerFor("- {name: a, service: s, hosts: ['example.*']}\n")
        self.assertRoute(router, "a", host="example.org")
        self.assertRoute(router, "a", host="example.co.uk")
        self.assertRoute(router, None, host="www.example.org")

    def test_hostWithPort(self) -> None:
        """
        A route host with a port matches that port only: the Host header's,
        or the port the request came in on.
        """
        router = routerFor("- {name: a, service: s, hosts: ['api.example.com:8000', '*.example.org:9000']}\n")
        self.assertRoute(router, "a", host="api.example.com:8000")
        self.assertRoute(router, None, host="api.example.com:8001")
        self.assertRoute(router, None, host="api.example.com")
        self.assertRoute(router, "a", host="api.example.com", port=8000)
        self.assertRoute(router, "a", host="x.example.org:9000")
        self.assertRoute(router, None, host="x.example.org:9001")

    def test_hostDefaultPortByScheme(self) -> None:
        """
        Without a port anywhere, the scheme's port is used.
        """
        router = routerFor("- {name: a, service: s, hosts: ['api.example.com:443']}\n")
        self.assertRoute(router, "a", host="api.example.com", scheme="https")
        self.assertRoute(router, None, host="api.example.com", scheme="http")

    def test_methods(self) -> None:
        router = routerFor("- {name: a, service: s, methods: [GET, HEAD]}\n")
        self.assertRoute(router, "a", method="GET")
        self.assertRoute(router, "a", method="HEAD")
        self.assertRoute(router, None, method="POST")

    def test_headers(self) -> None:
        """
        Every header of the route must be present with one of its values,
        compared case-insensitively; any of the request's values may match.
        """
        router = routerFor("- {name: a, service: s, headers: {x-version: [v1, V2], x-team: [core]}}\n")
        self.assertRoute(router, "a", headers={"x-version": ["V1"], "x-team": ["Core"]})
        self.assertRoute(router, "a", headers={"x-version": ["v3", "v2"], "x-team": ["core"]})
        self.assertRoute(router, None, headers={"x-version": ["v1"]})
        self.assertRoute(router, None, headers={"x-version": ["v3"], "x-team": ["core"]})

    def test_headerRegex(self) -> None:
        """
        A header value starting with C{~*} is a case-insensitive regex.
        """
        router = routerFor("- {name: a, service: s, headers: {user-agent: ['~*curl/\\d']}}\n")
        self.assertRoute(router, "a", headers={"user-agent": ["Mozilla CURL/8.1"]})
        self.assertRoute(router, None, headers={"user-agent": ["curl/x"]})

    def test_rememberedDecisions(self) -> None:
        """
        Remembered decisions never mix requests that differ in a header a
        route looks at, in scheme or in port, and stay right past the
        cache's size.
        """
        router = routerFor(
            """
            - {name: beta, service: s, paths: [/], headers: {x-beta: ["1"]}}
            - {name: secure, service: s, paths: [/], hosts: ["h.example:8443"], protocols: [https]}
            - {name: plain, service: s, paths: [/]}
            """
        )
        for _ in range(2):
            self.assertRoute(router, "beta", "/a", headers={"x-beta": ["1"]})
            self.assertRoute(router, "plain", "/a", headers={"x-beta": ["2"]})
            self.assertRoute(router, "plain", "/a")
            self.assertRoute(router, "secure", "/a", host="h.example", scheme="https", port=8443)
            self.assertRoute(router, "plain", "/a", host="h.example", scheme="https", port=443)
        for index in range(CACHE_SIZE + 10):
            self.assertEqual(router.match("GET", "u.example", "/p%d" % (index,), {}).upstreamPath, "/p%d" % (index,))
        self.assertRoute(router, "beta", "/a", headers={"x-beta": ["1"]})

    def test_protocols(self) -> None:
        """
        Only routes whose protocols include the request's scheme match.
        """
        router = routerFor("- {name: secure, service: s, paths: [/], protocols: [https]}\n")
        self.assertRoute(router, "secure", scheme="https")
        self.assertRoute(router, None, scheme="http")

    def test_disabledService(self) -> None:
        """
        Routes of a disabled service never match.
        """
        router = Router(
            loadConfigText(
                '_format_version: "3.0"\nservices:\n'
                "- {name: svc-off, host: a.example, enabled: false, routes: [{name: a, paths: [/a]}]}\n"
                "- {name: svc-on, host: b.example, routes: [{name: b, paths: [/]}]}\n",
                "router.yml",
                {},
            )
        )
        self.assertRoute(router, "b", "/a")

    def test_regexCaptures(self) -> None:
        """
        A regex path (PCRE named groups accepted) is anchored at the start
        and exposes its captures.
        """
        router = routerFor("- {name: u, service: s, paths: ['~/users/(?<id>\\d+)/(\\w+)$']}\n")
        found = self.matchOf(router, "/users/42/profile")
        self.assertEqual(
            dict(found.uriCaptures), {"0": "/users/42/profile", "1": "42", "2": "profile", "id": "42"}
        )
        self.assertIsNone(self.matchOf(router, "/x/users/42/profile"))
        self.assertIsNone(self.matchOf(router, "/users/42/profile/more"))

    def test_prefixNoCaptures(self) -> None:
        router = routerFor("- {name: a, service: s, paths: [/a]}\n")
        self.assertEqual(dict(self.matchOf(router, "/a").uriCaptures), {})

    def test_regexStripPath(self) -> None:
        """
        With C{strip_path}, the whole part a regex matched is stripped
        (Kong's documented example).
        """
        router = routerFor("- {name: v, service: s, paths: ['~/version/\\d+/service']}\n")
        self.assertEqual(self.matchOf(router, "/version/1/service/path/to/resource").upstreamPath, "/path/to/resource")

    def test_normalizedBeforeMatching(self) -> None:
        """
        The request path is normalized before matching, so dot segments and
        encodings cannot dodge or fake a route.
        """
        router = routerFor("- {name: greet, service: s, paths: [/greet], strip_path: false}\n")
        self.assertRoute(router, None, "/greet/../admin")
        self.assertRoute(router, "greet", "/gr%65et")
        self.assertRoute(router, "greet", "//greet")
        self.assertRoute(router, "greet", "/x/../greet/./a")
        self.assertEqual(self.matchOf(router, "/x/../greet/./a").upstreamPath, "/greet/a")

    def test_upstreamPathEscaped(self) -> None:
        """
        Characters decoded by normalization are escaped again upstream;
        reserved characters keep their encoding.
        """
        router = routerFor("- {name: a, service: s, paths: [/], strip_path: false}\n")
        self.assertEqual(self.matchOf(router, "/a%20b/c%2Fd/%7euser").upstreamPath, "/a%20b/c%2Fd/~user")


class NormalizePathTests(SynchronousTestCase):
    """
    L{normalizePath} is Kong's path normalization.
    """

    def test_cases(self) -> None:
        cases = {
            "/": "/",
            "/a/b": "/a/b",
            "/a/./b": "/a/b",
            "/a/../b": "/b",
            "/../a": "/a",
            "/a/..": "/",
            "/a/.": "/a/",
            "/a//b///c": "/a/b/c",
            "/%61%62%2f%2E%2e": "/ab%2F..",
            "/%41/%7E/%25": "/A/~/%25",
            "/a/%2e%2E/b": "/b",
        }
        self.assertEqual({path: normalizePath(path) for path in cases}, cases)


# Kong's path_handling "v0" table (spec/fixtures/router_path_handling_tests.lua):
# service path, route path (None: the route matches on host), strip_path
# values, request path, upstream path.
PATH_HANDLING_V0 = [
    ("/", "/", (False, True), "/", "/"),
    ("/", "/", (False, True), "/route", "/route"),
    ("/", "/", (False, True), "/route/", "/route/"),
    ("/", "/", (False, True), "/routereq", "/routereq"),
    ("/", "/", (False, True), "/route/req", "/route/req"),
    ("/", "/route", (False,), "/route", "/route"),
    ("/", "/route", (False,), "/route/", "/route/"),
    ("/", "/route", (False,), "/routereq", "/routereq"),
    ("/", "/route", (True,), "/route", "/"),
    ("/", "/route", (True,), "/route/", "/"),
    ("/", "/route", (True,), "/routereq", "/req"),
    ("/", "/route/", (False,), "/route/", "/route/"),
    ("/", "/route/", (False,), "/route/req", "/route/req"),
    ("/", "/route/", (True,), "/route/", "/"),
    ("/", "/route/", (True,), "/route/req", "/req"),
    ("/srv", "/rou", (False,), "/roureq", "/srv/roureq"),
    ("/srv", "/rou", (True,), "/roureq", "/srv/req"),
    ("/srv/", "/rou", (False,), "/rou", "/srv/rou"),
    ("/srv/", "/rou", (True,), "/rou", "/srv"),
    ("/service", "/", (False, True), "/", "/service"),
    ("/service", "/", (False, True), "/route", "/service/route"),
    ("/service", "/", (False, True), "/route/", "/service/route/"),
    ("/service", "/", (False, True), "/routereq", "/service/routereq"),
    ("/service", "/", (False, True), "/route/req", "/service/route/req"),
    ("/service", "/route", (False,), "/route", "/service/route"),
    ("/service", "/route", (False,), "/route/", "/service/route/"),
    ("/service", "/route", (False,), "/routereq", "/service/routereq"),
    ("/service", "/route", (True,), "/route", "/service"),
    ("/service", "/route", (True,), "/route/", "/service/"),
    ("/service", "/route", (True,), "/routereq", "/service/req"),
    ("/service", "/route/", (False,), "/route/", "/service/route/"),
    ("/service", "/route/", (False,), "/route/req", "/service/route/req"),
    ("/service", "/route/", (True,), "/route/", "/service/"),
    ("/service", "/route/", (True,), "/route/req", "/service/req"),
    ("/service/", "/", (False, True), "/route/", "/service/route/"),
    ("/service/", "/", (False, True), "/", "/service/"),
    ("/service/", "/", (False, True), "/route", "/service/route"),
    ("/service/", "/", (False, True), "/routereq", "/service/routereq"),
    ("/service/", "/", (False, True), "/route/req", "/service/route/req"),
    ("/service/", "/route", (False,), "/route", "/service/route"),
    ("/service/", "/route", (False,), "/route/", "/service/route/"),
    ("/service/", "/route", (False,), "/routereq", "/service/routereq"),
    ("/service/", "/route", (True,), "/route", "/service"),
    ("/service/", "/route", (True,), "/route/", "/service/"),
    ("/service/", "/route", (True,), "/routereq", "/service/req"),
    ("/service/", "/route/", (False,), "/route/", "/service/route/"),
    ("/service/", "/route/", (False,), "/route/req", "/service/route/req"),
    ("/service/", "/route/", (True,), "/route/", "/service/"),
    ("/service/", "/route/", (True,), "/route/req", "/service/req"),
    ("/", None, (False, True), "/", "/"),
    ("/", None, (False, True), "/route", "/route"),
    ("/", None, (False, True), "/route/", "/route/"),
    ("/service", None, (False, True), "/", "/service"),
    ("/service", None, (False, True), "/route", "/service/route"),
    ("/service", None, (False, True), "/route/", "/service/route/"),
    ("/service/", None, (False, True), "/", "/service/"),
    ("/service/", None, (False, True), "/route", "/service/route"),
    ("/service/", None, (False, True), "/route/", "/service/route/"),
]


class PathHandlingTests(SynchronousTestCase):
    """
    The upstream path joins the service path and the (stripped) request path
    as Kong's C{path_handling} C{v0} does, row by row of Kong's own table.
    """

    def test_kongTable(self) -> None:
        mismatches = []
        for servicePath, routePath, stripValues, requestPath, expected in PATH_HANDLING_V0:
            for stripPath in stripValues:
                route = {"name": "r", "strip_path": stripPath}
                if routePath is None:
                    route["hosts"] = ["h.example"]
                else:
                    route["paths"] = [routePath]
                text = json.dumps(
                    {
                        "_format_version": "3.0",
                        "services": [{"name": "s", "host": "u.example", "path": servicePath, "routes": [route]}],
                    }
                )
                found = Router(loadConfigText(text, "table.yml", {})).match("GET", "h.example", requestPath, {})
                got = found.upstreamPath if found is not None else None
                if got != expected:
                    mismatches.append((servicePath, routePath, stripPath, requestPath, expected, got))
        self.assertEqual(mismatches, [])

    def test_noServicePath(self) -> None:
        """
        A service without a path behaves as path C{/}.
        """
        router = routerFor("- {name: a, service: s, paths: [/a]}\n")
        self.assertEqual(router.match("GET", "", "/a", {}).upstreamPath, "/")
        self.assertEqual(router.match("GET", "", "/a/b/", {}).upstreamPath, "/b/")
