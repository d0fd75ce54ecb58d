// Command rate-limiting-go is Kong's rate-limiting plugin (local policy) as a
// Proxy-Wasm filter in Go.
//
// Configuration: {"second": N, "minute": N, "hour": N, "day": N}, at least one.
// Counters live in shared data under
// "ratelimit:<plugin_root_id or plugin_name>:<window>:<window start, unix seconds>"
// as decimal text, updated with compare-and-swap and retried on CAS_MISMATCH.
// Responses carry X-RateLimit-Limit-<Window>, X-RateLimit-Remaining-<Window>,
// RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset; a request over a
// limit gets 429 {"message":"API rate limit exceeded"} with Retry-After and is
// not counted. A one-second tick deletes the counters of finished windows.
package main

import (
	"strconv"

	"twistgate/proxywasm"
)

const (
	filterName    = "rate-limiting-go"
	tickPeriodMs  = 1000
	casRetries    = 32
	exceededBody  = `{"message":"API rate limit exceeded"}`
	exceededCType = "application/json; charset=utf-8"
)

type rateLimitRoot struct {
	proxywasm.DefaultRootContext
	limits     []limit
	keyPrefix  string
	ticking    bool
	liveCounts map[string]int64 // counter key -> window end (unix seconds)
}

func (r *rateLimitRoot) OnConfigure(size int) bool {
	data, err := proxywasm.PluginConfiguration(size)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, filterName+": reading configuration: "+err.Error())
		return false
	}
	limits, err := parseConfig(data)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, filterName+": "+err.Error())
		return false
	}
	r.limits = limits
	r.keyPrefix = "ratelimit:" + rootName() + ":"
	if !r.ticking {
		if err := proxywasm.SetTickPeriod(tickPeriodMs); err != nil {
			proxywasm.Log(proxywasm.LogWarn, filterName+": no tick, expired counters stay: "+err.Error())
		}
		r.ticking = true
	}
	return true
}

// rootName names this filter entry in counter keys: the plugin root id, else
// the plugin name, else the filter's own name.
func rootName() string {
	for _, property := range []string{"plugin_root_id", "plugin_name"} {
		if value, err := proxywasm.Property(property); err == nil && len(value) > 0 {
			return string(value)
		}
	}
	return filterName
}

func (r *rateLimitRoot) key(w window, start int64) string {
	return r.keyPrefix + w.name + ":" + strconv.FormatInt(start, 10)
}

// OnTick deletes the counters of windows that have ended.
func (r *rateLimitRoot) OnTick() {
	now, err := nowSeconds()
	if err != nil {
		return
	}
	pruned := 0
	for key, end := range r.liveCounts {
		if end > now {
			continue
		}
		delete(r.liveCounts, key)
		if _, cas, err := proxywasm.SharedData(key); err == nil {
			if proxywasm.DeleteSharedData(key, cas) == nil {
				pruned++
			}
		}
	}
	if pruned > 0 {
		proxywasm.Log(proxywasm.LogDebug, filterName+": pruned "+strconv.Itoa(pruned)+" expired counters")
	}
}

func (r *rateLimitRoot) NewHTTPContext(uint32) proxywasm.HTTPContext {
	return &rateLimit{root: r}
}

func nowSeconds() (int64, error) {
	nanos, err := proxywasm.CurrentTimeNanoseconds()
	if err != nil {
		proxywasm.Log(proxywasm.LogError, filterName+": reading the clock: "+err.Error())
		return 0, err
	}
	return nanos / 1e9, nil
}

