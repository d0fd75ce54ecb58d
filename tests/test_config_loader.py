"""
Tests for L{twistgate.config.loader}: what a valid C{kong.yml} becomes, and
the exact one-line message for each kind of mistake.
"""

import os
import textwrap
import uuid

from twisted.trial.unittest import SynchronousTestCase

from twistgate.config.errors import ConfigError
from twistgate.config.filters import FilterFile
from twistgate.config.loader import ENTITY_NAMESPACE, loadConfigFile, loadConfigText

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FILTERS = {
    "greeting": FilterFile(
        "greeting",
        "filters/greeting.wasm",
        "0" * 64,
        1,
        {
            "type": "object",
            "properties": {"my_greeting": {"type": "string"}},
            "additionalProperties": False,
        },
        (),
    ),
    "rate-limiting": FilterFile(
        "rate-limiting",
        "filters/rate-limiting.wasm",
        "1" * 64,
        1,
        {
            "type": "object",
            "properties": {
                "second": {"type": "integer", "minimum": 0},
                "minute": {"type": "integer", "minimum": 0},
            },
        },
        (),
    ),
    "raw": FilterFile("raw", "filters/raw.wasm", "2" * 64, 1, None, ()),
}

HEADER = '_format_version: "3.0"\n'


def load(text: str, header: str = HEADER):
    return loadConfigText(header + textwrap.dedent(text), "kong.yml", FILTERS)


class LoaderTestMixin:
    def errorsOf(self, text: str, header: str = HEADER) -> list:
        return self.assertRaises(ConfigError, load, text, header).errors

    def assertErrors(self, text: str, *expected: str, header: str = HEADER) -> None:
        self.assertEqual(self.errorsOf(text, header), ["kong.yml: " + line for line in expected])


