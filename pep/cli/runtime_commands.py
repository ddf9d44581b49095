"""`pep serve`, `admin`, `token` and `authorize`: running pep and talking to it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from pep.cli.common import DEV_ISSUER, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pep.cli.inputs import UsageError, clip, json_object, names, read_text, utf8
from pep.cli.revoke_commands import print_revocations, print_stored_revocations
from pep.errors import ConfigError
from pep.policy.revoked_file import format_time

if TYPE_CHECKING:
    from pep.config import Config

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_TTL = 366 * 86400  # seconds: a development token lives at most a year


def _load_config(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """The config, with `--config` checked first: an existing, readable UTF-8 file that does
    not nest too deeply (the loader names the key of any other problem)."""
    from pep.config import load_config

    if path is None:
        return load_config(None, overrides)
    read_text(path, "--config")
    try:
        return load_config(path, overrides)
    except RecursionError:
        raise UsageError(f"--config {path}: nested too deeply to read") from None


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("listen", "listen"),
        ("metrics_listen", "metrics_listen"),
        ("admin_listen", "admin_listen"),
        ("policies", "policies"),
        ("mode", "mode"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = os.path.abspath(value) if key == "policies" else value
    config = _load_config(args.config, overrides)
    from pep.server import serve_forever  # after the config: a bad one is refused without loading the server

    return serve_forever(config)


def admin_address(args: argparse.Namespace) -> str | None:
    """The admin API `pep admin` talks to: --address, else --config's admin_listen ("" when off);
    None with --state, which talks to the fleet's Redis instead."""
    if args.state is not None:
        if args.address is not None or args.config is not None:
            raise UsageError("--state talks to Redis directly: give it without --address or --config")
        return None
    if args.key_prefix is not None:
        raise UsageError("--key-prefix goes with --state (a pep's admin API knows its own)")
    if args.address is not None:
        return str(args.address)
    return _load_config(args.config).admin_listen if args.config else "127.0.0.1:50052"


def cmd_admin(args: argparse.Namespace) -> int:
    action = args.admin_action
    if action != "status":
        if args.kind == "all" and args.id:
            raise UsageError(f"{action} all takes no id (got {clip(args.id, 80)!r}): it applies to everything")
        if args.kind != "all" and not args.id:
            raise UsageError(f"{action} {args.kind} needs an id")
    address = admin_address(args)
    if address is None:
        return _admin_fleet(args)
    if not address:
        print("pep admin: the admin API is turned off in this config (admin_listen is empty)", file=sys.stderr)
        return EXIT_USAGE
    import grpc

    from pep._proto.pep.v1 import admin_pb2 as pb
    from pep._proto.pep.v1 import admin_pb2_grpc as pb_grpc
    from pep.api.grpc_admin import KIND_VALUES

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AdminStub(channel)
        try:
            if action == "status":
                status = stub.Status(pb.StatusRequest(), timeout=args.timeout)
                changed = None
            else:
                kind = KIND_VALUES[args.kind]
                if action == "disable":
                    req = pb.DisableRequest(kind=kind, id=args.id, reason=args.reason, actor=args.actor)
                    resp = stub.Disable(req, timeout=args.timeout)
                else:
                    resp = stub.Enable(pb.EnableRequest(kind=kind, id=args.id, actor=args.actor), timeout=args.timeout)
                status, changed = resp.status, resp.changed
        except grpc.RpcError as e:
            print(f"pep admin: {address}: {e.code().name}: {clip(e.details() or '')}", file=sys.stderr)
            return EXIT_FAILED
    if changed is not None:
        what = f"{args.kind} {args.id}".strip()
        print(f"{action}d {what}" if changed else f"no change: {what} was already {action}d")
    names = {v: k for k, v in KIND_VALUES.items()}
    if not status.entries:
        print("nothing is disabled")
    for entry in status.entries:
        since = f" since {format_time(entry.since)}" if entry.since else ""
        by = f" by {entry.actor}" if entry.actor else ""
        scope = f" [{entry.scope}]" if entry.scope else ""
        what = f"{names.get(entry.kind, '?')} {entry.id or '*'}"
        print(f"disabled {what} ({entry.source}{since}{by}): {entry.reason}{scope}")
    print_revocations(status.revocations)
    print(f"policy version: {status.policy_version or '(none loaded)'}")
    return EXIT_OK


