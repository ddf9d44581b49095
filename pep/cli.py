"""The `pep` command. Subcommands map error classes to exit codes:
0 success, 1 a check failed (validation, a deny, a failing test), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pep.errors import ConfigError, PolicyLoadError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DEV_DIR = ".pep/dev"
DEV_ISSUER = "https://dev.pep.local"
DEV_AUDIENCE = "pep"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"pep: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"pep: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pep",
        description="pep: an authorization sidecar for AI agents (tokens, delegation chains, Cedar policies).",
    )
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the sidecar", description="Serve Authorize over gRPC.")
    s.add_argument("--config", "-c", help="YAML config file (see README); flags override it")
    s.add_argument("--listen", help="gRPC address: host:port or unix:///path")
    s.add_argument("--metrics-listen", help="Prometheus metrics address host:port ('' to turn off)")
    s.add_argument("--admin-listen", help="admin API address (local only)")
    s.add_argument("--policies", help="policy directory")
    s.add_argument("--mode", choices=("enforce", "dry_run"))
    s.add_argument("--log-level", default="INFO", help="operational log level (default INFO)")
    s.set_defaults(func=_cmd_serve)

    ad = sub.add_parser(
        "admin",
        help="flip the kill switch of a running pep now",
        description="Talk to a running pep's admin API (admin_listen): disable or enable an agent, agent "
        "group, user or issuer immediately, or show what is disabled. Takes effect on the next decision "
        "and survives policy reloads until lifted.",
    )
    ad.add_argument("--config", "-c", help="pep's config file; its admin_listen is the address")
    ad.add_argument("--address", help="admin address (overrides --config; default 127.0.0.1:50052)")
    ad.add_argument("--timeout", type=float, default=5.0)
    ad_sub = ad.add_subparsers(title="admin commands", metavar="ACTION", required=True)
    kinds = ("agent", "agent_group", "user", "issuer", "all")
    dis = ad_sub.add_parser("disable", help="disable now")
    dis.add_argument("kind", choices=kinds)
    dis.add_argument("id", nargs="?", default="", help="the id (not for `all`)")
    dis.add_argument("--reason", required=True, help="why; recorded in the decision log")
    dis.add_argument("--actor", default=os.environ.get("USER", ""), help="who is asking (default $USER)")
    dis.set_defaults(func=_cmd_admin, admin_action="disable")
    en = ad_sub.add_parser("enable", help="lift a disable made through the admin API")
    en.add_argument("kind", choices=kinds)
    en.add_argument("id", nargs="?", default="")
    en.add_argument("--actor", default=os.environ.get("USER", ""))
    en.set_defaults(func=_cmd_admin, admin_action="enable")
    st = ad_sub.add_parser("status", help="what is disabled, from the admin API and killswitch.yaml")
    st.set_defaults(func=_cmd_admin, admin_action="status")

    ag = sub.add_parser(
        "agents",
        help="the agent inventory: owner, status, days to expiry, and what needs attention",
        description="List the agents of a registry (DIR/agents.yaml) with owner, status and days to expiry, "
        "flagging agents that expired, expire soon, or have no owner.",
    )
    ag.add_argument("dir", nargs="?", default="./policies", help="policy directory (default ./policies)")
    ag.add_argument("--soon", type=int, default=30, help="flag agents expiring within this many days (default 30)")
    ag.add_argument("--json", action="store_true", help="print JSON")
    ag.set_defaults(func=_cmd_agents)

    v = sub.add_parser("validate", help="parse and schema-validate a policy directory")
    v.add_argument("dir", help="policy directory")
    v.set_defaults(func=_cmd_validate)

    f = sub.add_parser("fmt", help="format the .cedar files of a policy directory with Cedar's formatter")
    f.add_argument("dir", help="policy directory")
    f.add_argument("--check", action="store_true", help="change nothing; exit 1 if any file is not formatted")
    f.set_defaults(func=_cmd_fmt)

    ck = sub.add_parser(
        "check",
        help="one decision from the command line, explained",
        description="Evaluate one request against a policy directory and explain the decision: "
        "the reason, the determining policies and where they are. Give --principal for a direct "
        "Cedar query, or --token-claims to run claims through the whole pipeline.",
    )
    ck.add_argument("--policies", "-p", default="./policies", help="policy directory (default ./policies)")
    who = ck.add_mutually_exclusive_group(required=True)
    who.add_argument("--principal", help='Type::"id" (a direct Cedar query; give the full --context)')
    who.add_argument(
        "--token-claims",
        help='claims as JSON, e.g. \'{"sub": "alice", "act_chain": ["assistant"], "scopes": ["files:read"]}\'',
    )
    ck.add_argument("--action", required=True, help='a name or Action::"name"')
    ck.add_argument("--resource", required=True, help='Type::"id"')
    ck.add_argument("--attributes", help="resource attributes as a JSON object")
    ck.add_argument("--context", help="context as a JSON object (Cedar JSON forms allowed)")
    ck.add_argument("--json", action="store_true", help="print the result as JSON")
    ck.set_defaults(func=_cmd_check)

    ts = sub.add_parser(
        "test",
        help="run the policy test suites in DIR/tests/",
        description="Run the YAML suites in DIR/tests/ (SPEC 8). Token cases go through the whole pipeline.",
    )
    ts.add_argument("dir", help="policy directory")
    ts.add_argument("--filter", "-k", help="only cases whose name contains this text")
    ts.add_argument("--verbose", "-v", action="store_true", help="list passing cases too")
    ts.set_defaults(func=_cmd_test)

    t = sub.add_parser(
        "token",
        help="mint a signed development token",
        description="Mint a development access token signed by the local dev issuer "
        f"({DEV_ISSUER}, audience {DEV_AUDIENCE!r}). `make run` trusts this issuer.",
    )
    t.add_argument("--init", action="store_true", help="only create the dev key and JWKS if missing, print nothing")
    t.add_argument("--dev-dir", default=DEFAULT_DEV_DIR, help=f"where the dev key lives (default {DEFAULT_DEV_DIR})")
    t.add_argument("--user", help="the user the agent acts for (token sub)")
    t.add_argument(
        "--agent", action="append", default=[], metavar="ID", help="an agent in the chain; repeat, current actor first"
    )
    t.add_argument("--scope", action="append", default=[], help="a scope; repeat for several")
    t.add_argument("--group", action="append", default=[], help="a group of the user; repeat for several")
    t.add_argument("--ttl", type=int, default=600, help="lifetime in seconds (default 600)")
    t.add_argument(
        "--dpop",
        action="store_true",
        help="bind the token to the dev DPoP key (pep authorize --dpop then sends proofs)",
    )
    t.add_argument("--claims", help="extra claims as a JSON object")
    t.set_defaults(func=_cmd_token)

    a = sub.add_parser(
        "authorize",
        help="call a running pep's Authorize over gRPC",
        description="Send one Authorize call to a running pep and print the response as JSON.",
    )
    a.add_argument("--address", default="127.0.0.1:50051", help="pep's gRPC address (default 127.0.0.1:50051)")
    a.add_argument("--token", required=True, help="the access token ('-' reads it from stdin)")
    a.add_argument("--action", required=True)
    a.add_argument("--resource", required=True, help='Type::"id"')
    a.add_argument("--attributes", help="resource attributes as a JSON object")
    a.add_argument("--context", help="request context as a JSON object")
    a.add_argument("--dpop", action="store_true", help="send a fresh DPoP proof made with the dev DPoP key")
    a.add_argument("--dev-dir", default=DEFAULT_DEV_DIR)
    a.add_argument("--timeout", type=float, default=5.0)
    a.set_defaults(func=_cmd_authorize)
    return p


def _cmd_serve(args: argparse.Namespace) -> int:
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


def _cmd_admin(args: argparse.Namespace) -> int:
    import grpc

    from pep._proto.pep.v1 import admin_pb2 as pb
    from pep._proto.pep.v1 import admin_pb2_grpc as pb_grpc
    from pep.admin import KIND_VALUES
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


def _cmd_agents(args: argparse.Namespace) -> int:
    import datetime as dt

    from pep.policy.loader import AGENTS_FILE
    from pep.policy.registry import parse_registry
    from pep.policy.source import SourceProblemError, load_yaml

    path = os.path.join(args.dir, AGENTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            registry, problems = parse_registry(load_yaml(f.read(), AGENTS_FILE), AGENTS_FILE)
    except FileNotFoundError:
        print(f"pep agents: {path}: no agent registry", file=sys.stderr)
        return EXIT_USAGE
    except SourceProblemError as e:
        print(_prefixed(args.dir, str(e.problem)), file=sys.stderr)
        return EXIT_FAILED
    for problem in problems:
        print(f"warning: {_prefixed(args.dir, str(problem))}", file=sys.stderr)
    today = dt.datetime.now(dt.UTC).date()
    rows: list[dict[str, Any]] = []
    for rec in sorted(registry.agents.values(), key=lambda r: r.id):
        days = (rec.expires - today).days if rec.expires else None
        flags = []
        if not rec.owner:
            flags.append("no owner")
        if rec.status != "active":
            flags.append(rec.status)
        if days is not None and days < 0:
            flags.append("expired")
        elif days is not None and days <= args.soon:
            flags.append("expires soon")
        rows.append(
            {
                "id": rec.id,
                "owner": rec.owner,
                "status": rec.status,
                "expires": rec.expires.isoformat() if rec.expires else None,
                "days_to_expiry": days,
                "groups": list(rec.groups),
                "flags": flags,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        head = ("AGENT", "OWNER", "STATUS", "EXPIRES", "DAYS", "ATTENTION")
        table = [head] + [
            (
                r["id"],
                r["owner"] or "-",
                r["status"],
                r["expires"] or "-",
                "-" if r["days_to_expiry"] is None else str(r["days_to_expiry"]),
                ", ".join(r["flags"]),
            )
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        flagged = sum(1 for r in rows if r["flags"])
        print(f"{len(rows)} agents, {flagged} need attention")
    return EXIT_FAILED if problems else EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from pep.policy.loader import load_snapshot

    try:
        snap = load_snapshot(args.dir)
    except PolicyLoadError as e:
        _report(e, args.dir)
        print(f"{len(e.problems)} problem(s) found", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"ok: {snap.policy_count} policies, {len(snap.registry)} agents, version {snap.version}"
        + ("" if snap.schema is not None else " (no schema: policies not validated)")
    )
    return EXIT_OK


def _cmd_fmt(args: argparse.Namespace) -> int:
    from pep.policy.fmt import format_directory

    if not os.path.isdir(args.dir):
        print(f"pep fmt: {args.dir}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    results = format_directory(args.dir, write=not args.check)
    failed = False
    for r in results:
        if r.problem is not None:
            print(_prefixed(args.dir, str(r.problem)), file=sys.stderr)
            failed = True
        elif r.changed:
            print(f"{'would reformat' if args.check else 'formatted'} {os.path.join(args.dir, r.path)}")
            failed = failed or args.check
    changed = sum(1 for r in results if r.changed)
    print(f"{len(results)} file(s), {changed} {'to reformat' if args.check else 'reformatted'}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from pep.policy.testsuite import SuiteRunner

    try:
        runner = SuiteRunner(args.policies)
    except PolicyLoadError as e:
        _report(e, args.policies)
        return EXIT_FAILED
    try:
        case: dict[str, Any] = {"action": args.action, "expect": "allow"}
        resource: Any = args.resource
        if args.attributes:
            from pep.policy.testsuite import parse_uid

            rtype, rid = parse_uid(args.resource, "--resource")
            resource = {"type": rtype, "id": rid, "attributes": json.loads(args.attributes)}
        case["resource"] = resource
        if args.context:
            case["context"] = json.loads(args.context)
        if args.principal:
            case["principal"] = args.principal
        else:
            case["token"] = json.loads(args.token_claims)
        result = runner.check(case)
        snapshot = runner.snapshot
    except (ValueError, json.JSONDecodeError) as e:
        print(f"pep check: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        runner.close()
    if result.decided == "error":
        print(f"pep check: {'; '.join(result.problems)}", file=sys.stderr)
        return EXIT_USAGE
    located = []
    for pid in result.policies:
        info = snapshot.policies.get(pid)
        located.append(
            {"id": pid, "source": f"{info.path}:{info.line}" if info else "", "effect": info.effect if info else ""}
        )
    if args.json:
        print(
            json.dumps(
                {
                    "decision": result.decided,
                    "reason": result.reason,
                    "policies": located,
                    "errors": list(result.errors),
                    "policy_version": snapshot.version,
                },
                indent=2,
            )
        )
    else:
        print(f"decision: {result.decided}")
        print(f"reason:   {result.reason}")
        if located:
            print("determining policies:")
            for p in located:
                print(f"  {p['id']} ({p['effect']}) at {_prefixed(args.policies, p['source'])}")
        else:
            print(
                "determining policies: none" + (" (no permit matched)" if result.reason == "policy_no_permit" else "")
            )
        for err in result.errors:
            print(f"error:    {err}")
        print(f"policy version: {snapshot.version}")
    return EXIT_OK if result.decided == "allow" else EXIT_FAILED


def _cmd_test(args: argparse.Namespace) -> int:
    from pep.policy.testsuite import SuiteRunner, summarize

    try:
        runner = SuiteRunner(args.dir)
    except PolicyLoadError as e:
        _report(e, args.dir)
        return EXIT_FAILED
    results = []
    try:
        for result in runner.run(args.filter):
            results.append(result)
            if not result.passed:
                print(result.describe())
            elif args.verbose:
                print(f"ok   {result.suite}:{result.line}: {result.name}")
    except PolicyLoadError as e:
        _report(e, args.dir)
        return EXIT_FAILED
    finally:
        runner.close()
    if not results:
        print(f"no test cases found in {os.path.join(args.dir, 'tests')}", file=sys.stderr)
        return EXIT_FAILED
    print(summarize(results))
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILED


def _report(error: PolicyLoadError, directory: str) -> None:
    for problem in error.problems:
        print(_prefixed(directory, str(problem)), file=sys.stderr)


def _prefixed(directory: str, text: str) -> str:
    return text if os.path.isabs(text) else os.path.join(directory, text)


def _cmd_token(args: argparse.Namespace) -> int:
    from pep import devtoken

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

    from pep import devtoken

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


def _cmd_authorize(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format, struct_pb2

    from pep._proto.pep.v1 import authorizer_pb2 as pb
    from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc

    token = sys.stdin.read().strip() if args.token == "-" else args.token
    rtype, sep, rid = args.resource.partition("::")
    if not sep or not (rid.startswith('"') and rid.endswith('"')):
        print('pep authorize: --resource must look like Type::"id"', file=sys.stderr)
        return EXIT_USAGE
    req = pb.AuthorizeRequest(token=token, action=args.action)
    req.resource.type, req.resource.id = rtype, json.loads(rid)
    if args.attributes:
        req.resource.attributes.CopyFrom(json_format.ParseDict(json.loads(args.attributes), struct_pb2.Struct()))
    if args.context:
        req.context.CopyFrom(json_format.ParseDict(json.loads(args.context), struct_pb2.Struct()))
    if args.dpop:
        from pep import devtoken

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
