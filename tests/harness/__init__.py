"""The shared test harness: plain modules any test may import.

Fixtures live in conftest.py files (the root one re-exposes these as fixtures); test modules
import helpers from here, never from another folder's conftest or test module.

- server.py: a real pep on ephemeral ports and a gRPC client to it (Harness)
- estate.py: the small fixed agent estate the server tests run against
- forge.py: tokens and proofs built by hand, to break exactly one thing
- tokens.py: the token tests' Env (verifiers and tokens for one issuer), clock, JWKS files
- waits.py: polling, the metrics text, free ports
- decision_log.py: the decision log's fields and reading its lines
- authzen.py, envoy.py, certs.py, fake_pep.py, prometheus.py: helpers of one transport or tool
"""
