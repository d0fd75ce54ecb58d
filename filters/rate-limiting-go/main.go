// Command rate-limiting-go is Kong's rate-limiting plugin (policy local) as a
// Proxy-Wasm filter in Go; it behaves as filters/rate-limiting (Rust) does.
//
// Configuration (JSON object): limits per second, minute, hour, day, month,
// year (numbers > 0, at least one, none lower than a shorter period's);
// limit_by (ip by default, header with header_name, path with path,
// service); policy (local); fault_tolerant; hide_client_headers; error_code
// (429); error_message ("API rate limit exceeded").
//
// Counters live in shared data, one key per scope, identifier, period and
// window start, holding the count in decimal:
// "rl:<config hash>:<route id>:<service id>:<identifier>:<period>:<window start>".
// They are read in on_request_headers; when a limit is reached the request
// gets error_code with {"message":"<error_message>"} and Retry-After;
// otherwise every counter is incremented with CAS (retried on CAS_MISMATCH)
// and the response gets X-RateLimit-Limit-<Period>,
// X-RateLimit-Remaining-<Period>, RateLimit-Limit, RateLimit-Remaining and
// RateLimit-Reset as Kong 3.4 sends them. Time comes from
// proxy_get_current_time_nanoseconds. A tick every second deletes the
// counters of windows that have ended and logs the usage at DEBUG.
package main

import (
	"fmt"
	"strconv"
	"strings"

	"twistgate/proxywasm"
)

const (
	filterName   = "rate-limiting-go"
	tickPeriodMs = 1000
	casAttempts  = 32
)

type rateLimitRoot struct {
	proxywasm.DefaultRootContext
	config  *config
	ticking bool
	// tracked holds the counter keys this instance wrote, with the second
	// their window ends.
	tracked map[string]int64
}

func (r *rateLimitRoot) OnConfigure(size int) bool {
	text, err := proxywasm.PluginConfiguration(size)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, filterName+": reading configuration: "+err.Error())
		return false
	}
	conf, err := parseConfig(text)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, filterName+": invalid configuration: "+err.Error())
		return false
	}
	described := make([]string, len(conf.limits))
	for i, l := range conf.limits {
		described[i] = l.name + "=" + numberText(l.max)
	}
	proxywasm.Log(proxywasm.LogInfo, filterName+": configured with "+strings.Join(described, ", "))
	r.config = conf
	if !r.ticking {
		r.ticking = proxywasm.SetTickPeriod(tickPeriodMs) == nil
	}
	return true
}

// OnTick deletes the counters of windows that have ended.
func (r *rateLimitRoot) OnTick() {
	now, err := nowSeconds()
	if err != nil {
		return
	}
	removed := 0
	for key, ends := range r.tracked {
		if ends > now {
			continue
		}
		if _, cas, err := readCounter(key); err == nil && cas != 0 {
			proxywasm.DeleteSharedData(key, cas)
		}
		delete(r.tracked, key)
		removed++
	}
	proxywasm.Log(proxywasm.LogDebug, fmt.Sprintf("%s: %d live counters, %d expired removed",
		filterName, len(r.tracked), removed))
}

func (r *rateLimitRoot) NewHTTPContext(uint32) proxywasm.HTTPContext {
	if r.config == nil {
		return nil
	}
	if r.tracked == nil {
		r.tracked = map[string]int64{}
	}
	return &rateLimit{config: r.config, tracked: r.tracked}
}

func nowSeconds() (int64, error) {
	nanos, err := proxywasm.CurrentTimeNanoseconds()
	return nanos / 1e9, err
}

// propertyText reads a property as text ("" when absent or empty).
func propertyText(path ...string) string {
	value, err := proxywasm.Property(path...)
	if err != nil {
		return ""
	}
	return string(value)
}

// clientAddress is Kong's ngx.remote_addr, else Envoy's source.address
// without its port.
func clientAddress() string {
	if address := propertyText("ngx", "remote_addr"); address != "" {
		return address
	}
	address := propertyText("source", "address")
	switch {
	case address == "":
		return "unknown"
	case strings.HasPrefix(address, "["):
		host, _, _ := strings.Cut(address[1:], "]")
		return host
	case strings.Count(address, ":") == 1:
		host, _, _ := strings.Cut(address, ":")
		return host
	}
	return address
}

// identifier is what this request's counters count for.
func identifier(by limitBy) string {
	switch by.kind {
	case "service":
		return propertyText("kong", "service_id")
	case "header":
		if value, err := proxywasm.HeaderValue(proxywasm.MapRequestHeaders, by.header); err == nil && value != "" {
			return value
		}
	case "path":
		if requested, err := proxywasm.HeaderValue(proxywasm.MapRequestHeaders, ":path"); err == nil {
			if path, _, _ := strings.Cut(requested, "?"); path == by.path {
				return by.path
			}
		}
	}
	return clientAddress()
}

