// Command greeting-go is the greeting filter in Go: it reads my_greeting from
// its JSON configuration and adds X-Greeting: <my_greeting> to every response
// ("Hello, World!" when the field is absent). A configuration that is not a
// JSON object, or whose my_greeting is not a string, is rejected.
package main

import (
	"bytes"
	"encoding/json"
	"strconv"

	"twistgate/proxywasm"
)

const defaultGreeting = "Hello, World!"

type config struct {
	MyGreeting *string `json:"my_greeting"`
}

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
	r.greeting = defaultGreeting
	if len(bytes.TrimSpace(data)) == 0 {
		return true
	}
	var conf config
	if err := json.Unmarshal(data, &conf); err != nil {
		proxywasm.Log(proxywasm.LogError, "greeting-go: invalid configuration: "+err.Error())
		return false
	}
	if conf.MyGreeting != nil {
		r.greeting = *conf.MyGreeting
	}
	proxywasm.Log(proxywasm.LogInfo, "greeting-go: configured with "+strconv.Quote(r.greeting))
	return true
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
