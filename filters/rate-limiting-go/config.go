package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
)

// window is one rate-limiting period.
type window struct {
	name    string // config field and counter-key part: "minute"
	title   string // header suffix: "Minute"
	seconds int64
}

// windows in ascending size; Kong checks limits in this order.
var windows = []window{
	{"second", "Second", 1},
	{"minute", "Minute", 60},
	{"hour", "Hour", 3600},
	{"day", "Day", 86400},
}

// limit is a configured window with its request limit.
type limit struct {
	window
	max int64
}

type rawConfig struct {
	Second *json.Number `json:"second"`
	Minute *json.Number `json:"minute"`
	Hour   *json.Number `json:"hour"`
	Day    *json.Number `json:"day"`
}

func (c *rawConfig) field(name string) *json.Number {
	switch name {
	case "second":
		return c.Second
	case "minute":
		return c.Minute
	case "hour":
		return c.Hour
	default:
		return c.Day
	}
}

// parseConfig validates the filter configuration as Kong's rate-limiting
// plugin does: at least one window, each limit a positive whole number, and
// no window's limit lower than a shorter window's.
func parseConfig(data []byte) ([]limit, error) {
	var raw rawConfig
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&raw); err != nil {
		return nil, errors.New("invalid configuration: " + err.Error())
	}
	if decoder.More() {
		return nil, errors.New("invalid configuration: data after the JSON object")
	}
	var limits []limit
	for _, w := range windows {
		number := raw.field(w.name)
		if number == nil {
			continue
		}
		value, err := number.Float64()
		if err != nil || value < 1 || value != math.Trunc(value) || value > 1e15 {
			return nil, errors.New(w.name + ": " + number.String() + " is not a whole number of at least 1")
		}
		current := limit{w, int64(value)}
		if n := len(limits); n > 0 && current.max < limits[n-1].max {
			previous := limits[n-1]
			return nil, errors.New("the limit for " + w.name + "(" + strconv.FormatInt(current.max, 10) +
				") cannot be lower than the limit for " + previous.name + "(" + strconv.FormatInt(previous.max, 10) + ")")
		}
		limits = append(limits, current)
	}
	if len(limits) == 0 {
		return nil, errors.New("at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day'")
	}
	return limits, nil
}
