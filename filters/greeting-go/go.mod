module twistgate/filters/greeting-go

go 1.25

require twistgate/proxywasm v0.0.0

replace twistgate/proxywasm => ../go