// readCounter returns a counter and its CAS; (0, 0) when absent.
func readCounter(key string) (float64, uint32, error) {
	value, cas, err := proxywasm.SharedData(key)
	if err == proxywasm.StatusNotFound {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	count, parseErr := strconv.ParseFloat(string(value), 64)
	if parseErr != nil {
		count = 0
	}
	return count, cas, nil
}

// incrementCounter adds one with CAS, re-reading and retrying on
// CAS_MISMATCH; it returns the new count.
func incrementCounter(key string, current float64, cas uint32) (float64, error) {
	for attempt := 0; attempt < casAttempts; attempt++ {
		next := current + 1
		err := proxywasm.SetSharedData(key, []byte(numberText(next)), cas)
		if err == nil {
			return next, nil
		}
		if err != proxywasm.StatusCasMismatch {
			return 0, err
		}
		if current, cas, err = readCounter(key); err != nil {
			return 0, err
		}
	}
	return 0, proxywasm.StatusCasMismatch
}

type rateLimit struct {
	proxywasm.DefaultHTTPContext
	config  *config
	tracked map[string]int64
	// headers for the response, decided in OnRequestHeaders.
	headers []proxywasm.Header
	// answered is set when this filter answered the request itself.
	answered bool
}

// usage is one period's state for this request.
type usage struct {
	limit
	key   string
	count float64
	cas   uint32
	start int64 // start of the current window
}

func (c *rateLimit) usages(now int64) ([]usage, error) {
	route := propertyText("kong", "route_id")
	service := propertyText("kong", "service_id")
	who := identifier(c.config.limitBy)
	usages := make([]usage, 0, len(c.config.limits))
	for _, l := range c.config.limits {
		start := l.windowStart(now)
		key := fmt.Sprintf("rl:%016x:%s:%s:%s:%s:%d", c.config.scope, route, service, who, l.name, start)
		count, cas, err := readCounter(key)
		if err != nil {
			return nil, err
		}
		usages = append(usages, usage{l, key, count, cas, start})
	}
	return usages, nil
}

func (c *rateLimit) answer(status uint32, message string, headers []proxywasm.Header) proxywasm.Action {
	body := `{"message":` + jsonQuote(message) + `}`
	headers = append(headers, proxywasm.Header{Name: "Content-Type", Value: "application/json; charset=utf-8"})
	if err := proxywasm.SendLocalResponse(status, "", headers, []byte(body)); err != nil {
		proxywasm.Log(proxywasm.LogError, filterName+": local response failed: "+err.Error())
	}
	c.answered = true
	return proxywasm.ActionPause
}

func (c *rateLimit) fail(err error) proxywasm.Action {
	proxywasm.Log(proxywasm.LogError, filterName+": shared data failed: "+err.Error())
	if c.config.faultTolerant {
		return proxywasm.ActionContinue
	}
	return c.answer(500, "An unexpected error occurred", nil)
}

func (c *rateLimit) OnRequestHeaders(int, bool) proxywasm.Action {
	now, err := nowSeconds()
	if err != nil {
		return c.fail(err)
	}
	usages, err := c.usages(now)
	if err != nil {
		return c.fail(err)
	}
	stop := -1
	for i := len(usages) - 1; i >= 0 && stop < 0; i-- {
		if usages[i].max-usages[i].count <= 0 {
			stop = i
		}
	}
	if stop < 0 {
		for i := range usages {
			u := &usages[i]
			count, err := incrementCounter(u.key, u.count, u.cas)
			if err != nil {
				return c.fail(err)
			}
			u.count = count - 1
			c.tracked[u.key] = u.windowEnd(u.start)
		}
	}

	var headers []proxywasm.Header
	chosen := -1
	var chosenRemaining float64
	for i, u := range usages {
		remaining := u.max - u.count
		if stop < 0 || stop == i {
			remaining--
		}
		if remaining < 0 {
			remaining = 0
		}
		if chosen < 0 || remaining < chosenRemaining ||
			(remaining == chosenRemaining && u.seconds > usages[chosen].seconds) {
			chosen, chosenRemaining = i, remaining
		}
		headers = append(headers,
			proxywasm.Header{Name: "X-RateLimit-Limit-" + u.title, Value: numberText(u.max)},
			proxywasm.Header{Name: "X-RateLimit-Remaining-" + u.title, Value: numberText(remaining)})
	}
	best := usages[chosen]
	reset := best.seconds - (now - best.start)
	if reset < 1 {
		reset = 1
	}
	headers = append(headers,
		proxywasm.Header{Name: "RateLimit-Limit", Value: numberText(best.max)},
		proxywasm.Header{Name: "RateLimit-Remaining", Value: numberText(chosenRemaining)},
		proxywasm.Header{Name: "RateLimit-Reset", Value: strconv.FormatInt(reset, 10)})
	if c.config.hideClientHeaders {
		headers = nil
	}
	if stop >= 0 {
		headers = append(headers, proxywasm.Header{Name: "Retry-After", Value: strconv.FormatInt(reset, 10)})
		return c.answer(c.config.errorCode, c.config.errorMessage, headers)
	}
	c.headers = headers
	return proxywasm.ActionContinue
}

func (c *rateLimit) OnResponseHeaders(int, bool) proxywasm.Action {
	if c.answered {
		return proxywasm.ActionContinue
	}
	for _, h := range c.headers {
		if err := proxywasm.ReplaceHeader(proxywasm.MapResponseHeaders, h.Name, h.Value); err != nil {
			proxywasm.Log(proxywasm.LogError, filterName+": setting "+h.Name+": "+err.Error())
		}
	}
	return proxywasm.ActionContinue
}

// jsonQuote is a JSON string literal for text.
func jsonQuote(text string) string {
	var out strings.Builder
	out.WriteByte('"')
	for _, r := range text {
		switch {
		case r == '"':
			out.WriteString(`\"`)
		case r == '\\':
			out.WriteString(`\\`)
		case r == '\n':
			out.WriteString(`\n`)
		case r == '\r':
			out.WriteString(`\r`)
		case r == '\t':
			out.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			out.WriteRune(r)
		}
	}
	out.WriteByte('"')
	return out.String()
}

func init() {
	proxywasm.SetRootContextFactory(func(uint32) proxywasm.RootContext { return &rateLimitRoot{} })
}

func main() {}
