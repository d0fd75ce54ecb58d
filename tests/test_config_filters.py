"""
Tests for L{twistgate.config.filters}: filter discovery as Kong's
C{wasm_filters_path}, C{.meta.json} checks, and filter configuration
validation against C{config_schema}.
"""

import hashlib
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from twistgate.config.errors import ConfigError
from twistgate.config.filters import (
    FilterFile,
    defaultConfigSchema,
    discoverFilters,
    validateFilterConfig,
)

WASM_BYTES = b"\x00asm\x01\x00\x00\x00"

RATE_LIMITING_SCHEMA = {
    "type": "object",
    "properties": {
        "second": {"type": "integer", "minimum": 0},
        "minute": {"type": "integer", "minimum": 0},
        "hour": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}


class FiltersDirectoryMixin:
    """
    A fresh filters directory per test.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def write(self, name: str, content: bytes = WASM_BYTES) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as output:
            output.write(content)
        return path

    def writeMeta(self, name: str, meta: object) -> str:
        text = meta if isinstance(meta, str) else json.dumps(meta)
        return self.write(name + ".meta.json", text.encode("utf-8"))

    def errorsOf(self) -> list:
        return self.assertRaises(ConfigError, discoverFilters, self.directory).errors


class DiscoverFiltersTests(FiltersDirectoryMixin, SynchronousTestCase):
    """
    L{discoverFilters} finds filters as Kong does.
    """

    def test_wasmFiles(self) -> None:
        """
        Each top-level C{.wasm} file is a filter named after the file
        without the extension, with its path, size and SHA-256.
        """
        path = self.write("greeting.wasm", WASM_BYTES + b"greeting")
        filters = discoverFilters(self.directory)
        self.assertEqual(list(filters), ["greeting"])
        found = filters["greeting"]
        self.assertEqual(found.name, "greeting")
        self.assertEqual(found.path, path)
        self.assertEqual(found.size, len(WASM_BYTES) + 8)
        self.assertEqual(found.sha256, hashlib.sha256(WASM_BYTES + b"greeting").hexdigest())
        self.assertIsNone(found.configSchema)
        self.assertEqual(found.labelPatterns, ())

    def test_extensionCaseInsensitive(self) -> None:
        """
        The C{.wasm} extension is compared case-insensitively; the name keeps
        the file's own case.
        """
        self.write("Upper.WASM")
        self.write("mixed.Wasm")
        self.assertEqual(sorted(discoverFilters(self.directory)), ["Upper", "mixed"])

    def test_otherFilesIgnored(self) -> None:
        """
        Files that do not end in C{.wasm}, a bare C{.wasm}, directories
        (even named C{*.wasm}) and files in subdirectories are not filters.
        """
        self.write("README.md", b"hello")
        self.write("greeting.wasm.bak")
        self.write("greeting.wat", b"(module)")
        self.write(".wasm")
        os.makedirs(os.path.join(self.directory, "dir.wasm"))
        os.makedirs(os.path.join(self.directory, "sub"))
        self.write(os.path.join("sub", "nested.wasm"))
        self.write("real.wasm")
        self.assertEqual(list(discoverFilters(self.directory)), ["real"])

    def test_symlinkedDirectory(self) -> None:
        """
        The filters path may be a symlink to a directory.
        """
        self.write("greeting.wasm")
        link = self.mktemp()
        os.symlink(os.path.abspath(self.directory), link)
        self.assertEqual(list(discoverFilters(link)), ["greeting"])

    def test_missingDirectory(self) -> None:
        """
        A filters path that is not a directory is one error line naming it.
        """
        missing = os.path.join(self.directory, "nope")
        error = self.assertRaises(ConfigError, discoverFilters, missing)
        self.assertEqual(error.errors, ["%s: is not a valid directory" % (missing,)])

    def test_metadata(self) -> None:
        """
        C{<name>.meta.json} gives the filter its C{config_schema} and metric
        label patterns.
        """
        self.write("rate-limiting.wasm")
        self.writeMeta(
            "rate-limiting",
            {
                "config_schema": RATE_LIMITING_SCHEMA,
                "metrics": {"label_patterns": [{"label": "route", "pattern": "(_r(?<route>\\w+))"}]},
            },
        )
        found = discoverFilters(self.directory)["rate-limiting"]
        self.assertEqual(found.configSchema, RATE_LIMITING_SCHEMA)
        self.assertEqual(found.labelPatterns, (("route", "(_r(?<route>\\w+))"),))

    def test_metadataWithoutWasmIgnored(self) -> None:
        """
        A C{.meta.json} with no C{.wasm} beside it is not a filter.
        """
        self.writeMeta("ghost", {"config_schema": {"type": "object"}})
        self.assertEqual(discoverFilters(self.directory), {})

    def test_metadataInvalidJson(self) -> None:
        """
        Invalid JSON in a metadata file is reported with its line and column.
        """
        self.write("greeting.wasm")
        meta = self.writeMeta("greeting", '{\n  "config_schema": {"type": "object",}\n}')
        self.assertEqual(
            self.errorsOf(),
            ["%s: line 2, column 38: invalid JSON: Expecting property name enclosed in double quotes" % (meta,)],
        )

    def test_metadataNotAnObject(self) -> None:
        """
        Metadata must be a JSON object.
        """
        self.write("greeting.wasm")
        meta = self.writeMeta("greeting", "[1, 2]")
        self.assertEqual(self.errorsOf(), ["%s: expected a JSON object at the top level, got [1, 2]" % (meta,)])

    def test_metadataUnknownKeys(self) -> None:
        """
        Unknown keys in metadata, in C{metrics} and in label patterns are
        errors.
        """
        self.write("greeting.wasm")
        meta = self.writeMeta(
            "greeting",
            {
                "config_schema": {"type": "object"},
                "configSchema": {},
                "metrics": {"labels": [], "label_patterns": [{"label": "a", "pattern": "a", "extra": 1}]},
            },
        )
        self.assertEqual(
            self.errorsOf(),
            [
                "%s: configSchema: unknown field" % (meta,),
                "%s: metrics.labels: unknown field" % (meta,),
                "%s: metrics.label_patterns[0].extra: unknown field" % (meta,),
            ],
        )

    def test_metadataBadSchema(self) -> None:
        """
        A C{config_schema} that is not a valid JSON Schema is reported at the
        failing keyword.
        """
        self.write("rate-limiting.wasm")
        meta = self.writeMeta(
            "rate-limiting",
            {"config_schema": {"type": "object", "properties": {"minute": {"type": "number-ish"}}}},
        )
        [line] = self.errorsOf()
        self.assertTrue(
            line.startswith("%s: config_schema.properties.minute.type: 'number-ish' is not valid" % (meta,)), line
        )

    def test_metadataSchemaNotObject(self) -> None:
        """
        A C{config_schema} must be a JSON object.
        """
        self.write("greeting.wasm")
        meta = self.writeMeta("greeting", {"config_schema": "object"})
        self.assertEqual(
            self.errorsOf(), ['%s: config_schema: expected a JSON object (a JSON Schema), got "object"' % (meta,)]
        )

    def test_metadataBadLabelPattern(self) -> None:
        """
        A label pattern that is not a valid regex, or that misses a field,
        is reported with its index.
        """
        self.write("greeting.wasm")
        meta = self.writeMeta(
            "greeting",
            {"metrics": {"label_patterns": [{"label": "x", "pattern": "(unclosed"}, {"pattern": "a"}]}},
        )
        self.assertEqual(
            self.errorsOf(),
            [
                '%s: metrics.label_patterns[0].pattern: invalid regex "(unclosed": '
                "missing ), unterminated subpattern at position 0" % (meta,),
                "%s: metrics.label_patterns[1].label: required field missing" % (meta,),
            ],
        )

    def test_everyBadMetadataReported(self) -> None:
        """
        Problems in several metadata files are all reported together.
        """
        self.write("a.wasm")
        self.write("b.wasm")
        metaA = self.writeMeta("a", "nope")
        metaB = self.writeMeta("b", {"bogus": 1})
        self.assertEqual(
            self.errorsOf(),
            [
                "%s: line 1, column 1: invalid JSON: Expecting value" % (metaA,),
                "%s: bogus: unknown field" % (metaB,),
            ],
        )


class ValidateFilterConfigTests(SynchronousTestCase):
    """
    L{validateFilterConfig} checks a filter entry's configuration against the
    filter's schema and reports every problem with its path.
    """

    location = "filter_chains[0].filters[1].config"

    def filterWith(self, schema) -> FilterFile:
        return FilterFile("f", "/filters/f.wasm", "0" * 64, 8, schema, ())

    def test_valid(self) -> None:
        """
        A configuration that matches the schema has no errors.
        """
        self.assertEqual(validateFilterConfig(self.filterWith(RATE_LIMITING_SCHEMA), {"minute": 5}, self.location), [])

    def test_minimum(self) -> None:
        """
        A value below the minimum names the field.
        """
        self.assertEqual(
            validateFilterConfig(self.filterWith(RATE_LIMITING_SCHEMA), {"minute": -1}, self.location),
            ["filter_chains[0].filters[1].config.minute: -1 is less than the minimum of 0"],
        )

    def test_everyError(self) -> None:
        """
        Every error is reported, in path order.
        """
        self.assertEqual(
            validateFilterConfig(
                self.filterWith(RATE_LIMITING_SCHEMA), {"minute": -1, "hour": "x", "day": 1}, self.location
            ),
            [
                "filter_chains[0].filters[1].config: Additional properties are not allowed ('day' was unexpected)",
                "filter_chains[0].filters[1].config.hour: 'x' is not of type 'integer'",
                "filter_chains[0].filters[1].config.minute: -1 is less than the minimum of 0",
            ],
        )

    def test_arrayPath(self) -> None:
        """
        Array indexes appear in brackets.
        """
        schema = {"type": "object", "properties": {"headers": {"type": "array", "items": {"type": "string"}}}}
        self.assertEqual(
            validateFilterConfig(self.filterWith(schema), {"headers": ["a", 2]}, "x.config"),
            ["x.config.headers[1]: 2 is not of type 'string'"],
        )

    def test_draft4ByDefault(self) -> None:
        """
        Without C{$schema} the schema is draft 4: a boolean
        C{exclusiveMinimum} applies to C{minimum}.
        """
        schema = {"type": "integer", "minimum": 0, "exclusiveMinimum": True}
        self.assertEqual(
            validateFilterConfig(self.filterWith(schema), 0, "c"),
            ["c: 0 is less than or equal to the minimum of 0"],
        )

    def test_declaredDraft(self) -> None:
        """
        C{$schema} selects the draft: in 2020-12 C{exclusiveMinimum} is a
        number.
        """
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "integer", "exclusiveMinimum": 0}
        self.assertEqual(
            validateFilterConfig(self.filterWith(schema), 0, "c"),
            ["c: 0 is less than or equal to the minimum of 0"],
        )
        self.assertEqual(validateFilterConfig(self.filterWith(schema), 1, "c"), [])

    def test_noSchemaAcceptsStringOrNull(self) -> None:
        """
        Without a schema, the configuration is a string or null.
        """
        plain = self.filterWith(None)
        self.assertEqual(validateFilterConfig(plain, "raw text", "c"), [])
        self.assertEqual(validateFilterConfig(plain, None, "c"), [])
        self.assertEqual(
            validateFilterConfig(plain, {"a": 1}, "c"),
            ["c: {'a': 1} is not of type 'string', 'null'"],
        )

    def test_defaultSchema(self) -> None:
        """
        The default schema is Kong's: draft 4, string or null.
        """
        self.assertEqual(
            defaultConfigSchema,
            {"$schema": "http://json-schema.org/draft-04/schema#", "type": ["string", "null"]},
        )
