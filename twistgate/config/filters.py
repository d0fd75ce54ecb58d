"""
Filter discovery and filter configuration schemas, as Kong does them.

Kong scans the top level of C{wasm_filters_path}: every regular file whose
name ends in C{.wasm} (compared case-insensitively) is a filter named after
the file without that extension. Since Kong 3.5 an optional
C{<name>.meta.json} beside it carries the filter's C{config_schema} (JSON
Schema) and, since 3.9, C{metrics.label_patterns}. A filter without a schema
takes a string or null configuration.
"""

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import jsonschema
from jsonschema.exceptions import SchemaError

from twistgate.config.errors import ConfigError

DRAFT4 = "http://json-schema.org/draft-04/schema#"

defaultConfigSchema = {"$schema": DRAFT4, "type": ["string", "null"]}
"""
The schema of a filter that ships no C{config_schema} (Kong 3.5+): its
configuration is raw text, or absent.
"""

WASM_SUFFIX = ".wasm"
META_SUFFIX = ".meta.json"

_META_KEYS = frozenset(["config_schema", "metrics"])
_METRICS_KEYS = frozenset(["label_patterns"])
_LABEL_PATTERN_KEYS = frozenset(["label", "pattern"])


@dataclass(frozen=True)
class FilterFile:
    """
    One installed filter.

    @ivar name: the file name without C{.wasm}; what C{filters[].name} says.
    @ivar path: the C{.wasm} file's path.
    @ivar sha256: hex digest of the file's bytes.
    @ivar size: the file's size in bytes.
    @ivar configSchema: the C{config_schema} of its C{.meta.json}, or
        L{None} when it ships none.
    @ivar labelPatterns: C{(label, pattern)} pairs from
        C{metrics.label_patterns}.
    """

    name: str
    path: str
    sha256: str
    size: int
    configSchema: Optional[dict]
    labelPatterns: Tuple[Tuple[str, str], ...]


def formatJsonPath(parts) -> str:
    """
    Render a sequence of JSON keys and indexes as C{.key[3].other}.

    @param parts: keys (L{str}) and array indexes (L{int}).
    @return: the rendered path, empty for an empty sequence.
    """
    rendered = []
    for part in parts:
        if isinstance(part, int):
            rendered.append("[%d]" % (part,))
        else:
            rendered.append("." + str(part))
    return "".join(rendered)


def pcreToPython(pattern: str) -> str:
    """
    Translate PCRE's named groups C{(?<name>...)} (what Kong users write) to
    Python's C{(?P<name>...)}; lookbehinds C{(?<=} and C{(?<!} are kept.

    @param pattern: a regular expression in PCRE syntax.
    @return: the same expression for L{re}.
    """
    return re.sub(r"\(\?<(?![=!])", "(?P<", pattern)


def _validatorFor(schema: dict):
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)


def _checkSchema(schema: object, where: str) -> List[str]:
    if not isinstance(schema, dict):
        return ["%s: expected a JSON object (a JSON Schema), got %s" % (where, json.dumps(schema))]
    try:
        _validatorFor(schema).check_schema(schema)
    except SchemaError as error:
        return ["%s%s: %s" % (where, formatJsonPath(error.absolute_path), error.message)]
    return []


def _checkMetrics(metrics: object, where: str) -> Tuple[List[str], Tuple[Tuple[str, str], ...]]:
    if not isinstance(metrics, dict):
        return ["%s: expected a JSON object, got %s" % (where, json.dumps(metrics))], ()
    errors = ["%s.%s: unknown field" % (where, key) for key in metrics if key not in _METRICS_KEYS]
    patterns = metrics.get("label_patterns", [])
    where = where + ".label_patterns"
    if not isinstance(patterns, list):
        return errors + ["%s: expected a JSON array, got %s" % (where, json.dumps(patterns))], ()
    pairs = []
    for index, entry in enumerate(patterns):
        entryWhere = "%s[%d]" % (where, index)
        if not isinstance(entry, dict):
            errors.append("%s: expected a JSON object, got %s" % (entryWhere, json.dumps(entry)))
            continue
        errors.extend("%s.%s: unknown field" % (entryWhere, key) for key in entry if key not in _LABEL_PATTERN_KEYS)
        fieldErrors = len(errors)
        for key in ("label", "pattern"):
            if key not in entry:
                errors.append("%s.%s: required field missing" % (entryWhere, key))
            elif not isinstance(entry[key], str) or not entry[key]:
                errors.append("%s.%s: expected a non-empty string, got %s" % (entryWhere, key, json.dumps(entry[key])))
        if len(errors) > fieldErrors:
            continue
        try:
            re.compile(pcreToPython(entry["pattern"]))
        except re.error as error:
            errors.append("%s.pattern: invalid regex %s: %s" % (entryWhere, json.dumps(entry["pattern"]), error))
            continue
        pairs.append((entry["label"], entry["pattern"]))
    return errors, tuple(pairs)


