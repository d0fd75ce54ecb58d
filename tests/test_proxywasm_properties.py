"""
Properties (C{proxy_get_property}, C{proxy_set_property}) through the
C{hostcalls} test filter on both runtimes: Envoy-style attributes, Kong's
C{kong.*} and C{ngx.*}, and the plugin properties.
"""

from tests.proxywasm_harness import (
    RuntimeMixin,
    bothRuntimes,
    entry,
    hostcalls,
    report,
    routeConfig,
)

SHOW = "; response_headers report_header"


class PropertiesMixin(RuntimeMixin):
    """
    What filters read and write as properties.
    """

    def values(self, paths, **request):
        config = "; ".join("request_headers get_property " + path for path in paths) + SHOW
        harness = self.harness(routeConfig(hostcalls(config)))
        result = self.respond(harness, **request)
        return harness, [item.split("=", 1)[1] for item in report(result)]

    def test_requestAttributes(self):
        """
        C{request.*} answers from the request as received.
        """
        _, values = self.values(["request.path", "request.url_path", "request.method", "request.scheme",
                                 "request.query", "request.host", "request.headers.x-a"],
                                path=b"/p?x=1", headers=[(b"x-a", b"v")])
        self.assertEqual(values, ["/p?x=1", "/p", "GET", "http", "x=1", "gateway.test", "v"])

    def test_connectionAttributes(self):
        """
        C{source.*} and C{destination.*} are the client and listener
        addresses; ports are decimal strings.
        """
        _, values = self.values(["source.address", "source.port", "destination.address",
                                 "destination.port", "connection.id"])
        self.assertEqual(values, ["127.0.0.1", "40000", "127.0.0.1", "8000", "7"])

    def test_kongEntities(self):
        """
        C{kong.route_id}, C{kong.service_id} and their names identify the
        matched route and service.
        """
        harness, values = self.values(["kong.route_id", "kong.service_id", "kong.route_name",
                                       "kong.service_name"])
        self.assertEqual(values, [harness.config.routes[0].id, harness.config.services[0].id, "r", "svc"])

    def test_ngxVariables(self):
        """
        C{ngx.<variable>} answers the nginx variables Kong filters read.
        """
        _, values = self.values(["ngx.remote_addr", "ngx.remote_port", "ngx.request_uri", "ngx.uri",
                                 "ngx.args", "ngx.host", "ngx.scheme", "ngx.request_method",
                                 "ngx.server_port", "ngx.http_x_a", "ngx.arg_x"],
                                path=b"/p?x=1", headers=[(b"x-a", b"v")])
        self.assertEqual(values, ["127.0.0.1", "40000", "/p?x=1", "/p", "x=1", "gateway.test", "http",
                                  "GET", "8000", "v", "1"])

    def test_pluginProperties(self):
        """
        C{plugin_name} is the filter name; C{plugin_root_id} is the entry's
        root_id, or the filter name.
        """
        config = "request_headers get_property plugin_name; request_headers get_property plugin_root_id" + SHOW
        harness = self.harness(routeConfig(
            entry("hostcalls", config, extra="root_id: my-root"), hostcalls(config.replace(
                "report_header", "report_header x-second"))))
        result = self.respond(harness)
        self.assertEqual(report(result), ["get_property plugin_name=hostcalls",
                                          "get_property plugin_root_id=my-root"])
        self.assertEqual(report(result, b"x-second"), ["get_property plugin_name=hostcalls",
                                                       "get_property plugin_root_id=hostcalls"])

    def test_unknownNotFound(self):
        """
        An unknown property is NOT_FOUND (1); request properties are
        NOT_FOUND outside a request.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure get_property request.path; configure get_property plugin_name;"
            " request_headers get_property nope; response_headers root_report" + SHOW)))
        self.assertEqual(report(self.respond(harness)), [
            "get_property nope=status:1", "get_property request.path=status:1",
            "get_property plugin_name=hostcalls"])

    def test_responseAttributes(self):
        """
        C{response.code} and C{response.headers.*} are readable from the
        response steps.
        """
        harness = self.harness(routeConfig(hostcalls(
            "response_headers get_property response.code;"
            " response_headers get_property response.headers.content-type" + SHOW)))
        self.assertEqual(report(self.respond(harness)), ["get_property response.code=200",
                                                         "get_property response.headers.content-type=text/plain"])

    def test_setProperties(self):
        """
        C{kong.*} values set by a filter read back in the same request and
        are seen by later filters of that request, not by the root context;
        read-only properties answer INTERNAL_FAILURE (10).
        """
        harness = self.harness(routeConfig(
            hostcalls("configure get_property kong.foo; request_headers set_property kong.foo bar;"
                      " request_headers get_property kong.foo; request_headers set_property request.path /x;"
                      " response_headers root_report" + SHOW),
            hostcalls("request_headers get_property kong.foo; response_headers report_header x-second")))
        result = self.respond(harness)
        self.assertEqual(report(result), [
            "set_property kong.foo=ok", "get_property kong.foo=bar", "set_property request.path=status:10",
            "get_property kong.foo=status:1"])
        self.assertEqual(report(result, b"x-second"), ["get_property kong.foo=bar"])

    def test_setQuery(self):
        """
        C{request.query} is writable and changes what the upstream gets.
        """
        harness = self.harness(routeConfig(hostcalls("request_headers set_property request.query a=2")))
        self.respond(harness, path=b"/p?x=1")
        self.assertEqual(harness.upstream.seenPaths[0], b"/p?a=2")


bothRuntimes(PropertiesMixin, globals())
