"""
Filters behind the real proxy resource over in-memory HTTP (StubTreq to
L{twistgate.web.proxy.ProxyResource}, the echo upstream through
RequestTraversalAgent), on both runtimes: what the client and the upstream
see on the wire.
"""

import json

from treq.testing import RequestTraversalAgent

from tests.proxywasm_harness import (
    CallTarget,
    HttpHarness,
    RuntimeMixin,
    bothRuntimes,
    hostcalls,
    routeConfig,
)

GREETING = "- name: greeting\n  config:\n    my_greeting: Hello from Kong using WebAssembly!\n"


class HttpMixin(RuntimeMixin):
    """
    Hostcall groups observed over HTTP.
    """

    def http(self, *entries, **kwargs):
        return HttpHarness(self, self.runtimeName, routeConfig(*entries), **kwargs)

    def header(self, response, name):
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    def test_seedWalkthrough(self):
        """
        The AssemblyScript greeting filter adds C{X-Greeting}; the echo
        upstream answers as usual.
        """
        response, body = self.http(GREETING).request("GET", "/anything")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "X-Greeting"), "Hello from Kong using WebAssembly!")
        self.assertEqual(json.loads(body)["path"], "/anything")

    def test_requestHeadersReachUpstream(self):
        """
        Headers added and removed in on_request_headers are what the
        upstream receives; C{:path} rewrites the upstream path.
        """
        harness = self.http(hostcalls(
            "request_headers add_header request x-added yes; request_headers remove_header request x-gone;"
            " request_headers replace_header request :path /rewritten?q=1"))
        response, body = harness.request("GET", "/orig", headers={"x-gone": "1"})
        echoed = json.loads(body)
        self.assertEqual(echoed["uri"], "/rewritten?q=1")
        self.assertEqual(echoed["headers"]["x-added"], "yes")
        self.assertNotIn("x-gone", echoed["headers"])

    def test_requestBodyReplaced(self):
        """
        A request body replaced by a filter reaches the upstream whole, with
        its new length.
        """
        harness = self.http(hostcalls("request_body set_body request 0 5 REPLACED"))
        response, body = harness.request("POST", "/post", data=b"hello world")
        echoed = json.loads(body)
        self.assertEqual(echoed["body"], "REPLACED world")
        self.assertEqual(echoed["headers"]["content-length"], str(len("REPLACED world")))

    def test_responseBodyReplaced(self):
        """
        A response body a filter buffers and replaces reaches the client
        with a correct length.
        """
        harness = self.http(hostcalls(
            "response_body return pause; response_body set_body response 0 100000 short"))
        response, body = harness.request("GET", "/anything")
        self.assertEqual(body, b"short")
        length = self.header(response, "Content-Length")
        self.assertIn(length, (None, "5"))

    def test_localResponse(self):
        """
        A local response reaches the client with status, reason and body.
        """
        harness = self.http(hostcalls("request_headers local_response 418 Teapot short\\sand\\sstout x-t=1"))
        response, body = harness.request("GET", "/anything")
        self.assertEqual((response.code, body), (418, b"short and stout"))
        self.assertEqual(self.header(response, "x-t"), "1")

    def test_dispatch(self):
        """
        A call's response body, copied into a request header, reaches the
        upstream after the pause.
        """
        target = CallTarget()
        harness = self.http(hostcalls(
            "request_headers dispatch call.test GET /echo/x; request_headers return pause;"
            " http_call_response add_header request x-called yes"),
            callAgent=RequestTraversalAgent(target))
        response, body = harness.request("GET", "/anything")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["headers"]["x-called"], "yes")
        self.assertEqual(target.requests[0][1], b"/echo/x")

    def test_trap(self):
        """
        A trap answers 500 with Kong's error body.
        """
        harness = self.http(hostcalls("request_headers trap http-boom"))
        response, body = harness.request("GET", "/anything")
        self.assertEqual(response.code, 500)
        self.assertEqual(json.loads(body), {"message": "An unexpected error occurred"})


bothRuntimes(HttpMixin, globals())
