# signpost: common tasks. `make test` is the test command CI runs.
GO ?= go
BIN ?= bin

.PHONY: build test test-short fuzz bench demo demo-clean clean images images-push

build:
	@echo "building $(BIN)/signpost: the first build compiles ~580 packages (a few minutes on 2 cores), listed as they go"
	CGO_ENABLED=0 $(GO) build -v -trimpath -o $(BIN)/signpost ./cmd/signpost

test:
	$(GO) test -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

fuzz:
	$(GO) test -run XXX -fuzz FuzzRespond -fuzztime 60s ./internal/dnsserver/
	$(GO) test -run XXX -fuzz FuzzAnswerUDP -fuzztime 60s ./internal/zonexfr/

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

# The four images of deploy/aws (signpost, time, calc, portal): FROM scratch
# around static linux binaries, tagged $(IMAGE_PREFIX)/<name>:latest.
IMAGE_PREFIX ?= signpost-demo
images:
	GOOS=linux DEMO_PREFIX=$(IMAGE_PREFIX) bash examples/demo/demo.sh images

# Builds the images and pushes them to ECR as $(REGISTRY)/<name>:$(TAG).
# REGISTRY is deploy/aws/ecr.yaml's RegistryPrefix output
# (<account>.dkr.ecr.<region>.amazonaws.com/signpost); see deploy/aws/README.md.
TAG ?= latest
REGISTRY_HOST = $(firstword $(subst /, ,$(REGISTRY)))
images-push: images
	@test -n "$(REGISTRY)" || { echo "images-push: set REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com/signpost (ecr.yaml's RegistryPrefix output)" >&2; exit 2; }
	aws ecr get-login-password --region $(word 4,$(subst ., ,$(REGISTRY_HOST))) | docker login --username AWS --password-stdin $(REGISTRY_HOST)
	for n in signpost time calc portal; do \
	  docker tag $(IMAGE_PREFIX)/$$n:latest $(REGISTRY)/$$n:$(TAG) && docker push $(REGISTRY)/$$n:$(TAG) || exit 1; \
	done
