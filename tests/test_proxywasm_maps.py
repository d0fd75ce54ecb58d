"""
Header map hostcalls (C{proxy_get/set_header_map_*}) through the
C{hostcalls} test filter, on both runtimes: what filters read, and what
their changes do to the request the upstream gets and the response the
client gets.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.proxywasm_harness import RuntimeMixin, bothRuntimes, hostcalls, report, routeConfig
from twistgate.proxywasm.constants import Status
from twistgate.proxywasm.maps import HeaderMap


class MapsMixin(RuntimeMixin):
    """
    Header maps, pseudo-headers and validation.
    """

    def send(self, config, **request):
        harness = self.harness(routeConfig(hostcalls(config)))
        return harness, self.respond(harness, **request)

    def test_requestMapPseudoHeadersFirst(self):
        """
        The request map starts with C{:path}, C{:method}, C{:scheme},
        C{:authority}, then the headers in arrival order.
        """
        _, result = self.send("request_headers get_headers request; response_headers report_header",
                             path=b"/p?x=1", headers=[(b"X-A", b"1"), (b"x-b", b"2")])
        self.assertEqual(report(result), [
            "get_headers request=:path:/p?x=1,:method:GET,:scheme:http,:authority:gateway.test,"
            "host:gateway.test,x-a:1,x-b:2"])

    def test_lookupCaseInsensitive(self):
        """
        Lookups ignore case; a missing header is NOT_FOUND (1).
        """
        _, result = self.send("request_headers get_header request X-A; request_headers get_header request :method;"
                             " request_headers get_header request nope; response_headers report_header",
                             headers=[(b"x-a", b"one")])
        self.assertEqual(report(result), ["get_header request=one", "get_header request=GET",
                                          "get_header request=status:1"])

    def test_requestChangesReachUpstream(self):
        """
        Added, replaced and removed request headers, and a rewritten
        C{:path} and C{:method}, are what the upstream receives.
        """
        harness, result = self.send(
            "request_headers add_header request x-added yes; request_headers replace_header request x-a two;"
            " request_headers remove_header request x-gone; request_headers replace_header request :path /new?q=1;"
            " request_headers replace_header request :method POST",
            headers=[(b"x-a", b"one"), (b"x-gone", b"1")])
        self.assertEqual(result.status, 200)
        seen = dict(harness.upstream.seenHeaders[0])
        self.assertEqual(seen[b"x-added"], b"yes")
        self.assertEqual(seen[b"x-a"], b"two")
        self.assertNotIn(b"x-gone", seen)
        self.assertEqual(harness.upstream.seenPaths[0], b"/new?q=1")
        self.assertEqual(harness.upstream.seen[0].method, b"POST")

    def test_setPairsReplacesMap(self):
        """
        C{proxy_set_header_map_pairs} replaces the whole map.
        """
        harness, _ = self.send("request_headers set_headers request a=1,b=2", headers=[(b"x-a", b"1")])
        self.assertEqual(harness.upstream.seenHeaders[0], [(b"a", b"1"), (b"b", b"2")])

    def test_responseChangesReachClient(self):
        """
        Response header changes and C{:status} reach the client; the
        response map starts with C{:status}.
        """
        _, result = self.send(
            "response_headers get_headers response; response_headers add_header response x-resp 1;"
            " response_headers replace_header response :status 201; response_headers report_header")
        self.assertEqual(result.status, 201)
        self.assertEqual(result.header(b"x-resp"), b"1")
        self.assertEqual(report(result)[0], "get_headers response=:status:200,content-type:text/plain")

    def test_invalidHeadersRefused(self):
        """
        Names that are not tokens and values with CR, LF or NUL are refused
        with BAD_ARGUMENT (2) and never reach the wire.
        """
        harness, result = self.send(
            "request_headers add_header request x-bad a\\r\\nInjected:\\s1;"
            " request_headers add_header request bad\\sname 1;"
            " request_headers add_header request x-nul a\\0b;"
            " request_headers replace_header request :status 200;"
            " response_headers add_header response x-crlf a\\nb;"
            " response_headers replace_header response :status 9999; response_headers report_header")
        self.assertEqual(report(result), ["add_header request=status:2"] * 3 +
                         ["replace_header request=status:2", "add_header response=status:2",
                          "replace_header response=status:2"])
        names = [name for name, _ in harness.upstream.seenHeaders[0]]
        self.assertEqual(names, [b"host"])
        self.assertEqual(result.status, 200)
        self.assertNotIn(b"x-crlf", [name for name, _ in result.headers])

    def test_malformedPairs(self):
        """
        Malformed pair bytes are BAD_ARGUMENT, the map unchanged.
        """
        harness, result = self.send("request_headers bad_pairs; response_headers report_header",
                                   headers=[(b"x-a", b"1")])
        self.assertEqual(report(result), ["bad_pairs=status:2"])
        self.assertIn((b"x-a", b"1"), harness.upstream.seenHeaders[0])

    def test_unknownMapType(self):
        """
        An unknown map type is BAD_ARGUMENT, as are the gRPC maps.
        """
        _, result = self.send("request_headers bad_enum get_header; request_headers get_header 4 x;"
                             " response_headers report_header")
        self.assertEqual(report(result), ["bad_enum get_header=status:2", "get_header 4=status:2"])

    def test_trailerMapsEmpty(self):
        """
        Trailer maps exist (empty: the gateway keeps no trailers).
        """
        _, result = self.send("request_headers header_size request_trailers;"
                             " response_headers header_size response_trailers; response_headers report_header")
        self.assertEqual(report(result), ["header_size request_trailers=0", "header_size response_trailers=0"])


bothRuntimes(MapsMixin, globals())


class HeaderMapReplaceTests(SynchronousTestCase):
    """
    L{HeaderMap.replace}, on the live list of pairs.
    """

    def test_replaceKeepsPositionDropsRepeats(self):
        """
        The first header of the name (any case) takes the value in its
        place; later ones of the name go.
        """
        pairs = [(b"a", b"1"), (b"X-Name", b"old"), (b"b", b"2"), (b"x-name", b"again")]
        self.assertEqual(HeaderMap(pairs).replace(b"X-NAME", b"new"), Status.OK)
        self.assertEqual(pairs, [(b"a", b"1"), (b"x-name", b"new"), (b"b", b"2")])

    def test_replaceAbsentAppends(self):
        """
        An absent header is added at the end.
        """
        pairs = [(b"a", b"1")]
        self.assertEqual(HeaderMap(pairs).replace(b"x-new", b"v"), Status.OK)
        self.assertEqual(pairs, [(b"a", b"1"), (b"x-new", b"v")])

    def test_replaceInvalid(self):
        """
        A name that is not a token or a value with a line break changes
        nothing.
        """
        pairs = [(b"a", b"1")]
        self.assertEqual(HeaderMap(pairs).replace(b"bad name", b"v"), Status.BAD_ARGUMENT)
        self.assertEqual(HeaderMap(pairs).replace(b"a", b"x\r\ny"), Status.BAD_ARGUMENT)
        self.assertEqual(pairs, [(b"a", b"1")])
