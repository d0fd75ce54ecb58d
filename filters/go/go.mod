module twistgate/proxywasm

go 1.25
