# pep: `make run` serves the example policies, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PEP    := $(VENV)/bin/pep
STAMP  := $(VENV)/.installed
DEV    := .pep/dev
PROTO_OUT := pep/_proto
PROTOS    := proto/pep/v1/authorizer.proto proto/pep/v1/admin.proto
# Envoy's ext_authz API (a minimal vendored subset, upstream names and field numbers).
PROTOS    += proto/envoy/service/auth/v3/external_auth.proto proto/envoy/service/auth/v3/attribute_context.proto \
	proto/envoy/config/core/v3/base.proto proto/envoy/type/v3/http_status.proto proto/google/rpc/status.proto

.PHONY: run test lint typecheck proto proto-check install clean token bench

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## run: serve the example policies with a development issuer on 127.0.0.1:50051
run: $(STAMP)
	$(PEP) token --init --dev-dir $(DEV)
	$(PEP) serve --config pep.dev.yaml

## test: the whole test suite (two workers; TEST_WORKERS=0 runs it in one process)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

## lint: ruff, then the import contracts of pyproject.toml (the layers in the README's Layout)
lint: $(STAMP)
	$(VENV)/bin/ruff check pep tests
	$(VENV)/bin/ruff format --check pep tests
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy pep

## proto: regenerate pep/_proto from proto/
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		--grpc_python_out=$(PROTO_OUT) $(PROTOS)
	$(PY) scripts/fix_proto_imports.py $(PROTO_OUT)

## proto-check: fail if the committed generated code differs from a fresh generation
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp \
		$(PROTOS) && \
	$(PY) scripts/fix_proto_imports.py $$tmp && \
	diff -r -x __pycache__ -x __init__.py $$tmp $(PROTO_OUT) && echo "proto: generated code is up to date" ; \
	rc=$$?; rm -rf $$tmp; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## bench: pep, Cerbos and a no-op gRPC server side by side (npm fetches the load generator and Cerbos), then scale curves (several minutes)
bench: $(STAMP)
	$(PY) -m bench.run
