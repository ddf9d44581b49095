"""The config file's sections: one frozen dataclass each, with its defaults.

Modules are handed the section they use (`TokenConfig`, `ReloadConfig`, ...); only the
composition root, the CLI and the suite runner read the whole `Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("enforce", "dry_run")
# `issuers[].profile` names; the presets themselves are in pep/tokens/profiles.py.
PROFILES = (
    "rfc9068",
    "okta",
    "entra",
    "auth0",
    "ping",
    "zitadel",
    "workos",
    "keycloak",
    "hydra",
    "vault",
    "cognito",
    "spiffe",
    "txntoken",
)


@dataclass(frozen=True)
class IssuerClaims:
    """`issuers[].claims`: claim names overriding the profile's (None: the profile's)."""

    agent: tuple[str, ...] | None = None
    user: tuple[str, ...] | None = None
    scopes: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwks_file: str | None = None
    jwks_uri: str | None = None
    # Where this IdP's tokens carry agent, user, scopes (pep/tokens/profiles.py); rfc9068 is today's.
    profile: str = "rfc9068"
    claims: IssuerClaims = field(default_factory=IssuerClaims)
    # Per issuer, over the profile and the global tokens.required_claims / tokens.accept_jwt_typ.
    required_claims: tuple[str, ...] | None = None
    accept_typ: tuple[str, ...] | None = None
    # DPoP-bound tokens of this issuer need a proof carrying the server's nonce (RFC 9449 8).
    dpop_nonce: bool = False
    # profile spiffe only (and required there): the SPIFFE trust domain of its SVIDs' `sub`.
    trust_domain: str = ""


@dataclass(frozen=True)
class TokenConfig:
    leeway_seconds: int = 30
    max_token_bytes: int = 8192
    # RFC 9068 wants `at+jwt`; some identity providers still send `JWT`.
    accept_jwt_typ: bool = False
    # RFC 9068 section 2.2. `client_id` is also satisfied by `azp`.
    required_claims: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
    max_lifetime_seconds: int = 86400
    dpop_max_age_seconds: int = 300
    dpop_future_skew_seconds: int = 30
    dpop_algorithms: tuple[str, ...] = ("ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA", "Ed25519")
    dpop_replay_cache_size: int = 100_000
    # OAuth Token Status List (a `status.status_list` claim): the longest a fetched list is used
    # before it is fetched again (its own `ttl` when shorter).
    status_list_cache_seconds: int = 300
    # Server nonces (issuers with dpop_nonce): one per period; the previous one valid for grace after it.
    dpop_nonce_seconds: int = 300
    dpop_nonce_grace_seconds: int = 60
    # jwks_uri issuers: refresh period when the JWKS response has no max-age, and the
    # least time between refetches triggered by an unknown `kid`.
    jwks_cache_seconds: int = 300
    jwks_min_refetch_seconds: int = 30
    # jwks_file issuers: how often the file is checked for a change (mtime, size, inode) and reloaded.
    jwks_file_poll_seconds: float = 2.0


@dataclass(frozen=True)
class DelegationConfig:
    max_depth: int = 4
    require_grants: bool = True


@dataclass(frozen=True)
class IdentityConfig:
    # Claim holding the user's groups, which become `Group` parents of the user.
    user_groups_claim: str = "groups"
    # Token claims copied onto the `User` entity as attributes.
    user_claims: tuple[str, ...] = ()
    # An agent whose registry entry lists no `scopes` gets none (instead of the token's).
    require_registry_scopes: bool = False


@dataclass(frozen=True)
class ReloadConfig:
    # Quiet time after the last file event before a reload: one reload per burst of writes.
    settle_seconds: float = 0.15
    # Content-hash check that catches any event the watcher missed.
    poll_seconds: float = 5.0
    # Turn the filesystem watcher off (the periodic check still runs).
    watch: bool = True


@dataclass(frozen=True)
class DecisionLogConfig:
    sink: str = "stdout"
    required: bool = False
    queue_size: int = 10_000
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 5
    # Claims never written to the log, on top of the token, proof and keys.
    redact_claims: tuple[str, ...] = ()
    # With `required`: how far an allow's entry must have gone before the allow is answered.
    # write: handed to the operating system (survives a crash of pep); fsync: on the disk.
    sync: str = "write"
    # Every entry carries `seq` and `prev` (SHA-256 of the line before): `pep log verify`.
    chain: bool = False
    # Dotted paths into a request's context whose values are never written (`card.number`).
    redact_context: tuple[str, ...] = ()
    # What one entry keeps of the request's own Cedar inputs (context, attributes, ...); more is cut.
    max_inputs_bytes: int = 16 * 1024


@dataclass(frozen=True)
class AuthzenConfig:
    """The OpenID AuthZEN Authorization API over HTTP; off while `listen` is empty."""

    listen: str = ""
    # Take the body's subject as given (loopback or Unix socket only); else it comes from a token.
    trust_subject: bool = False
    max_body_bytes: int = 1024 * 1024
    max_evaluations: int = 1000
    # The body must arrive, and the response be written, within this (each, per request).
    timeout_seconds: float = 10.0
    # The whole request head must arrive within this of connecting or of the previous response.
    header_timeout_seconds: float = 10.0
    # Open connections from one client address (a Unix socket's clients count as one).
    max_connections_per_client: int = 32
    threads: int = 8
    # `policy_decision_point` in the metadata document; default: http:// plus the bound address.
    base_url: str = ""


@dataclass(frozen=True)
class McpConfig:
    """The MCP authorization proxy (Streamable HTTP) in front of one MCP server; off while `listen` is empty."""

    listen: str = ""
    path: str = "/mcp"
    # The MCP server pep protects (http or https).
    upstream: str = ""
    # Its canonical URI (RFC 8707): the audience every token on this listener must name.
    resource: str = ""
    # Tools, resources and prompts are children of McpServer::"<server_id>".
    server_id: str = ""
    authorization_servers: tuple[str, ...] = ()
    # How clients reach pep (DPoP `htu`, the metadata document); default http://<listen>.
    public_url: str = ""
    # Methods pep does not know (and batches) are denied unless this is true.
    allow_unknown_methods: bool = False
    # Take the client certificate's hash from x-forwarded-client-cert (a TLS proxy in front sets it).
    trust_xfcc: bool = False
    # One JSON-RPC message from the client, and one from the upstream when pep must read it whole.
    max_body_bytes: int = 4 * 1024 * 1024
    # A client's request body within this; the upstream's answer head within upstream_timeout_seconds.
    timeout_seconds: float = 30.0
    upstream_timeout_seconds: float = 30.0
    header_timeout_seconds: float = 10.0
    max_connections_per_client: int = 32
    # Worker threads for decisions (token checks and Cedar run off the event loop).
    threads: int = 4


@dataclass(frozen=True)
class ExtAuthzRule:
    """Method + path pattern to action and resource (see `pep.config.routes`)."""

    path: str
    action: str
    resource: str
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtAuthzConfig:
    """Envoy ext_authz (`envoy.service.auth.v3.Authorization`) on the gRPC port."""

    enabled: bool = True
    # Request headers naming the action and the resource (`Type::"id"`); "" turns one off.
    action_header: str = "x-pep-action"
    resource_header: str = "x-pep-resource"
    # Use Envoy's x-forwarded-client-cert `Hash=` when the peer certificate is not sent.
    trust_xfcc: bool = True
    # `realm` of WWW-Authenticate challenges; "" leaves it out.
    realm: str = ""
    rules: tuple[ExtAuthzRule, ...] = ()


STATE_ON_UNAVAILABLE = ("local", "deny")


@dataclass(frozen=True)
class StateConfig:
    """State shared by the replicas of a fleet (Redis); without `redis_url`, all stays per process."""

    # redis://, rediss:// (TLS) or unix://; the password may be in it or in REDIS_PASSWORD.
    redis_url: str = ""
    # Several estates can share one Redis.
    key_prefix: str = "pep:"
    # Per Redis call on the request path.
    timeout_ms: int = 50
    # local: fall back to per-process state; deny: refuse what needs the shared state.
    on_unavailable: str = "local"
    # Without Redis: where admin flips are kept across restarts ("" keeps them in memory only).
    file: str = ""


ANOMALY_KINDS = ("deny_ratio", "rate", "new_action")
ANOMALY_ACTIONS = ("alert", "suspend")


@dataclass(frozen=True)
class AnomalyRule:
    """One rule over each agent's recent decisions (pep/controls/anomaly.py); fields a kind does not use are 0."""

    name: str
    kind: str
    action: str = "alert"
    # deny_ratio: the share of denies (0 to 1); rate: decisions per second.
    threshold: float = 0.0
    min_decisions: int = 0
    window_seconds: int = 0
    # new_action: how long after an agent's first decision its allowed actions are only learned.
    learning_seconds: int = 0