// readCount returns a counter's value and CAS (0, 0 when absent).
func readCount(key string) (int64, uint32, error) {
	value, cas, err := proxywasm.SharedData(key)
	if err == proxywasm.StatusNotFound {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	if len(value) == 0 {
		return 0, cas, nil
	}
	count, err := strconv.ParseInt(string(value), 10, 64)
	if err != nil {
		return 0, cas, nil
	}
	return count, cas, nil
}

// increment adds one to a counter, retrying while another writer wins.
func increment(key string) error {
	var err error
	for attempt := 0; attempt < casRetries; attempt++ {
		var count int64
		var cas uint32
		count, cas, err = readCount(key)
		if err != nil {
			return err
		}
		err = proxywasm.SetSharedData(key, []byte(strconv.FormatInt(count+1, 10)), cas)
		if err != proxywasm.StatusCasMismatch {
			return err
		}
	}
	return err
}

type rateLimit struct {
	proxywasm.DefaultHTTPContext
	root          *rateLimitRoot
	headers       []proxywasm.Header
	localResponse bool
}

// usage is one window's state for the current request.
type usage struct {
	limit
	start     int64
	remaining int64
}

func (c *rateLimit) OnRequestHeaders(int, bool) proxywasm.Action {
	root := c.root
	now, err := nowSeconds()
	if err != nil {
		return proxywasm.ActionContinue
	}
	usages := make([]usage, len(root.limits))
	stop := -1
	for i, l := range root.limits {
		start := now - now%l.seconds
		count, _, err := readCount(root.key(l.window, start))
		if err != nil {
			proxywasm.Log(proxywasm.LogError, filterName+": reading counter: "+err.Error())
		}
		usages[i] = usage{l, start, l.max - count}
		if usages[i].remaining <= 0 {
			stop = i
		}
	}
	var reset int64
	c.headers, reset = clientHeaders(usages, stop, now)
	if stop >= 0 {
		headers := append(c.headers,
			proxywasm.Header{Name: "Retry-After", Value: strconv.FormatInt(reset, 10)},
			proxywasm.Header{Name: "Content-Type", Value: exceededCType})
		if err := proxywasm.SendLocalResponse(429, "Too Many Requests", headers, []byte(exceededBody)); err != nil {
			proxywasm.Log(proxywasm.LogError, filterName+": sending 429: "+err.Error())
			return proxywasm.ActionContinue
		}
		c.localResponse = true
		return proxywasm.ActionPause
	}
	if root.liveCounts == nil {
		root.liveCounts = map[string]int64{}
	}
	for _, u := range usages {
		key := root.key(u.window, u.start)
		if err := increment(key); err != nil {
			proxywasm.Log(proxywasm.LogError, filterName+": updating "+key+": "+err.Error())
		}
		root.liveCounts[key] = u.start + u.seconds
	}
	return proxywasm.ActionContinue
}

// clientHeaders builds Kong's rate-limit headers and the seconds until the
// most constraining window resets. The window that stopped the request (or
// every window, when none did) counts this request in its remaining value.
func clientHeaders(usages []usage, stop int, now int64) ([]proxywasm.Header, int64) {
	headers := make([]proxywasm.Header, 0, 2*len(usages)+3)
	var chosen *usage
	var chosenRemaining, reset int64
	for i := range usages {
		u := &usages[i]
		remaining := u.remaining
		if stop < 0 || stop == i {
			remaining--
		}
		if remaining < 0 {
			remaining = 0
		}
		if chosen == nil || remaining < chosenRemaining || (remaining == chosenRemaining && u.seconds > chosen.seconds) {
			chosen, chosenRemaining = u, remaining
			reset = u.seconds - (now - u.start)
			if reset < 1 {
				reset = 1
			}
		}
		headers = append(headers,
			proxywasm.Header{Name: "X-RateLimit-Limit-" + u.title, Value: strconv.FormatInt(u.max, 10)},
			proxywasm.Header{Name: "X-RateLimit-Remaining-" + u.title, Value: strconv.FormatInt(remaining, 10)})
	}
	headers = append(headers,
		proxywasm.Header{Name: "RateLimit-Limit", Value: strconv.FormatInt(chosen.max, 10)},
		proxywasm.Header{Name: "RateLimit-Remaining", Value: strconv.FormatInt(chosenRemaining, 10)},
		proxywasm.Header{Name: "RateLimit-Reset", Value: strconv.FormatInt(reset, 10)})
	return headers, reset
}

func (c *rateLimit) OnResponseHeaders(int, bool) proxywasm.Action {
	if c.localResponse {
		return proxywasm.ActionContinue
	}
	for _, h := range c.headers {
		if err := proxywasm.ReplaceHeader(proxywasm.MapResponseHeaders, h.Name, h.Value); err != nil {
			proxywasm.Log(proxywasm.LogError, filterName+": setting "+h.Name+": "+err.Error())
		}
	}
	return proxywasm.ActionContinue
}

func init() {
	proxywasm.SetRootContextFactory(func(uint32) proxywasm.RootContext { return &rateLimitRoot{} })
}

func main() {}
