"""The `pep` command. Subcommands map error classes to exit codes:
0 success, 1 a check failed (validation, a deny, a failing test), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import pep
from pep.cli.common import DEFAULT_DEV_DIR, DEV_AUDIENCE, DEV_ISSUER, EXIT_USAGE
from pep.cli.policy_commands import cmd_agents, cmd_check, cmd_fmt, cmd_test, cmd_validate
from pep.cli.runtime_commands import cmd_admin, cmd_authorize, cmd_serve, cmd_token
from pep.controls.killswitch import KINDS
from pep.errors import ConfigError

__all__ = ["main"]


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
    p.add_argument("--version", action="version", version=f"pep {pep.__version__}", help="print pep's version and exit")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the sidecar", description="Serve Authorize over gRPC.")
    s.add_argument("--config", "-c", help="YAML config file (see README); flags override it")
    s.add_argument("--listen", help="gRPC address: host:port or unix:///path")
    s.add_argument("--metrics-listen", help="Prometheus metrics address host:port ('' to turn off)")
    s.add_argument("--admin-listen", help="admin API address (local only)")
    s.add_argument("--policies", help="policy directory")
    s.add_argument(
        "--mode",
        choices=("enforce", "dry_run"),
        help="enforce: answer the decision; dry_run: answer allow and log the real decision",
    )
    s.add_argument("--log-level", default="INFO", help="operational log level (default INFO)")
    s.set_defaults(func=cmd_serve)

    ad = sub.add_parser(
        "admin",
        help="flip the kill switch of a running pep now",
        description="Talk to a running pep's admin API (admin_listen): disable or enable an agent, agent "
        "group, user or issuer immediately, or show what is disabled. Takes effect on the next decision "
        "and survives policy reloads until lifted.",
    )
    ad.add_argument("--config", "-c", help="pep's config file; its admin_listen is the address")
    ad.add_argument("--address", help="admin address (overrides --config; default 127.0.0.1:50052)")
    ad.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the admin API (default 5)")
    ad_sub = ad.add_subparsers(title="admin commands", metavar="ACTION", required=True)
    kinds = KINDS
    kind_list = ", ".join(kinds)
    dis = ad_sub.add_parser(
        "disable",
        help="disable now",
        description="Disable an agent, agent group, user or issuer (or `all`) from the next decision until enabled.",
    )
    dis.add_argument("kind", choices=kinds, help=f"what to disable: {kind_list}")
    dis.add_argument("id", nargs="?", default="", help="the id (not for `all`)")
    dis.add_argument("--reason", required=True, help="why; recorded in the decision log")
    dis.add_argument("--actor", default=os.environ.get("USER", ""), help="who is asking (default $USER)")
    dis.set_defaults(func=cmd_admin, admin_action="disable")
    en = ad_sub.add_parser(
        "enable",
        help="lift a disable made through the admin API",
        description="Lift a disable made through the admin API (entries in killswitch.yaml stay).",
    )
    en.add_argument("kind", choices=kinds, help=f"what to enable: {kind_list}")
    en.add_argument("id", nargs="?", default="", help="the id (not for `all`)")
    en.add_argument("--actor", default=os.environ.get("USER", ""), help="who is asking (default $USER)")
    en.set_defaults(func=cmd_admin, admin_action="enable")
    st = ad_sub.add_parser(
        "status",
        help="what is disabled, from the admin API and killswitch.yaml",
        description="List what is disabled (admin API and killswitch.yaml) and the served policy version.",
    )
    st.set_defaults(func=cmd_admin, admin_action="status")

    ag = sub.add_parser(
        "agents",
        help="the agent inventory: owner, status, days to expiry, and what needs attention",
        description="List the agents of a registry (DIR/agents.yaml) with owner, status and days to expiry, "
        "flagging agents that expired, expire soon, or have no owner.",
    )
    ag.add_argument("dir", nargs="?", default="./policies", help="policy directory (default ./policies)")
    ag.add_argument("--soon", type=int, default=30, help="flag agents expiring within this many days (default 30)")
    ag.add_argument("--json", action="store_true", help="print JSON")
    ag.set_defaults(func=cmd_agents)

    v = sub.add_parser(
        "validate",
        help="parse and schema-validate a policy directory",
        description="Parse and validate a policy directory against its schema: live and shadow policies, "
        "entities, agent registry, links, limits and kill switch. Every problem is printed as "
        "file:line:col: message; exit 1 if there is any.",
    )
    v.add_argument("dir", help="policy directory")
    v.set_defaults(func=cmd_validate)

    f = sub.add_parser(
        "fmt",
        help="format the .cedar files of a policy directory with Cedar's formatter",
        description="Rewrite every .cedar file of a policy directory with Cedar's formatter. "
        "With --check, change nothing and exit 1 if a file would change.",
    )
    f.add_argument("dir", help="policy directory")
    f.add_argument("--check", action="store_true", help="change nothing; exit 1 if any file is not formatted")
    f.set_defaults(func=cmd_fmt)

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
    ck.set_defaults(func=cmd_check)

    ts = sub.add_parser(
        "test",
        help="run the policy test suites in DIR/tests/",
        description="Run the YAML suites in DIR/tests/ (format: docs/policy-tests.md). "
        "Token cases go through the whole pipeline.",
    )
    ts.add_argument("dir", help="policy directory")
    ts.add_argument("--filter", "-k", help="only cases whose name contains this text")
    ts.add_argument("--verbose", "-v", action="store_true", help="list passing cases too")
    ts.set_defaults(func=cmd_test)

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
    t.set_defaults(func=cmd_token)

    a = sub.add_parser(
        "authorize",
        help="call a running pep's Authorize over gRPC",
        description="Send one Authorize call to a running pep and print the response as JSON.",
    )
    a.add_argument("--address", default="127.0.0.1:50051", help="pep's gRPC address (default 127.0.0.1:50051)")
    a.add_argument("--token", required=True, help="the access token ('-' reads it from stdin)")
    a.add_argument("--action", required=True, help="the action name, e.g. read_file")
    a.add_argument("--resource", required=True, help='Type::"id"')
    a.add_argument("--attributes", help="resource attributes as a JSON object")
    a.add_argument("--context", help="request context as a JSON object")
    a.add_argument("--dpop", action="store_true", help="send a fresh DPoP proof made with the dev DPoP key")
    a.add_argument(
        "--dev-dir",
        default=DEFAULT_DEV_DIR,
        help=f"where the dev DPoP key lives, for --dpop (default {DEFAULT_DEV_DIR})",
    )
    a.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    a.set_defaults(func=cmd_authorize)
    return p
