"""The closed set of reason codes shared by responses, decision logs and metric labels."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    ALLOWED = "allowed"
    POLICY_FORBID = "policy_forbid"
    POLICY_NO_PERMIT = "policy_no_permit"
    EVALUATION_ERROR = "evaluation_error"
    INVALID_REQUEST = "invalid_request"
    TOKEN_MISSING = "token_missing"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_SIGNATURE_INVALID = "token_signature_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ISSUER_UNTRUSTED = "token_issuer_untrusted"
    TOKEN_AUDIENCE_INVALID = "token_audience_invalid"
    TOKEN_ALGORITHM_REJECTED = "token_algorithm_rejected"
    TOKEN_TYPE_INVALID = "token_type_invalid"
    TOKEN_CLAIMS_MISSING = "token_claims_missing"
    TOKEN_REVOKED = "token_revoked"
    CHAIN_TOO_DEEP = "chain_too_deep"
    CHAIN_CYCLE = "chain_cycle"
    CHAIN_UNKNOWN_AGENT = "chain_unknown_agent"
    CHAIN_DELEGATION_FORBIDDEN = "chain_delegation_forbidden"
    DPOP_PROOF_MISSING = "dpop_proof_missing"
    DPOP_PROOF_INVALID = "dpop_proof_invalid"
    DPOP_REPLAY = "dpop_replay"
    DPOP_NONCE_REQUIRED = "dpop_nonce_required"
    POP_BINDING_MISMATCH = "pop_binding_mismatch"
    AGENT_DISABLED = "agent_disabled"
    AGENT_EXPIRED = "agent_expired"
    RATE_LIMITED = "rate_limited"
    POLICY_UNAVAILABLE = "policy_unavailable"
    INTERNAL_ERROR = "internal_error"


ALL_REASONS: tuple[str, ...] = tuple(r.value for r in Reason)
