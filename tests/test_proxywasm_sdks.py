"""
Filters built with third-party SDKs and toolchains, unmodified, on both
runtimes: the AssemblyScript greeting (@solo-io/proxy-runtime), the Go
greeting and rate limiter (Go wasip1), and the Rust greeting.
"""

from tests.proxywasm_harness import RuntimeMixin, bothRuntimes, routeConfig

GREETING = "Hello from Kong using WebAssembly!"


def greeting(name: str) -> str:
    return "- name: {}\n  config:\n    my_greeting: {}\n".format(name, GREETING)


class SdkFiltersMixin(RuntimeMixin):
    """
    The seed walkthrough with each greeting filter, and Kong's rate limiter.
    """

    def assertGreets(self, name):
        harness = self.harness(routeConfig(greeting(name)))
        for _ in range(2):
            result = self.respond(harness)
            self.assertEqual(result.status, 200)
            self.assertEqual(result.header(b"x-greeting"), GREETING.encode())

    def test_assemblyScript(self):
        """
        The AssemblyScript SDK picks its root context through
        C{plugin_root_id} and reads its configuration.
        """
        self.assertGreets("greeting")

    def test_go(self):
        self.assertGreets("greeting-go")

    def test_rust(self):
        self.assertGreets("greeting-rust")

    def test_goRateLimiting(self):
        """
        The Go rate limiter counts in shared data: the third request in a
        minute with C{minute: 2} gets 429 and the limit headers.
        """
        harness = self.harness(routeConfig("- name: rate-limiting-go\n  config:\n    minute: 2\n"))
        results = [self.respond(harness) for _ in range(3)]
        self.assertEqual([r.status for r in results], [200, 200, 429])
        self.assertEqual([r.header(b"x-ratelimit-remaining-minute") for r in results], [b"1", b"0", b"0"])
        self.assertEqual(results[0].header(b"x-ratelimit-limit-minute"), b"2")
        self.assertEqual(len(harness.upstream.seen), 2)


bothRuntimes(SdkFiltersMixin, globals())