@dataclass(frozen=True)
class AnomalyConfig:
    rules: tuple[AnomalyRule, ...] = ()


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    admin_listen: str = "127.0.0.1:50052"
    # The admin API may listen beyond loopback only when this says so.
    admin_allow_remote: bool = False
    policies: str = "./policies"
    # Refuse a policy set without schema.cedarschema (start-up serves nothing, a reload is a failure).
    policies_require_schema: bool = True
    mode: str = "enforce"
    issuers: tuple[IssuerConfig, ...] = ()
    tokens: TokenConfig = field(default_factory=TokenConfig)
    delegation: DelegationConfig = field(default_factory=DelegationConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    decision_log: DecisionLogConfig = field(default_factory=DecisionLogConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    ext_authz: ExtAuthzConfig = field(default_factory=ExtAuthzConfig)
    authzen: AuthzenConfig = field(default_factory=AuthzenConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    state: StateConfig = field(default_factory=StateConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    # Extra listeners (e.g. a Unix socket beside TCP), each like `listen`.
    extra_listen: tuple[str, ...] = ()
    # Seconds to let in-flight calls finish on SIGTERM.
    shutdown_grace_seconds: float = 5.0
    # Outcomes of requests seen before under the current policy set (0: off); see README "Performance".
    decision_memo_size: int = 10_000
