# signpost: common tasks. `make test` is the test command CI runs.
GO ?= go
BIN ?= bin

.PHONY: build test test-short fuzz bench demo demo-clean clean

build:
	@echo "building $(BIN)/signpost: the first build compiles ~580 packages (a few minutes on 2 cores), listed as they go"
	CGO_ENABLED=0 $(GO) build -v -trimpath -o $(BIN)/signpost ./cmd/signpost

test:
	$(GO) test -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

fuzz:
	$(GO) test -run XXX -fuzz FuzzRespond -fuzztime 60s ./internal/dnsserver/

bench:
	$(GO) test -run XXX -bench . -benchmem ./internal/dnsserver/

# The one-command demo: signpost, two time, two calc and a portal in Docker.
demo:
	bash examples/demo/demo.sh up

# Removes everything `make demo` created, and nothing else.
demo-clean:
	bash examples/demo/demo.sh down

clean:
	rm -rf $(BIN)