class ValidConfigTests(SynchronousTestCase):
    """
    A valid file becomes the frozen model, with Kong's defaults.
    """

    def setUp(self) -> None:
        self.config = loadConfigFile(os.path.join(DATA, "full.yml"), FILTERS)

    def test_sourceAndText(self) -> None:
        """
        The configuration keeps its file name and original text.
        """
        path = os.path.join(DATA, "full.yml")
        self.assertEqual(self.config.source, path)
        with open(path) as original:
            self.assertEqual(self.config.text, original.read())

    def test_serviceFromUrl(self) -> None:
        """
        C{url} gives protocol, host, port and path; timeouts and retries take
        Kong's defaults.
        """
        echo = self.config.services[0]
        self.assertEqual(
            (echo.name, echo.protocol, echo.host, echo.port, echo.path),
            ("echo", "http", "127.0.0.1", 8080, None),
        )
        self.assertEqual((echo.connectTimeout, echo.readTimeout, echo.writeTimeout), (60000, 60000, 60000))
        self.assertEqual((echo.retries, echo.enabled, echo.tags), (5, True, ("demo",)))

    def test_serviceFromFields(self) -> None:
        """
        C{protocol}, C{host}, C{port}, C{path}, the timeouts, C{retries} and
        C{enabled} are read as written.
        """
        httpbin = self.config.services[1]
        self.assertEqual(
            (httpbin.protocol, httpbin.host, httpbin.port, httpbin.path),
            ("https", "httpbin.example", 8443, "/anything"),
        )
        self.assertEqual(
            (httpbin.connectTimeout, httpbin.readTimeout, httpbin.writeTimeout, httpbin.retries, httpbin.enabled),
            (1000, 2000, 3000, 0, False),
        )

    def test_defaultPort(self) -> None:
        """
        Without C{port} a service uses port 80, as Kong; a URL without a port
        uses its scheme's port.
        """
        self.assertEqual(self.config.services[2].port, 80)
        config = load(
            """
            services:
            - {name: a, url: "https://a.example"}
            - {name: b, url: "http://b.example/base/"}
            """
        )
        self.assertEqual([(s.port, s.path) for s in config.services], [(443, None), (80, "/base/")])

    def test_givenIdKept(self) -> None:
        """
        An entity's own C{id} is used as its id.
        """
        self.assertEqual(self.config.services[2].id, "7f3c2a44-0e5e-4c1b-9a51-0c1d5e7a9b10")
        self.assertIsNone(self.config.services[2].name)

    def test_routes(self) -> None:
        """
        Nested routes belong to their service and come first; top-level routes
        name theirs by name or C{{id: ...}}.
        """
        routes = self.config.routes
        services = self.config.services
        self.assertEqual([r.name for r in routes], ["greeting-route", "echo-route", "users", None])
        self.assertEqual(
            [r.serviceId for r in routes], [services[0].id, services[0].id, services[1].id, services[2].id]
        )

    def test_routeDefaults(self) -> None:
        """
        C{strip_path} defaults to true, C{preserve_host} to false,
        C{regex_priority} to 0, C{protocols} to http and https.
        """
        greeting = self.config.routes[0]
        self.assertEqual(
            (greeting.stripPath, greeting.preserveHost, greeting.regexPriority, greeting.protocols),
            (True, False, 0, ("http", "https")),
        )
        self.assertEqual((greeting.hosts, greeting.methods, dict(greeting.headers)), ((), (), {}))
        self.assertFalse(self.config.routes[1].stripPath)

    def test_routeFields(self) -> None:
        """
        Every route field is read; header names are lower-cased.
        """
        users = self.config.routes[2]
        self.assertEqual(users.paths, ("~/users/(?<id>\\d+)$",))
        self.assertEqual(users.hosts, ("*.example.com", "api.example.*", "exact.example.com:8000"))
        self.assertEqual(users.methods, ("GET", "POST"))
        self.assertEqual(dict(users.headers), {"x-version": ("v1", "~*^beta")})
        self.assertEqual((users.regexPriority, users.preserveHost, users.protocols), (10, True, ("https",)))

    def test_chains(self) -> None:
        """
        Chains nested in a route or a service belong to it; a top-level chain
        names its route or service.
        """
        greeting, echo, users = self.config.filterChains
        self.assertEqual((greeting.routeId, greeting.serviceId), (self.config.routes[0].id, None))
        self.assertEqual((echo.serviceId, echo.routeId), (self.config.services[0].id, None))
        self.assertEqual((users.routeId, users.enabled, users.tags), (self.config.routes[2].id, False, ("a", "b")))
        self.assertIs(self.config.chainFor(serviceId=self.config.services[0].id), echo)
        self.assertIs(self.config.chainFor(routeId=self.config.routes[0].id), greeting)

    def test_filterConfigObject(self) -> None:
        """
        A JSON object config reaches the filter as compact JSON text; the
        original value is kept for the admin API.
        """
        entry = self.config.filterChains[0].filters[0]
        self.assertEqual(entry.config, '{"my_greeting":"Hello from Kong using WebAssembly!"}')
        self.assertEqual(entry.rawConfig, {"my_greeting": "Hello from Kong using WebAssembly!"})
        self.assertEqual(
            (entry.enabled, entry.rootId, entry.failurePolicy, dict(entry.env)), (True, "greeting", "fail_closed", {})
        )

    def test_filterConfigString(self) -> None:
        """
        A string config is passed as is; the twistgate extensions are read.
        """
        entry = self.config.filterChains[1].filters[1]
        self.assertEqual(entry.config, "plain text, passed as is")
        self.assertEqual(entry.rawConfig, "plain text, passed as is")
        self.assertEqual(
            (entry.enabled, entry.rootId, entry.failurePolicy, dict(entry.env)),
            (False, "raw_root", "fail_open", {"GREETING_LANG": "en"}),
        )

    def test_filterConfigAbsent(self) -> None:
        """
        Without C{config} the filter gets none.
        """
        entry = self.config.filterChains[2].filters[0]
        self.assertEqual((entry.config, entry.rawConfig), (None, None))

    def test_filterConfigJsonTypes(self) -> None:
        """
        Non-object JSON values (arrays, numbers, booleans) are serialized
        too, and YAML dates stay text.
        """
        config = load(
            """
            services:
            - name: s
              host: example.com
              filter_chains:
              - filters:
                - {name: rate-limiting, config: {minute: 5, second: 1}}
            routes:
            - name: r
              service: s
              paths: [/r]
              filter_chains:
              - filters:
                - name: raw
                  config: "2024-01-01"
            """
        )
        self.assertEqual(config.filterChains[0].filters[0].config, '{"minute":5,"second":1}')
        self.assertEqual(config.filterChains[1].filters[0].config, "2024-01-01")

    def test_stableIds(self) -> None:
        """
        Ids without C{id} are UUIDv5 of the kind and name, so they are the
        same on every load; unnamed entities use their location.
        """
        again = loadConfigFile(os.path.join(DATA, "full.yml"), FILTERS)
        self.assertEqual(
            [e.id for e in self.config.services + self.config.routes + self.config.filterChains],
            [e.id for e in again.services + again.routes + again.filterChains],
        )
        self.assertEqual(self.config.services[0].id, str(uuid.uuid5(ENTITY_NAMESPACE, "service:echo")))
        self.assertEqual(self.config.routes[0].id, str(uuid.uuid5(ENTITY_NAMESPACE, "route:greeting-route")))
        self.assertEqual(self.config.filterChains[1].id, str(uuid.uuid5(ENTITY_NAMESPACE, "filter_chain:echo-chain")))
        self.assertEqual(self.config.routes[3].id, str(uuid.uuid5(ENTITY_NAMESPACE, "route@routes[1]")))

    def test_idsIndependentOfOrder(self) -> None:
        """
        A named entity keeps its id when the file is reordered.
        """
        first = load("services:\n- {name: a, host: a.example}\n- {name: b, host: b.example}\n")
        second = load("services:\n- {name: b, host: b.example}\n- {name: a, host: a.example}\n")
        self.assertEqual(
            {s.name: s.id for s in first.services},
            {s.name: s.id for s in second.services},
        )

    def test_jsonAccepted(self) -> None:
        """
        JSON is YAML: a JSON declarative file loads.
        """
        config = loadConfigText(
            '{"_format_version": "3.0", "services": [{"name": "a", "url": "http://a.example",'
            ' "routes": [{"name": "r", "paths": ["/"]}]}]}',
            "kong.json",
            FILTERS,
        )
        self.assertEqual([r.name for r in config.routes], ["r"])

    def test_formatVersions(self) -> None:
        """
        Format versions 1.1, 2.1 and 3.0 are accepted.
        """
        for version in ("1.1", "2.1", "3.0"):
            config = load("services: []\n", header='_format_version: "%s"\n' % (version,))
            self.assertEqual(config.services, ())

    def test_legacyRegexPaths(self) -> None:
        """
        In Kong 2 formats (1.1, 2.1) a path with regex characters is a regex
        path, as Kong 3 reads those files: it gets its C{~}. In 3.0 it is
        a prefix.
        """
        routes = (
            "services:\n- name: s\n  host: s.example\n  routes:\n"
            "  - {name: r, paths: ['/users/\\d+$', /plain/path_1.x~%20]}\n"
        )
        for version in ("1.1", "2.1"):
            config = load(routes, header='_format_version: "%s"\n' % (version,))
            self.assertEqual(config.routes[0].paths, ("~/users/\\d+$", "/plain/path_1.x~%20"))
        self.assertEqual(load(routes).routes[0].paths, ("/users/\\d+$", "/plain/path_1.x~%20"))

    def test_shippedConfigs(self) -> None:
        """
        The shipped walkthrough configs load: kong.yml with the greeting
        chain on a route and rate limiting on the service.
        """
        config = loadConfigFile(os.path.join(REPOSITORY, "config", "kong.yml"), FILTERS)
        [echo] = config.services
        self.assertEqual((echo.name, echo.host, echo.port), ("echo", "127.0.0.1", 8080))
        self.assertEqual(
            [(r.name, r.paths) for r in config.routes], [("greeting-route", ("/greet",)), ("echo-route", ("/",))]
        )
        routeChain = config.chainFor(routeId=config.routes[0].id)
        serviceChain = config.chainFor(serviceId=echo.id)
        self.assertEqual(
            [(f.name, f.config) for f in routeChain.filters],
            [("greeting", '{"my_greeting":"Hello from Kong using WebAssembly!"}')],
        )
        self.assertEqual([(f.name, f.config) for f in serviceChain.filters], [("rate-limiting", '{"minute":60}')])
        plain = loadConfigFile(os.path.join(REPOSITORY, "config", "kong-nofilters.yml"), {})
        self.assertEqual((len(plain.routes), plain.filterChains), (2, ()))


