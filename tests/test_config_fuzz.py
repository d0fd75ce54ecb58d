"""
Property-based tests of the configuration loader: random mutations of valid
C{kong.yml} files (deleted keys, changed types, unknown keys, strange
strings and numbers, deep nesting, aliases, duplicated entities and lines,
edited text) always give either a configuration that is safe to serve or a
L{ConfigError} whose every line is one located message; never another
exception. The same through C{POST /config} of a running gateway.
"""

import copy
import dataclasses
import json
import os

import yaml
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twistgate.config.errors import ConfigError
from twistgate.config.filters import FilterFile, discoverFilters
from twistgate.config.loader import loadConfigText
from twistgate.config.model import GatewayConfig

from tests.e2e import REPOSITORY, fetch, startGateway

SOURCE = "fuzz.yml"
BASES = {
    "full": os.path.join(REPOSITORY, "tests", "data", "full.yml"),
    "walkthrough": os.path.join(REPOSITORY, "config", "kong.yml"),
}


def installedFilters():
    """
    @return: the repository's filters, plus C{raw}: a filter without a
        schema that C{tests/data/full.yml} names.
    """
    filters = dict(discoverFilters(os.path.join(REPOSITORY, "filters")))
    filters["raw"] = FilterFile("raw", "raw.wasm", "0" * 64, 1, None, ())
    return filters


FILTERS = installedFilters()


def readBase(name: str) -> str:
    with open(BASES[name], encoding="utf-8") as baseFile:
        return baseFile.read()


class RawScalar:
    """
    A scalar written into the YAML text as is (e.g. an integer of 5000
    digits, which Python will not convert to text).
    """

    def __init__(self, text: str, tag: str) -> None:
        self.text = text
        self.tag = tag


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(RawScalar, lambda dumper, scalar: dumper.represent_scalar(scalar.tag, scalar.text))

NASTY_STRINGS = [
    "\ud83d\ude00", "\ud83d", "\udfff", "\x00", "a\x00b", "\u2028", "\u0085", "a\r\nInjected: 1", "\n", "\t",
    "", " ", "~", "~(", "~*[", "/a b", "/%zz", "*.*.example", "[::1]", "host:0", "host:99999", "1.0",
    "yes", "null", "..", "\ufeff", "\U0010ffff", "x" * 3000, "${{env}}", "{{", "%s%d", "\\", "\"", "'",
]

NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63, -2**63 - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([RawScalar("1" * 5000, "tag:yaml.org,2002:int"), RawScalar("-" + "9" * 4400, "tag:yaml.org,2002:int"),
                     RawScalar("1.0e+400", "tag:yaml.org,2002:float"), RawScalar("0x" + "f" * 4000, "tag:yaml.org,2002:int"),
                     RawScalar("1_0" * 2000, "tag:yaml.org,2002:int")]),
)

TEXT = st.one_of(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20),
                 st.sampled_from(NASTY_STRINGS))

SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.binary(max_size=8))

VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(TEXT, st.integers(), st.booleans()), children, max_size=4)),
    max_leaves=12,
)

KNOWN_KEYS = ["_format_version", "services", "routes", "filter_chains", "name", "id", "url", "protocol", "host",
              "port", "path", "paths", "hosts", "methods", "headers", "filters", "config", "enabled", "root_id",
              "failure_policy", "env", "service", "route", "tags", "strip_path", "preserve_host",
              "regex_priority", "protocols", "connect_timeout", "read_timeout", "retries"]
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), TEXT)


def slots(document):
    """
    @return: every C{(container, key)} in C{document}; a collection used
        in several places (an alias) is listed once.
    """
    found = []
    pending, seen = [document], set()
    while pending:
        container = pending.pop()
        if id(container) in seen:
            continue
        seen.add(id(container))
        if isinstance(container, dict):
            keys = list(container)
        elif isinstance(container, list):
            keys = list(range(len(container)))
        else:
            continue
        for key in keys:
            found.append((container, key))
            pending.append(container[key])
    return found


def expandsBeyond(value, limit: int) -> bool:
    """
    @return: whether C{value} holds more than C{limit} values once shared
        parts (YAML aliases) are counted each time they are used.
    """
    sizes, visiting = {}, set()
    stack = [value]
    while stack:
        item = stack[-1]
        if not isinstance(item, (dict, list)) or id(item) in sizes:
            stack.pop()
            continue
        children = [child for child in (item.values() if isinstance(item, dict) else item)
                    if isinstance(child, (dict, list)) and id(child) not in sizes and child is not item]
        if children and id(item) not in visiting:
            visiting.add(id(item))
            stack.extend(children)
            continue
        visiting.discard(id(item))
        stack.pop()
        total = 1
        for child in (item.values() if isinstance(item, dict) else item):
            total += sizes.get(id(child), 0) if isinstance(child, (dict, list)) else 1
        sizes[id(item)] = total
    return sizes.get(id(value), 1) > limit


