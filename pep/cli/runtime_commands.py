"""`pep serve`, `admin`, `token` and `authorize`: running pep and talking to it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from pep.cli.common import DEV_AUDIENCE, DEV_ISSUER, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pep.errors import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    from pep.config import load_config
    from pep.server import serve_forever

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
    config = load_config(args.config, overrides)
    return serve_forever(config)


def cmd_admin(args: argparse.Namespace) -> int:
    import grpc

    from pep._proto.pep.v1 import admin_pb2 as pb
    from pep._proto.pep.v1 import admin_pb2_grpc as pb_grpc
    from pep.api.grpc_admin import KIND_VALUES
    from pep.config import load_config

    address = args.address
    if address is None:
        address = load_config(args.config).admin_listen if args.config else "127.0.0.1:50052"
    if not address:
        print("pep admin: the admin API is turned off in this config (admin_listen is empty)", file=sys.stderr)
        return EXIT_USAGE
    action = args.admin_action
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AdminStub(channel)
        try:
            if action == "status":
                status = stub.Status(pb.StatusRequest(), timeout=args.timeout)
                changed = None
            else:
                if args.kind != "all" and not args.id:
                    print(f"pep admin: {action} {args.kind} needs an id", file=sys.stderr)
                    return EXIT_USAGE
                kind = KIND_VALUES[args.kind]
                if action == "disable":
                    req = pb.DisableRequest(kind=kind, id=args.id, reason=args.reason, actor=args.actor)
                    resp = stub.Disable(req, timeout=args.timeout)
                else:
                    resp = stub.Enable(pb.EnableRequest(kind=kind, id=args.id, actor=args.actor), timeout=args.timeout)
                status, changed = resp.status, resp.changed
        except grpc.RpcError as e:
            print(f"pep admin: {address}: {e.code().name}: {e.details()}", file=sys.stderr)
            return EXIT_FAILED
    if changed is not None:
        what = f"{args.kind} {args.id}".strip()
        print(f"{action}d {what}" if changed else f"no change: {what} was already {action}d")
    names = {v: k for k, v in KIND_VALUES.items()}
    if not status.entries:
        print("nothing is disabled")
    for entry in status.entries:
        since = f" since {_iso(entry.since)}" if entry.since else ""
        by = f" by {entry.actor}" if entry.actor else ""
        print(f"disabled {names.get(entry.kind, '?')} {entry.id or '*'} ({entry.source}{since}{by}): {entry.reason}")
    print(f"policy version: {status.policy_version or '(none loaded)'}")
    return EXIT_OK


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cmd_token(args: argparse.Namespace) -> int:
    from pep.dev import tokens as devtoken

    key_path, _ = devtoken.ensure_dev_keys(args.dev_dir)
    if args.init:
        return EXIT_OK
    chain = list(args.agent)
    if not chain and not args.user:
        print("pep token: give --agent (and --user when the agent acts for a user)", file=sys.stderr)
        return EXIT_USAGE
    extra: dict[str, Any] = json.loads(args.claims) if args.claims else {}
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
    token = devtoken.mint_token(
        key_path,
        issuer=DEV_ISSUER,
        audience=DEV_AUDIENCE,
        sub=sub,
        act_chain=act_chain,
        client_id=client_id,
        scopes=args.scope,
        ttl_seconds=args.ttl,
        extra_claims=extra,
        dpop_jkt=jkt,
    )
    print(token)
    return EXIT_OK


def _dev_dpop_key(dev_dir: str) -> tuple[Any, dict[str, Any]]:
    """A DPoP key kept beside the dev issuer key, so `token --dpop` and `authorize --dpop` agree."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from pep.dev import tokens as devtoken

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
        loaded = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(path, "the dev DPoP key must be an EC key; delete it to make a new one")
    return loaded, devtoken.public_jwk(loaded)


def cmd_authorize(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format, struct_pb2

    from pep._proto.pep.v1 import authorizer_pb2 as pb
    from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
    from pep.uids import parse_uid

    token = sys.stdin.read().strip() if args.token == "-" else args.token
    try:
        uid = parse_uid(args.resource)
    except ValueError as e:
        print(f'pep authorize: --resource must look like Type::"id": {e}', file=sys.stderr)
        return EXIT_USAGE
    req = pb.AuthorizeRequest(token=token, action=args.action)
    req.resource.type, req.resource.id = uid
    if args.attributes:
        req.resource.attributes.CopyFrom(json_format.ParseDict(json.loads(args.attributes), struct_pb2.Struct()))
    if args.context:
        req.context.CopyFrom(json_format.ParseDict(json.loads(args.context), struct_pb2.Struct()))
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
        except grpc.RpcError as e:
            print(json.dumps({"error": e.code().name, "details": e.details()}, indent=2))
            return EXIT_FAILED
    print(json.dumps(json_format.MessageToDict(resp, preserving_proto_field_name=True), indent=2))
    return EXIT_OK if resp.decision == pb.DECISION_ALLOW else EXIT_FAILED