class DocumentErrorTests(LoaderTestMixin, SynchronousTestCase):
    """
    Mistakes in the document as a whole.
    """

    def test_yamlSyntax(self) -> None:
        """
        A YAML syntax error gives its line and column.
        """
        self.assertErrors(
            "services:\n- name: a: b\n",
            "line 3, column 10: invalid YAML: mapping values are not allowed here",
        )

    def test_yamlSyntaxWithContext(self) -> None:
        """
        An unclosed flow sequence says what was being parsed.
        """
        self.assertErrors(
            "routes: [a\nservices: []\n",
            "line 3, column 9: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence)",
        )

    def test_notMapping(self) -> None:
        """
        The document must be a mapping.
        """
        self.assertErrors(
            "",
            "(root): expected a mapping with _format_version, services, routes and filter_chains, got a list",
            header="- a\n- b\n",
        )

    def test_empty(self) -> None:
        """
        An empty file says so.
        """
        self.assertErrors(
            "",
            "(root): expected a mapping with _format_version, services, routes and filter_chains,"
            " got an empty document",
            header="",
        )

    def test_formatVersionMissing(self) -> None:
        self.assertErrors("services: []\n", '_format_version: required field missing (use "3.0")', header="")

    def test_formatVersionUnsupported(self) -> None:
        self.assertErrors(
            "",
            '_format_version: unsupported version "4.0" (supported: "1.1", "2.1", "3.0")',
            header='_format_version: "4.0"\n',
        )

    def test_formatVersionUnquoted(self) -> None:
        """
        An unquoted C{3.0} is a YAML number: the message says to quote it.
        """
        self.assertErrors(
            "",
            '_format_version: expected a string, got 3.0 (write it in quotes: "3.0")',
            header="_format_version: 3.0\n",
        )

    def test_unknownTopLevel(self) -> None:
        self.assertErrors(
            "plugins: []\nconsumers: []\n",
            "plugins: unknown field (twistgate reads services, routes and filter_chains)",
            "consumers: unknown field (twistgate reads services, routes and filter_chains)",
        )

    def test_duplicateKey(self) -> None:
        """
        A key given twice in one mapping is an error, not a silent override.
        """
        self.assertErrors(
            "services:\n- name: a\n  host: a.example\n  host: b.example\n",
            'line 5, column 3: duplicate key "host"',
        )

    def test_mergeKeyOverride(self) -> None:
        """
        Overriding a key merged in with C{<<} is not a duplicate.
        """
        config = load(
            """
            services:
            - &base {name: a, host: a.example, retries: 1}
            - <<: *base
              name: b
            """
        )
        self.assertEqual(
            [(s.name, s.host, s.retries) for s in config.services], [("a", "a.example", 1), ("b", "a.example", 1)]
        )

    def test_sectionNotList(self) -> None:
        self.assertErrors("services: {name: a}\n", "services: expected a list, got a mapping")

    def test_entityNotMapping(self) -> None:
        self.assertErrors("services: [echo]\n", 'services[0]: expected a mapping, got "echo"')

    def test_everyProblem(self) -> None:
        """
        Every problem of a file is reported, one line each, prefixed with
        the file's path.
        """
        path = os.path.join(DATA, "many-mistakes.yml")
        error = self.assertRaises(ConfigError, loadConfigFile, path, FILTERS)
        self.assertEqual(
            error.errors,
            [
                path + ': services[0].routes[1].paths[0]: "api" must start with "/" or "~"',
                path + ": services[0].filter_chains[0].filters[0].config.minute: -1 is less than the minimum of 0",
                path + ": services[1].colour: unknown field",
                path + ': services[1].name: duplicate service name "echo" (also services[0])',
                path + ': routes[0].service: no such service: "nowhere"',
            ],
        )
        self.assertEqual(str(error), "\n".join(error.errors))

    def test_unreadableFile(self) -> None:
        path = os.path.join(DATA, "does-not-exist.yml")
        error = self.assertRaises(ConfigError, loadConfigFile, path, FILTERS)
        self.assertEqual(error.errors, [path + ": cannot be read: No such file or directory"])