def nested(value, depth: int, data):
    for _ in range(depth):
        value = [value] if data.draw(st.booleans(), label="list level") else {"k": value}
    return value


def mutateDocument(document, data):
    """
    Apply one random structural mutation to C{document} (in place where it
    can) and return the result.
    """
    places = slots(document)
    if not places:
        return data.draw(VALUES, label="replacement document")
    container, key = data.draw(st.sampled_from(places), label="slot")
    value = container[key]
    operation = data.draw(st.sampled_from(
        ["delete", "replace", "unknown key", "change type", "duplicate", "nest", "alias", "self alias"]),
        label="operation")
    if operation == "delete":
        del container[key]
    elif operation == "replace":
        container[key] = data.draw(VALUES, label="value")
    elif operation == "unknown key":
        target = value if isinstance(value, dict) else container if isinstance(container, dict) else None
        if target is not None:
            target[data.draw(KEYS, label="new key")] = data.draw(VALUES, label="new value")
    elif operation == "change type":
        changes = [[value], {"value": value}, None, 1, True]
        if not expandsBeyond(value, 1000):
            changes.append(str(value))
            try:
                changes.append(json.dumps(value, default=repr))
            except ValueError:
                pass
        container[key] = data.draw(st.sampled_from(changes), label="changed")
    elif operation == "duplicate":
        try:
            if isinstance(value, list) and value:
                value.append(copy.deepcopy(data.draw(st.sampled_from(value), label="duplicated item")))
            elif isinstance(container, list):
                container.append(copy.deepcopy(value))
        except RecursionError:
            pass
    elif operation == "nest":
        container[key] = nested(value, data.draw(st.integers(1, 150), label="depth"), data)
    elif operation == "alias":
        # Billion laughs: every level refers to the one below ten times.
        laughs = ["lol"]
        for _ in range(data.draw(st.integers(1, 12), label="alias levels")):
            laughs = [laughs] * 10
        container[key] = laughs
    elif operation == "self alias":
        loop = [value]
        loop.append(loop)
        container[key] = loop
    return document


def editText(text: str, data) -> str:
    """
    Apply one random edit to the YAML text itself.
    """
    lines = text.splitlines(keepends=True)
    operation = data.draw(st.sampled_from(["insert", "delete", "duplicate line", "indent", "truncate"]),
                          label="text edit")
    position = data.draw(st.integers(0, len(text)), label="position")
    if operation == "insert":
        return text[:position] + data.draw(st.one_of(TEXT, st.sampled_from(
            [":", "- ", "&a ", "*a", "!!binary ", "!!python/object:os.system ", "? ", "{", "[", "\"\\u", "%YAML 1.1\n",
             "---\n", "<<: *a\n", "\t", "\x00", "\ud800", "\ufeff"])), label="inserted") + text[position:]
    if operation == "delete":
        return text[:position] + text[position + data.draw(st.integers(1, 40), label="deleted"):]
    if operation == "duplicate line" and lines:
        index = data.draw(st.integers(0, len(lines) - 1), label="line")
        return "".join(lines[:index + 1] + lines[index:])
    if operation == "indent" and lines:
        index = data.draw(st.integers(0, len(lines) - 1), label="line")
        lines[index] = data.draw(st.sampled_from([" ", "  ", "\t"]), label="indent") + lines[index]
        return "".join(lines)
    return text[:position]


def mutatedConfig(data, base: str) -> str:
    """
    Draw a mutated copy of a valid configuration file.
    """
    document = yaml.safe_load(readBase(base))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        document = mutateDocument(document, data)
    styles = ["block", "flow"] if expandsBeyond(document, 10000) else ["block", "flow", "json"]
    style = data.draw(st.sampled_from(styles), label="style")
    try:
        if style == "json":
            text = json.dumps(document, default=repr, ensure_ascii=data.draw(st.booleans(), label="ascii"))
        else:
            text = yaml.dump(document, Dumper=_Dumper, default_flow_style=style == "flow",
                             allow_unicode=data.draw(st.booleans(), label="unicode"), width=2**20)
    except (RecursionError, ValueError):
        text = readBase(base)
    for _ in range(data.draw(st.integers(0, 2), label="text edits")):
        text = editText(text, data)
    return text


