package main

import "time"

// period is one rate-limiting window kind.
type period struct {
	name  string // config field and counter-key part: "minute"
	title string // header suffix: "Minute"
	// seconds is the window length Kong uses for RateLimit-Reset (a month
	// counts 30 days, a year 365).
	seconds  int64
	calendar bool // months and years follow the UTC calendar
}

// periods in ascending length; Kong checks limits in this order.
var periods = []period{
	{"second", "Second", 1, false},
	{"minute", "Minute", 60, false},
	{"hour", "Hour", 3600, false},
	{"day", "Day", 86400, false},
	{"month", "Month", 2592000, true},
	{"year", "Year", 31536000, true},
}

// windowStart is the start of the window holding now (unix seconds, UTC).
func (p period) windowStart(now int64) int64 {
	if !p.calendar {
		return now - mod(now, p.seconds)
	}
	t := time.Unix(now, 0).UTC()
	month := t.Month()
	if p.name == "year" {
		month = time.January
	}
	return time.Date(t.Year(), month, 1, 0, 0, 0, 0, time.UTC).Unix()
}

// windowEnd is the end of the window starting at start.
func (p period) windowEnd(start int64) int64 {
	if !p.calendar {
		return start + p.seconds
	}
	t := time.Unix(start, 0).UTC()
	if p.name == "year" {
		return t.AddDate(1, 0, 0).Unix()
	}
	return t.AddDate(0, 1, 0).Unix()
}

// mod is the non-negative remainder, so times before 1970 floor correctly.
func mod(a, b int64) int64 {
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}