class ServiceErrorTests(LoaderTestMixin, SynchronousTestCase):
    """
    Mistakes in services.
    """

    def test_unknownField(self) -> None:
        self.assertErrors("services:\n- {name: a, host: a.example, colour: red}\n", "services[0].colour: unknown field")

    def test_hostMissing(self) -> None:
        self.assertErrors("services:\n- {name: a}\n", "services[0].host: required field missing")

    def test_invalidHost(self) -> None:
        self.assertErrors("services:\n- {name: a, host: 'a b'}\n", 'services[0].host: invalid host "a b"')

    def test_urlScheme(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, url: 'ftp://a.example'}\n",
            'services[0].url: invalid URL "ftp://a.example": the scheme must be "http" or "https"',
        )

    def test_urlNoHost(self) -> None:
        self.assertErrors("services:\n- {name: a, url: 'http://'}\n", 'services[0].url: invalid URL "http://": no host')

    def test_urlBadPort(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, url: 'http://a.example:99999'}\n",
            'services[0].url: invalid URL "http://a.example:99999": Port out of range 0-65535',
        )

    def test_urlQuery(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, url: 'http://a.example/p?x=1'}\n",
            'services[0].url: invalid URL "http://a.example/p?x=1": user info, query and fragment are not allowed',
        )

    def test_urlWithFields(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, url: 'http://a.example', host: b.example, port: 81}\n",
            'services[0].host: cannot be set together with "url"',
            'services[0].port: cannot be set together with "url"',
        )

    def test_protocol(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, protocol: grpc}\n",
            'services[0].protocol: "grpc" is not supported (expected "http" or "https")',
        )

    def test_portRange(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, port: 65536}\n",
            "services[0].port: 65536 is out of range (1..65535)",
        )

    def test_portType(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, port: '80'}\n",
            'services[0].port: expected an integer, got "80"',
        )

    def test_path(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, path: api}\n",
            'services[0].path: path "api" must start with "/"',
        )

    def test_timeouts(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, connect_timeout: 0, read_timeout: 2147483647,"
            " write_timeout: 1.5}\n",
            "services[0].connect_timeout: 0 is out of range (1..2147483646)",
            "services[0].read_timeout: 2147483647 is out of range (1..2147483646)",
            "services[0].write_timeout: expected an integer, got 1.5",
        )

    def test_retries(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, retries: 32768}\n",
            "services[0].retries: 32768 is out of range (0..32767)",
        )

    def test_enabledType(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, enabled: 'no'}\n",
            'services[0].enabled: expected a boolean, got "no"',
        )

    def test_tags(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example, tags: [ok, 'a,b', 3]}\n",
            'services[0].tags[1]: invalid tag "a,b": must not contain "," or "/"',
            "services[0].tags[2]: expected a non-empty string, got 3",
        )

    def test_name(self) -> None:
        self.assertErrors(
            "services:\n- {name: 'my service', host: a.example}\n",
            'services[0].name: invalid value "my service": the only accepted ascii characters are'
            " alphanumerics or ., -, _, and ~",
        )

    def test_yamlBooleanName(self) -> None:
        """
        An unquoted C{on}/C{off}/C{yes}/C{no} is a YAML boolean: the message
        says to quote it.
        """
        self.assertErrors(
            "services:\n- {name: off, host: a.example}\n",
            "services[0].name: expected a string, got false (YAML reads yes/no/on/off unquoted as booleans:"
            " quote it)",
        )

    def test_id(self) -> None:
        self.assertErrors(
            "services:\n- {id: '1234', host: a.example}\n", 'services[0].id: "1234" is not a valid UUID'
        )

    def test_duplicateName(self) -> None:
        self.assertErrors(
            "services:\n- {name: a, host: a.example}\n- {name: a, host: b.example}\n",
            'services[1].name: duplicate service name "a" (also services[0])',
        )

    def test_duplicateId(self) -> None:
        self.assertErrors(
            "services:\n- {id: 0b4ae4a1-8e52-4b7b-9d4e-fe1f9e1c3a11, host: a.example}\n"
            "- {id: 0B4AE4A1-8E52-4B7B-9D4E-FE1F9E1C3A11, host: b.example}\n",
            'services[1].id: duplicate service id "0b4ae4a1-8e52-4b7b-9d4e-fe1f9e1c3a11" (also services[0])',
        )


