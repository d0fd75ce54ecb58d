package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
)

const defaultErrorMessage = "API rate limit exceeded"

// limit is a configured period with its request limit.
type limit struct {
	period
	max float64
}

// limitBy says what one set of counters counts for.
type limitBy struct {
	kind   string // "ip", "header", "path" or "service"
	header string // lowercased header name, for "header"
	path   string // for "path"
}

type config struct {
	limits            []limit
	limitBy           limitBy
	faultTolerant     bool
	hideClientHeaders bool
	errorCode         uint32
	errorMessage      string
	// scope is the FNV-1a hash of the configuration text: filter entries
	// with different configurations count apart.
	scope uint64
}

var knownFields = map[string]bool{
	"second": true, "minute": true, "hour": true, "day": true, "month": true, "year": true,
	"limit_by": true, "header_name": true, "path": true, "policy": true, "fault_tolerant": true,
	"hide_client_headers": true, "error_code": true, "error_message": true,
}

// numberText prints a number as Kong does: integers without a fraction.
func numberText(value float64) string {
	if value == math.Trunc(value) && math.Abs(value) < 1e15 {
		return strconv.FormatInt(int64(value), 10)
	}
	return strconv.FormatFloat(value, 'f', -1, 64)
}

// typeName names a decoded JSON value's type.
func typeName(value any) string {
	switch value.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	default:
		return "object"
	}
}

type document map[string]any

func (d document) optionalBool(name string, fallback bool) (bool, error) {
	switch value := d[name].(type) {
	case nil:
		return fallback, nil
	case bool:
		return value, nil
	default:
		return false, fmt.Errorf("%s: expected a boolean, got %s", name, typeName(value))
	}
}

func (d document) optionalString(name string) (string, bool, error) {
	switch value := d[name].(type) {
	case nil:
		return "", false, nil
	case string:
		return value, true, nil
	default:
		return "", false, fmt.Errorf("%s: expected a string, got %s", name, typeName(value))
	}
}

// parseConfig reads and checks the configuration as Kong's rate-limiting
// schema does; an error names the field.
func parseConfig(text []byte) (*config, error) {
	source := text
	if len(bytes.TrimSpace(text)) == 0 {
		source = []byte("{}")
	}
	decoder := json.NewDecoder(bytes.NewReader(source))
	decoder.UseNumber()
	var decoded any
	if err := decoder.Decode(&decoded); err != nil {
		return nil, errors.New("configuration is not JSON: " + err.Error())
	}
	if decoder.More() {
		return nil, errors.New("configuration is not JSON: data after the value")
	}
	fields, ok := decoded.(map[string]any)
	if !ok {
		return nil, errors.New("configuration must be a JSON object, not " + typeName(decoded))
	}
	doc := document(fields)
	for name := range doc {
		if !knownFields[name] {
			return nil, errors.New(name + ": unknown field")
		}
	}
	conf := &config{errorCode: 429, errorMessage: defaultErrorMessage}
	for _, p := range periods {
		switch value := doc[p.name].(type) {
		case nil:
		case json.Number:
			number, err := value.Float64()
			if err != nil {
				return nil, fmt.Errorf("%s: expected a number, got %s", p.name, value)
			}
			if number <= 0 {
				return nil, fmt.Errorf("%s: %s must be greater than 0", p.name, numberText(number))
			}
			conf.limits = append(conf.limits, limit{p, number})
		default:
			return nil, fmt.Errorf("%s: expected a number, got %s", p.name, typeName(value))
		}
	}
	if len(conf.limits) == 0 {
		return nil, errors.New("at least one of these fields must be non-empty: " +
			"'second', 'minute', 'hour', 'day', 'month', 'year'")
	}
	for i, shorter := range conf.limits {
		for _, longer := range conf.limits[i+1:] {
			if longer.max < shorter.max {
				return nil, fmt.Errorf("the limit for %s(%.1f) cannot be lower than the limit for %s(%.1f)",
					longer.name, longer.max, shorter.name, shorter.max)
			}
		}
	}
	by, _, err := doc.optionalString("limit_by")
	if err != nil {
		return nil, err
	}
	switch by {
	case "", "ip":
		conf.limitBy = limitBy{kind: "ip"}
	case "service":
		conf.limitBy = limitBy{kind: "service"}
	case "header":
		name, _, err := doc.optionalString("header_name")
		if err != nil {
			return nil, err
		}
		if name == "" {
			return nil, errors.New("header_name: required when limit_by is 'header'")
		}
		conf.limitBy = limitBy{kind: "header", header: strings.ToLower(name)}
	case "path":
		path, _, err := doc.optionalString("path")
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(path, "/") {
			return nil, errors.New("path: required when limit_by is 'path' (starting with '/')")
		}
		conf.limitBy = limitBy{kind: "path", path: path}
	default:
		return nil, fmt.Errorf("limit_by: expected one of ip, header, path, service, got %q", by)
	}
	if policy, _, err := doc.optionalString("policy"); err != nil {
		return nil, err
	} else if policy != "" && policy != "local" {
		return nil, fmt.Errorf("policy: only 'local' is supported, got %q", policy)
	}
	switch code := doc["error_code"].(type) {
	case nil:
	case json.Number:
		number, err := code.Float64()
		if err != nil || number != math.Trunc(number) || number < 100 || number > 999 {
			return nil, errors.New("error_code: expected an HTTP status, got " + code.String())
		}
		conf.errorCode = uint32(number)
	default:
		return nil, errors.New("error_code: expected an HTTP status, got " + typeName(code))
	}
	if conf.faultTolerant, err = doc.optionalBool("fault_tolerant", true); err != nil {
		return nil, err
	}
	if conf.hideClientHeaders, err = doc.optionalBool("hide_client_headers", false); err != nil {
		return nil, err
	}
	if message, present, err := doc.optionalString("error_message"); err != nil {
		return nil, err
	} else if present {
		conf.errorMessage = message
	}
	hash := fnv.New64a()
	hash.Write(text)
	conf.scope = hash.Sum64()
	return conf, nil
}