def encodable(value) -> bool:
    """
    @return: whether every string in C{value} (a model object, or a
        structure of them) can be encoded as UTF-8, as it must be to reach
        a filter, a log or the wire.
    """
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, frozenset, set)):
            pending.extend(item)
        elif dataclasses.is_dataclass(item):
            pending.extend(getattr(item, each.name) for each in dataclasses.fields(item))
    return True


class OutcomeAssertions:
    """
    What every outcome of loading a configuration must look like.
    """

    def assertCleanErrors(self, errors, source: str) -> None:
        """
        Each error is one line of UTF-8-encodable text that starts with
        the source name.
        """
        self.assertTrue(errors, "a rejection without an error")
        for line in errors:
            self.assertIsInstance(line, str)
            self.assertTrue(line.startswith(source + ": "), line)
            self.assertEqual(line.splitlines(), [line], line)
            self.assertTrue(line.isprintable(), ascii(line))
            line.encode("utf-8")


class LoaderFuzzTests(OutcomeAssertions, SynchronousTestCase):
    """
    L{loadConfigText} over mutated valid files.
    """

    def assertOutcome(self, text: str) -> None:
        try:
            config = loadConfigText(text, SOURCE, FILTERS)
        except ConfigError as error:
            self.assertCleanErrors(error.errors, SOURCE)
        else:
            self.assertIsInstance(config, GatewayConfig)
            self.assertTrue(encodable(config), "accepted text that cannot be UTF-8: %s" % (ascii(text[:300]),))

    def test_basesAreValid(self):
        """
        The files the mutations start from load.
        """
        for name in BASES:
            self.assertIsInstance(loadConfigText(readBase(name), SOURCE, FILTERS), GatewayConfig)

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(st.sampled_from(sorted(BASES)), st.data())
    def test_mutations(self, base, data):
        """
        A mutated file loads or is refused with clean one-line errors.
        """
        self.assertOutcome(mutatedConfig(data, base))

    def test_surrogateEscapeRefused(self):
        """
        A YAML escape of a lone surrogate (here a UTF-16 pair written as two
        escapes) is refused with its location: such text cannot reach a
        filter, a header or a log.
        """
        text = readBase("walkthrough").replace(
            '"Hello from Kong using WebAssembly!"', '"\\uD83D\\uDE00"')
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertEqual(error.errors, [
            SOURCE + ": services[0].routes[0].filter_chains[0].filters[0].config.my_greeting:"
                     " \"\\ud83d\\ude00\" is not valid Unicode text (a lone UTF-16 surrogate)"])

    def test_surrogateInKeyRefused(self):
        """
        A lone surrogate in a key is refused too; the location shows it
        escaped.
        """
        text = readBase("walkthrough").replace("my_greeting:", '"my_\\uDE00": 1\n                  my_greeting:')
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertEqual(error.errors, [
            SOURCE + ": services[0].routes[0].filter_chains[0].filters[0].config[\"my_\\ude00\"]:"
                     " \"my_\\ude00\" is not valid Unicode text (a lone UTF-16 surrogate)"])

    def test_hugeInteger(self):
        """
        An integer too long for Python to read is refused with its line.
        """
        text = readBase("walkthrough").replace("minute: 60", "minute: " + "1" * 5000)
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertEqual(len(error.errors), 1)
        self.assertRegex(error.errors[0], r"^fuzz\.yml: line 31, column 23: invalid YAML: integer of 5000 digits"
                                          r" is too large \(at most 64\)$")

    def test_deepNesting(self):
        """
        Nesting deeper than the limit is refused with its line, not a
        RecursionError.
        """
        text = readBase("walkthrough").replace("minute: 60", "minute: " + "[" * 5000 + "]" * 5000)
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertEqual(len(error.errors), 1)
        self.assertRegex(error.errors[0], r"^fuzz\.yml: line 31, column \d+: invalid YAML: nested deeper than"
                                          r" \d+ levels$")

    def test_aliasBomb(self):
        """
        Aliases that expand into a huge structure (a "billion laughs") are
        refused quickly.
        """
        levels = ['a0: &a0 ["lol"]'] + ["a%d: &a%d [%s]" % (n, n, ", ".join(["*a%d" % (n - 1,)] * 10))
                                         for n in range(1, 12)]
        text = readBase("walkthrough").replace("minute: 60", "minute: 60\n              laughs: *a11")
        text = text.replace("services:", "\n".join(["x-laughs:"] + ["  " + line for line in levels]) + "\nservices:")
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertIn(SOURCE + ": (root): the document expands to more than", error.errors[0])

    def test_recursiveAlias(self):
        """
        An alias inside the node it names (a cycle) is refused.
        """
        text = readBase("walkthrough").replace("minute: 60", "minute: &loop [1, *loop]")
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertEqual(error.errors, [
            SOURCE + ": services[0].filter_chains[0].filters[0].config.minute[1]: refers to itself (a recursive alias)"])

    def test_lineSeparatorInKey(self):
        """
        An unknown key with a line break in it is reported on one line.
        """
        text = readBase("walkthrough").replace("  - name: echo\n", '  - name: echo\n    "a\\u2028b\\nc": 1\n')
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertEqual(error.errors, [SOURCE + ': services[0]["a\\u2028b\\nc"]: unknown field'])

    def test_nulInEnvironmentValue(self):
        """
        A NUL in a filter's environment value is refused: WASI passes the
        environment as NUL-terminated C{NAME=value} strings.
        """
        text = readBase("walkthrough").replace(
            "config:\n              minute: 60", 'env: {LANG: "e\\0n"}\n            config:\n              minute: 60')
        error = self.assertRaises(ConfigError, loadConfigText, text, SOURCE, FILTERS)
        self.assertEqual(error.errors, [
            SOURCE + ': services[0].filter_chains[0].filters[0].env.LANG: "e\\u0000n" contains a NUL character'])