class RouteErrorTests(LoaderTestMixin, SynchronousTestCase):
    """
    Mistakes in routes.
    """

    def nested(self, route: str) -> str:
        return "services:\n- name: s\n  host: s.example\n  routes:\n  - %s\n" % (route,)

    def test_pathStart(self) -> None:
        self.assertErrors(
            self.nested("{name: ok, paths: [/ok]}\n  - {name: bad, paths: [api]}"),
            'services[0].routes[1].paths[0]: "api" must start with "/" or "~"',
        )

    def test_pathCharacters(self) -> None:
        self.assertErrors(
            self.nested("{paths: ['/a b', '/c%zz']}"),
            'services[0].routes[0].paths[0]: "/a b" has a space, a control character or a bad percent-encoding',
            'services[0].routes[0].paths[1]: "/c%zz" has a space, a control character or a bad percent-encoding',
        )

    def test_regexPath(self) -> None:
        self.assertErrors(
            self.nested("{paths: ['~/users/(?<id>\\d+', '~/ok/(?<id>\\d+)$']}"),
            'services[0].routes[0].paths[0]: invalid regex "~/users/(?<id>\\\\d+": missing ), unterminated'
            " subpattern at position 7",
        )

    def test_wildcardTwice(self) -> None:
        self.assertErrors(
            self.nested("{hosts: ['*.example.*']}"),
            'services[0].routes[0].hosts[0]: invalid wildcard "*.example.*": must have at most one wildcard',
        )

    def test_wildcardInside(self) -> None:
        self.assertErrors(
            self.nested("{hosts: ['api.*.com', 'a*.example.com']}"),
            'services[0].routes[0].hosts[0]: invalid wildcard "api.*.com": must be placed at leftmost or rightmost'
            " label",
            'services[0].routes[0].hosts[1]: invalid wildcard "a*.example.com": must be placed at leftmost or'
            " rightmost label",
        )

    def test_hostPort(self) -> None:
        self.assertErrors(
            self.nested("{hosts: ['a.example:0', 'b.example:x']}"),
            'services[0].routes[0].hosts[0]: invalid port in "a.example:0" (1..65535)',
            'services[0].routes[0].hosts[1]: invalid port in "b.example:x" (1..65535)',
        )

    def test_hostInvalid(self) -> None:
        self.assertErrors(self.nested("{hosts: ['a_b c']}"), 'services[0].routes[0].hosts[0]: invalid host "a_b c"')

    def test_method(self) -> None:
        self.assertErrors(
            self.nested("{methods: [get, GET, 'PO ST']}"),
            'services[0].routes[0].methods[0]: invalid method "get": methods are upper-case letters, e.g. "GET"',
            'services[0].routes[0].methods[2]: invalid method "PO ST": methods are upper-case letters, e.g. "GET"',
        )

    def test_headersHost(self) -> None:
        """
        The C{Host} header is matched through C{hosts}, as in Kong.
        """
        self.assertErrors(
            self.nested("{headers: {Host: [a.example]}}"),
            'services[0].routes[0].headers.Host: cannot contain "host" header, which must be specified in "hosts"',
        )

    def test_headersShape(self) -> None:
        self.assertErrors(
            self.nested("{headers: {x-a: b, x-b: [], 'x c': [d], x-d: [1]}}"),
            'services[0].routes[0].headers.x-a: expected a non-empty list of strings, got "b"',
            "services[0].routes[0].headers.x-b: expected a non-empty list of strings, got a list",
            'services[0].routes[0].headers.x c: invalid header name "x c"',
            "services[0].routes[0].headers.x-d[0]: expected a string, got 1",
        )

    def test_headersNotMapping(self) -> None:
        self.assertErrors(
            self.nested("{headers: [x-a]}"),
            "services[0].routes[0].headers: expected a mapping of header names to lists of values, got a list",
        )

    def test_headerRegex(self) -> None:
        self.assertErrors(
            self.nested("{headers: {x-a: ['~*[']}}"),
            'services[0].routes[0].headers.x-a[0]: invalid regex "~*[": unterminated character set at position 0',
        )

    def test_noMatchingField(self) -> None:
        """
        An HTTP route must set at least one of methods, hosts, headers,
        paths.
        """
        self.assertErrors(
            self.nested("{name: r, strip_path: false}"),
            'services[0].routes[0]: must set one of "methods", "hosts", "headers", "paths"',
        )

    def test_protocols(self) -> None:
        self.assertErrors(
            self.nested("{paths: [/], protocols: [http, grpc]}"),
            'services[0].routes[0].protocols[1]: "grpc" is not supported (expected "http" or "https")',
        )

    def test_protocolsEmpty(self) -> None:
        self.assertErrors(
            self.nested("{paths: [/], protocols: []}"),
            'services[0].routes[0].protocols: must have at least one of "http", "https"',
        )

    def test_types(self) -> None:
        self.assertErrors(
            self.nested("{paths: /a, strip_path: 1, preserve_host: 'yes', regex_priority: high}"),
            'services[0].routes[0].paths: expected a list, got "/a"',
            "services[0].routes[0].strip_path: expected a boolean, got 1",
            'services[0].routes[0].preserve_host: expected a boolean, got "yes"',
            'services[0].routes[0].regex_priority: expected an integer, got "high"',
        )

    def test_unknownField(self) -> None:
        self.assertErrors(
            self.nested("{paths: [/], snis: [a.example]}"),
            "services[0].routes[0].snis: unknown field",
        )

    def test_nestedWithService(self) -> None:
        """
        A nested route belongs to its service and cannot name another.
        """
        self.assertErrors(
            self.nested("{paths: [/], service: s}"),
            "services[0].routes[0].service: unknown field (a route nested in a service belongs to it)",
        )

    def test_topLevelWithoutService(self) -> None:
        self.assertErrors("routes:\n- {name: r, paths: [/]}\n", "routes[0].service: required field missing")

    def test_danglingService(self) -> None:
        self.assertErrors(
            "routes:\n- {name: r, paths: [/], service: nope}\n"
            "- {paths: [/x], service: {id: 0b4ae4a1-8e52-4b7b-9d4e-fe1f9e1c3a11}}\n",
            'routes[0].service: no such service: "nope"',
            'routes[1].service: no such service: "0b4ae4a1-8e52-4b7b-9d4e-fe1f9e1c3a11"',
        )

    def test_serviceReferenceShape(self) -> None:
        self.assertErrors(
            "services:\n- {name: s, host: s.example}\nroutes:\n- {paths: [/], service: {name: s, id: x}}\n",
            "routes[0].service: expected a name, an id, {name: ...} or {id: ...}",
        )

    def test_duplicateName(self) -> None:
        """
        Route names are unique across nested and top-level routes.
        """
        self.assertErrors(
            self.nested("{name: r, paths: [/]}") + "routes:\n- {name: r, paths: [/x], service: s}\n",
            'routes[0].name: duplicate route name "r" (also services[0].routes[0])',
        )