def _admin_fleet(args: argparse.Namespace) -> int:
    """`pep admin --state URL`: the flip goes straight to the fleet's Redis, no pep in between."""
    import time

    from pep.config import check_redis_url
    from pep.config.redis_url import redact_redis_url
    from pep.state import StoredKill
    from pep.state.redis_kills import ERRORS, connect, delete_kill, read_kills, write_kill

    url = check_redis_url(args.state, "--state")
    prefix = "pep:" if args.key_prefix is None else args.key_prefix
    where = redact_redis_url(url)
    client = connect(url, timeout=args.timeout)
    action, id_ = args.admin_action, "" if getattr(args, "kind", "") == "all" else getattr(args, "id", "")
    try:
        changed = None
        if action == "disable":
            changed = write_kill(client, prefix, StoredKill(args.kind, id_, args.reason, time.time(), args.actor))
        elif action == "enable":
            changed = delete_kill(client, prefix, args.kind, id_)
        _, entries = read_kills(client, prefix)
    except ERRORS as e:
        raise UsageError(f"Redis {where}: {type(e).__name__}: {clip(str(e), 200)}") from None
    finally:
        client.close()
    if changed is not None:
        what = f"{args.kind} {id_}".strip()
        print(f"{action}d {what} fleet-wide" if changed else f"no change: {what} was already {action}d fleet-wide")
    kills = [e for e in entries.values() if not e.kind.startswith("revoked_")]
    if not kills:
        print("nothing is disabled fleet-wide (killswitch.yaml entries are each replica's own)")
    for entry in sorted(kills, key=lambda k: (k.kind, k.id)):
        by = f" by {entry.actor}" if entry.actor else ""
        what = f"{entry.kind} {entry.id or '*'}"
        print(f"disabled {what} ({entry.source}, fleet, since {format_time(entry.since)}{by}): {entry.reason}")
    print_stored_revocations(entries.values())
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from pep.dev import tokens as devtoken

    chain = list(args.agent)
    if not args.init and not chain and not args.user:
        raise UsageError("give --agent (and --user when the agent acts for a user)")
    if len(chain) > devtoken.MAX_ACT_CHAIN:
        raise UsageError(
            f"--agent given {len(chain)} times, more than the {devtoken.MAX_ACT_CHAIN} agents a token nests"
        )
    extra: dict[str, Any] = json_object(args.claims, "--claims") if args.claims is not None else {}
    _check_extra_claims(extra, args)
    key_path = _dev_keys(args.dev_dir)
    if args.init:
        return EXIT_OK
    if args.group:
        extra["groups"] = list(args.group)
    jkt = None
    if args.dpop:
        _, jwk = _dev_dpop_key(args.dev_dir)
        jkt = devtoken.jwk_thumbprint(jwk)
    if args.user:
        sub, act_chain, client_id = args.user, chain, (chain[0] if chain else None)
    else:
        sub, act_chain, client_id = chain[-1], chain[:-1], chain[0]
    try:
        token = devtoken.mint_token(
            key_path,
            issuer=DEV_ISSUER,
            audience=args.audience,
            sub=sub,
            act_chain=act_chain,
            client_id=client_id,
            scopes=args.scope,
            ttl_seconds=args.ttl,
            extra_claims=extra,
            dpop_jkt=jkt,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(token)
    return EXIT_OK


def _check_extra_claims(extra: dict[str, Any], args: argparse.Namespace) -> None:
    """--claims replaces claims as written, but never silently one a flag also sets."""
    flags = {"sub": "--user", "act": "--agent", "scope": "--scope", "groups": "--group", "cnf": "--dpop"}
    given = {"sub": args.user, "act": len(args.agent) > (0 if args.user else 1), "scope": args.scope}
    given.update(groups=args.group, cnf=args.dpop)
    for claim, flag in flags.items():
        if claim in extra and given[claim]:
            raise UsageError(f"--claims sets {claim!r} and {flag} is given too: use one")
    if "groups" in extra:
        names(extra["groups"], "--claims groups")


def _dev_keys(dev_dir: str) -> str:
    """The dev signing key's path, made if missing; a directory pep cannot use is a usage error."""
    from pep.dev import tokens as devtoken

    utf8(dev_dir, "--dev-dir")
    if os.path.exists(dev_dir) and not os.path.isdir(dev_dir):
        raise UsageError(f"--dev-dir {dev_dir}: not a directory")
    try:
        return devtoken.ensure_dev_keys(dev_dir)[0]
    except ValueError as e:
        raise UsageError(f"{e}; delete it to make a new one") from None


def _dev_dpop_key(dev_dir: str) -> tuple[Any, dict[str, Any]]:
    """A DPoP key kept beside the dev issuer key, so `token --dpop` and `authorize --dpop` agree."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from pep.dev import tokens as devtoken

    utf8(dev_dir, "--dev-dir")
    if os.path.exists(dev_dir) and not os.path.isdir(dev_dir):
        raise UsageError(f"--dev-dir {dev_dir}: not a directory")
    path = os.path.join(dev_dir, "dpop-key.pem")
    if not os.path.exists(path):
        key, _ = devtoken.new_dpop_key()
        os.makedirs(dev_dir, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
    with open(path, "rb") as f:
        pem = f.read()
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{path}: not an unencrypted PEM private key; delete it to make a new one") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(path, "the dev DPoP key must be an EC key; delete it to make a new one")
    return loaded, devtoken.public_jwk(loaded)


def cmd_authorize(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format, struct_pb2

    from pep._proto.pep.v1 import authorizer_pb2 as pb
    from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
    from pep.uids import parse_uid

    token = _read_token(args.token)
    try:
        uid = parse_uid(args.resource)
    except ValueError as e:
        raise UsageError(f'--resource must look like Type::"id": {e}') from None
    req = pb.AuthorizeRequest(token=token, action=args.action)
    req.resource.type, req.resource.id = uid
    try:
        if args.attributes is not None:
            attributes = json_object(args.attributes, "--attributes")
            req.resource.attributes.CopyFrom(json_format.ParseDict(attributes, struct_pb2.Struct()))
        if args.context is not None:
            req.context.CopyFrom(json_format.ParseDict(json_object(args.context, "--context"), struct_pb2.Struct()))
    except json_format.ParseError as e:
        raise UsageError(clip(str(e))) from None
    if args.dpop:
        from pep.dev import tokens as devtoken

        key, jwk = _dev_dpop_key(args.dev_dir)
        bare = token.split(" ", 1)[1] if " " in token else token
        req.token = "DPoP " + bare
        req.http_method, req.http_uri = "POST", f"https://{args.address}/pep.v1.Authorizer/Authorize"
        req.dpop_proof = devtoken.mint_dpop_proof(key, jwk, htm=req.http_method, htu=req.http_uri, access_token=bare)
    target = args.address
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.AuthorizerStub(channel)
        try:
            resp = stub.Authorize(req, timeout=args.timeout)
            if args.dpop and resp.reason == "dpop_nonce_required" and resp.dpop_nonce:  # RFC 9449 9: once more
                req.dpop_proof = devtoken.mint_dpop_proof(
                    key, jwk, htm=req.http_method, htu=req.http_uri, access_token=bare, nonce=resp.dpop_nonce
                )
                resp = stub.Authorize(req, timeout=args.timeout)
        except grpc.RpcError as e:
            print(json.dumps({"error": e.code().name, "details": e.details()}, indent=2))
            return EXIT_FAILED
    print(json.dumps(json_format.MessageToDict(resp, preserving_proto_field_name=True), indent=2))
    return EXIT_OK if resp.decision == pb.DECISION_ALLOW else EXIT_FAILED


MAX_TOKEN_BYTES = 1024 * 1024  # read from stdin; pep refuses far smaller (tokens.max_token_bytes)


def _read_token(value: str) -> str:
    if value != "-":
        return utf8(value, "--token")
    data = sys.stdin.buffer.read(MAX_TOKEN_BYTES + 1)
    if len(data) > MAX_TOKEN_BYTES:
        raise UsageError(f"--token -: more than {MAX_TOKEN_BYTES} bytes on stdin")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise UsageError(f"--token -: stdin is not UTF-8 (byte {e.start})") from None