def readFilterMetadata(metaPath: str) -> Tuple[List[str], Optional[dict], Tuple[Tuple[str, str], ...]]:
    """
    Read and check one C{<name>.meta.json}.

    @param metaPath: the file's path (also the prefix of each message).
    @return: C{(errors, configSchema, labelPatterns)}; each error is one line
        C{"<file>: <field>: <what>"}.
    """
    try:
        with open(metaPath, "rb") as metaFile:
            raw = metaFile.read()
    except OSError as error:
        return ["%s: cannot be read: %s" % (metaPath, error.strerror or error)], None, ()
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        return ["%s: not UTF-8 text: %s" % (metaPath, error)], None, ()
    except json.JSONDecodeError as error:
        return [
            "%s: line %d, column %d: invalid JSON: %s" % (metaPath, error.lineno, error.colno, error.msg)
        ], None, ()
    if not isinstance(meta, dict):
        return ["%s: expected a JSON object at the top level, got %s" % (metaPath, json.dumps(meta))], None, ()
    errors = ["%s: %s: unknown field" % (metaPath, key) for key in meta if key not in _META_KEYS]
    schema = None
    if "config_schema" in meta:
        schemaErrors = _checkSchema(meta["config_schema"], "config_schema")
        errors.extend("%s: %s" % (metaPath, line) for line in schemaErrors)
        if not schemaErrors:
            schema = meta["config_schema"]
    patterns: Tuple[Tuple[str, str], ...] = ()
    if "metrics" in meta:
        metricErrors, patterns = _checkMetrics(meta["metrics"], "metrics")
        errors.extend("%s: %s" % (metaPath, line) for line in metricErrors)
    return errors, schema, patterns


def _digest(path: str) -> Tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as wasmFile:
        for chunk in iter(lambda: wasmFile.read(1 << 16), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def discoverFilters(directory: str) -> Dict[str, FilterFile]:
    """
    Find the filters installed in C{directory}, as Kong's
    C{wasm_filters_path}: top level only (the directory itself may be a
    symlink), regular files ending in C{.wasm} in any case, each with its
    optional C{.meta.json}.

    @param directory: the filters directory.
    @return: filters by name, in file name order.
    @raise ConfigError: the directory is missing, or a metadata file (or a
        C{.wasm} file) cannot be read or is invalid; every problem is listed.
    """
    if not os.path.isdir(directory):
        raise ConfigError(["%s: is not a valid directory" % (directory,)])
    try:
        entries = sorted(os.listdir(directory))
    except OSError as error:
        raise ConfigError(["%s: cannot be listed: %s" % (directory, error.strerror or error)])
    errors: List[str] = []
    found: Dict[str, FilterFile] = {}
    for entry in entries:
        if not entry.lower().endswith(WASM_SUFFIX) or len(entry) == len(WASM_SUFFIX):
            continue
        path = os.path.join(directory, entry)
        if not os.path.isfile(path):
            continue
        name = entry[: -len(WASM_SUFFIX)]
        if name in found:
            errors.append("%s: filter %s is also installed as %s" % (path, json.dumps(name), found[name].path))
            continue
        try:
            sha256, size = _digest(path)
        except OSError as error:
            errors.append("%s: cannot be read: %s" % (path, error.strerror or error))
            continue
        schema = None
        patterns: Tuple[Tuple[str, str], ...] = ()
        metaPath = os.path.join(directory, name + META_SUFFIX)
        if os.path.exists(metaPath):
            metaErrors, schema, patterns = readFilterMetadata(metaPath)
            errors.extend(metaErrors)
        found[name] = FilterFile(name, path, sha256, size, schema, patterns)
    if errors:
        raise ConfigError(errors)
    return found


def configSchemaOf(filterFile: FilterFile) -> dict:
    """
    @return: the schema C{filterFile}'s configuration is validated against,
        as served by C{GET /schemas/filters/{name}}.
    """
    if filterFile.configSchema is None:
        return defaultConfigSchema
    return filterFile.configSchema


def _errorOrder(error) -> Tuple[str, str]:
    return (formatJsonPath(error.absolute_path), error.message)


def validateFilterConfig(filter: FilterFile, config: object, location: str) -> List[str]:
    """
    Validate one filter entry's configuration against the filter's
    C{config_schema} (or against L{defaultConfigSchema}).

    @param filter: the installed filter.
    @param config: the configuration as parsed from the file.
    @param location: where the configuration sits, e.g.
        C{"filter_chains[0].filters[1].config"}.
    @return: one line per problem, e.g. C{"filter_chains[0].filters[1]
        .config.minute: -1 is less than the minimum of 0"}; empty when
        valid.
    """
    schema = configSchemaOf(filter)
    validator = _validatorFor(schema)(schema)
    return [
        "%s%s: %s" % (location, formatJsonPath(error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(config), key=_errorOrder)
    ]