class FilterChainErrorTests(LoaderTestMixin, SynchronousTestCase):
    """
    Mistakes in filter chains and their filters.
    """

    SERVICE = "services:\n- name: s\n  host: s.example\n  routes:\n  - {name: r, paths: [/]}\n"

    def test_unknownFilter(self) -> None:
        """
        A filter that is not installed is Kong's "no such filter".
        """
        self.assertErrors(
            self.SERVICE + "filter_chains:\n- service: s\n  filters:\n  - name: raw\n  - name: foo\n",
            'filter_chains[0].filters[1].name: no such filter: "foo"',
        )

    def test_schemaViolation(self) -> None:
        """
        A config that breaks the filter's schema gives the schema's message
        at the field's path.
        """
        self.assertErrors(
            self.SERVICE + "filter_chains:\n- service: s\n  filters:\n  - name: raw\n"
            "  - {name: rate-limiting, config: {minute: -1}}\n",
            "filter_chains[0].filters[1].config.minute: -1 is less than the minimum of 0",
        )

    def test_schemaViolationNested(self) -> None:
        self.assertErrors(
            "services:\n- name: s\n  host: s.example\n  routes:\n  - name: r\n    paths: [/]\n"
            "    filter_chains:\n    - filters:\n      - {name: greeting, config: {my_greeting: 3, colour: red}}\n",
            "services[0].routes[0].filter_chains[0].filters[0].config: Additional properties are not allowed"
            " ('colour' was unexpected)",
            "services[0].routes[0].filter_chains[0].filters[0].config.my_greeting: 3 is not of type 'string'",
        )

    def test_noSchemaNeedsString(self) -> None:
        """
        A filter without a schema takes a string config.
        """
        self.assertErrors(
            self.SERVICE + "filter_chains:\n- service: s\n  filters:\n  - {name: raw, config: {a: 1}}\n",
            "filter_chains[0].filters[0].config: {'a': 1} is not of type 'string', 'null'",
        )

    def test_noFilters(self) -> None:
        self.assertErrors(
            self.SERVICE + "filter_chains:\n- {service: s, filters: []}\n- {route: r}\n",
            "filter_chains[0].filters: must have at least one filter",
            "filter_chains[1].filters: required field missing (at least one filter)",
        )

    def test_serviceOrRoute(self) -> None:
        """
        A top-level chain names exactly one of a service and a route.
        """
        self.assertErrors(
            self.SERVICE
            + "filter_chains:\n- {filters: [{name: raw}]}\n- {service: s, route: r, filters: [{name: raw}]}\n",
            'filter_chains[0]: must set exactly one of "service", "route"',
            'filter_chains[1]: must set exactly one of "service", "route"',
        )

    def test_dangling(self) -> None:
        self.assertErrors(
            self.SERVICE
            + "filter_chains:\n- {service: x, filters: [{name: raw}]}\n- {route: y, filters: [{name: raw}]}\n",
            'filter_chains[0].service: no such service: "x"',
            'filter_chains[1].route: no such route: "y"',
        )

    def test_onePerService(self) -> None:
        self.assertErrors(
            "services:\n- name: s\n  host: s.example\n  filter_chains:\n  - filters: [{name: raw}]\n"
            "filter_chains:\n- {service: s, filters: [{name: raw}]}\n",
            'filter_chains[0]: service "s" already has a filter chain (services[0].filter_chains[0]);'
            " only one chain per service",
        )

    def test_onePerRoute(self) -> None:
        self.assertErrors(
            self.SERVICE
            + "filter_chains:\n- {route: r, filters: [{name: raw}]}\n- {route: r, filters: [{name: raw}]}\n",
            'filter_chains[1]: route "r" already has a filter chain (filter_chains[0]); only one chain per route',
        )

    def test_nestedWithReference(self) -> None:
        self.assertErrors(
            "services:\n- name: s\n  host: s.example\n  filter_chains:\n  - {service: s, filters: [{name: raw}]}\n",
            "services[0].filter_chains[0].service: unknown field (a nested filter chain belongs to its service)",
        )

    def test_duplicateName(self) -> None:
        self.assertErrors(
            self.SERVICE + "filter_chains:\n- {name: c, service: s, filters: [{name: raw}]}\n"
            "- {name: c, route: r, filters: [{name: raw}]}\n",
            'filter_chains[1].name: duplicate filter chain name "c" (also filter_chains[0])',
        )

    def test_filterEntryFields(self) -> None:
        self.assertErrors(
            self.SERVICE + "filter_chains:\n- service: s\n  filters:\n"
            "  - {config: x}\n"
            "  - {name: raw, enabled: 1, colour: red}\n"
            "  - {name: raw, failure_policy: maybe, root_id: 3}\n"
            "  - {name: raw, env: {A: 1, 'B=C': x}}\n"
            "  - {name: raw, env: [A]}\n",
            "filter_chains[0].filters[0].name: required field missing",
            "filter_chains[0].filters[1].colour: unknown field",
            "filter_chains[0].filters[1].enabled: expected a boolean, got 1",
            "filter_chains[0].filters[2].root_id: expected a string, got 3",
            'filter_chains[0].filters[2].failure_policy: "maybe" is not one of "fail_closed", "fail_open"',
            "filter_chains[0].filters[3].env.A: expected a string (quote it), got 1",
            'filter_chains[0].filters[3].env.B=C: invalid environment variable name "B=C"',
            "filter_chains[0].filters[4].env: expected a mapping of names to strings, got a list",
        )

    def test_chainFields(self) -> None:
        self.assertErrors(
            self.SERVICE + "filter_chains:\n- {service: s, enabled: 0, tags: x, filters: [{name: raw}], order: 1}\n",
            "filter_chains[0].order: unknown field",
            "filter_chains[0].enabled: expected a boolean, got 0",
            'filter_chains[0].tags: expected a list, got "x"',
        )
