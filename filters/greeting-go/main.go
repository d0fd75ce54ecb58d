// Command greeting-go is the greeting filter in Go: it reads my_greeting from
// its JSON configuration and adds X-Greeting: <my_greeting> to every response
// ("Hello, World!" when the field is absent). A configuration that is not a
// JSON object, or whose my_greeting is not a string, is rejected.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"twistgate/proxywasm"
)

const defaultGreeting = "Hello, World!"

type greetingRoot struct {
	proxywasm.DefaultRootContext
	greeting string
}

func (r *greetingRoot) OnConfigure(size int) bool {
	data, err := proxywasm.PluginConfiguration(size)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, "greeting-go: reading configuration: "+err.Error())
		return false
	}
	if len(bytes.TrimSpace(data)) == 0 {
		r.greeting = defaultGreeting
		return true
	}
	greeting, err := greetingFrom(data)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, "greeting-go: "+err.Error())
		return false
	}
	r.greeting = greeting
	proxywasm.Log(proxywasm.LogInfo, "greeting-go: configured with "+strconv.Quote(r.greeting))
	return true
}

// greetingFrom reads my_greeting from a JSON object; an error says what is wrong.
func greetingFrom(data []byte) (string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return "", errors.New("configuration must be a JSON object: " + string(data))
	}
	raw, ok := fields["my_greeting"]
	if !ok {
		return defaultGreeting, nil
	}
	var greeting string
	if err := json.Unmarshal(raw, &greeting); err != nil || bytes.Equal(raw, []byte("null")) {
		return "", errors.New("my_greeting must be a string, not " + string(raw))
	}
	return greeting, nil
}

func (r *greetingRoot) NewHTTPContext(uint32) proxywasm.HTTPContext {
	return &greeting{greeting: r.greeting}
}

type greeting struct {
	proxywasm.DefaultHTTPContext
	greeting string
}

func (g *greeting) OnResponseHeaders(int, bool) proxywasm.Action {
	if err := proxywasm.AddHeader(proxywasm.MapResponseHeaders, "X-Greeting", g.greeting); err != nil {
		proxywasm.Log(proxywasm.LogError, "greeting-go: adding X-Greeting: "+err.Error())
	}
	return proxywasm.ActionContinue
}

func init() {
	proxywasm.SetRootContextFactory(func(uint32) proxywasm.RootContext { return &greetingRoot{greeting: defaultGreeting} })
}

func main() {}