POSTED_CONFIG = """\
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:{echoPort}
    routes:
      - name: all
        paths: ["/"]
        filter_chains:
          - filters:
              - name: greeting
                config:
                  my_greeting: fuzzed
"""


class PostedConfigFuzzTests(OutcomeAssertions, TestCase):
    """
    Random mutated configurations posted to a running gateway's
    C{/config}: each is accepted (201) or refused (400, every error one
    clean line); either way the gateway keeps serving.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_postedMutations(self):
        gateway = yield startGateway(self, POSTED_CONFIG)
        base = POSTED_CONFIG.replace("{echoPort}", str(gateway.echoPort))
        texts = []

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.data())
        def draw(data):
            document = yaml.safe_load(base)
            for _ in range(data.draw(st.integers(1, 3), label="mutations")):
                document = mutateDocument(document, data)
            try:
                text = yaml.dump(document, Dumper=_Dumper, allow_unicode=True, width=2**20)
            except (RecursionError, ValueError):
                text = base
            for _ in range(data.draw(st.integers(0, 1), label="text edits")):
                text = editText(text, data)
            texts.append(text)

        draw()
        statuses = set()
        for text in texts:
            body = text.encode("utf-8", "surrogatepass")
            response = yield fetch("POST", gateway.adminURL + "/config", headers=[("Content-Type", "text/yaml")],
                                   body=body)
            statuses.add(response.status)
            self.assertIn(response.status, (200, 201, 400), (response.status, response.body[:500], ascii(text)))
            if response.status == 400:
                errors = response.json()["errors"]
                if errors and errors[0].startswith("request body: "):
                    self.assertEqual(len(errors), 1, errors)
                else:
                    self.assertCleanErrors(errors, "<POST /config>")
            served = yield fetch("GET", gateway.proxyURL + "/")
            self.assertIn(served.status, (200, 404), (served.status, served.body[:500], ascii(text)))
            self.assertTrue(gateway.running)
        self.assertIn(400, statuses)
        surrogate = yield fetch("POST", gateway.adminURL + "/config", headers=[("Content-Type", "text/yaml")],
                                body=base.replace("my_greeting: fuzzed", 'my_greeting: "\\uD83D\\uDE00"').encode())
        self.assertEqual(surrogate.status, 400)
        self.assertEqual(surrogate.json()["errors"], [
            "<POST /config>: services[0].routes[0].filter_chains[0].filters[0].config.my_greeting:"
            " \"\\ud83d\\ude00\" is not valid Unicode text (a lone UTF-16 surrogate)"])
        restored = yield fetch("POST", gateway.adminURL + "/config", headers=[("Content-Type", "text/yaml")],
                               body=base.encode("utf-8"))
        self.assertEqual(restored.status, 201, restored.body)
        greeted = yield fetch("GET", gateway.proxyURL + "/after")
        self.assertEqual((greeted.status, greeted.header("X-Greeting")), (200, "fuzzed"))
        self.assertNotIn("Traceback", gateway.logText())
