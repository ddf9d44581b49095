"""The `pep` command. Subcommands map error classes to exit codes:
0 success, 1 a check failed (validation, a deny, a failing test), 2 usage or config error.

Every usage or input error is one line on stderr; no input makes `pep` print a traceback
(set PEP_TRACEBACK=1 to see one for an unexpected error).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import pep
from pep.cli import (
    config_commands,
    diff_commands,
    init_commands,
    inputs,
    log_commands,
    replay_commands,
    revoke_commands,
    test_reports,
    usage_commands,
)
from pep.cli.common import DEFAULT_DEV_DIR, DEV_AUDIENCE, DEV_ISSUER, EXIT_USAGE
from pep.cli.inputs import UsageError, clip
from pep.cli.policy_commands import cmd_agents, cmd_check, cmd_fmt, cmd_test, cmd_validate
from pep.cli.runtime_commands import LOG_LEVELS, MAX_TTL, cmd_admin, cmd_authorize, cmd_serve, cmd_token
from pep.errors import ConfigError
from pep.policy.killswitch_file import KINDS

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # a non-UTF-8 path or id must not crash the output
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        print("pep: give a command (see pep --help)", file=sys.stderr)
        return EXIT_USAGE
    command = args.command
    try:
        return int(args.func(args))
    except UsageError as e:
        return _fail(command, str(e))
    except ConfigError as e:
        return _fail(command, f"config error: {e}")
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(command, f"{where}{e.strerror or e}")
    except UnicodeError as e:
        return _fail(command, f"not valid UTF-8: {e}")
    except RecursionError:
        return _fail(command, "the input nests too deeply to read")
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the last guard: one line, never a traceback, unless asked for
        if os.environ.get("PEP_TRACEBACK"):
            traceback.print_exc()
        return _fail(command, f"unexpected error: {type(e).__name__}: {e}")


def _fail(command: str, message: str) -> int:
    print(f"{command}: {clip(message, 1000)}", file=sys.stderr)
    return EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), still exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {clip(message, 1000)} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pep",
        description="pep: an authorization sidecar for AI agents (tokens, delegation chains, Cedar policies).",
    )
    p.add_argument("--version", action="version", version=f"pep {pep.__version__}", help="print pep's version and exit")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the sidecar", description="Serve Authorize over gRPC.")
    s.add_argument("--config", "-c", help="YAML config file (see README); flags override it")
    s.add_argument("--listen", type=inputs.optional_name, help="gRPC address: host:port or unix:///path")
    s.add_argument(
        "--metrics-listen", type=inputs.optional_name, help="Prometheus metrics address host:port ('' to turn off)"
    )
    s.add_argument("--admin-listen", type=inputs.optional_name, help="admin API address (local only)")
    s.add_argument("--policies", type=inputs.optional_name, help="policy directory")
    s.add_argument(
        "--mode",
        choices=("enforce", "dry_run"),
        help="enforce: answer the decision; dry_run: answer allow and log the real decision",
    )
    s.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help=f"operational log level: {', '.join(LOG_LEVELS)} (default INFO)",
    )
    s.set_defaults(func=cmd_serve, command="pep serve")

    ad = sub.add_parser(
        "admin",
        help="flip the kill switch of a running pep now",
        description="Talk to a running pep's admin API (admin_listen): disable or enable an agent, agent "
        "group, user or issuer immediately, or show what is disabled. Takes effect on the next decision "
        "and survives policy reloads until lifted. With --state, write the flip to the fleet's Redis "
        "directly (no pep needed): every pep with that state.redis_url applies it within a second.",
    )
    ad.add_argument(
        "--state",
        type=inputs.name,
        metavar="URL",
        help="the fleet's Redis (state.redis_url: redis://, rediss:// or unix://; password in the URL or "
        "REDIS_PASSWORD); talks to Redis instead of a pep's admin API",
    )
    ad.add_argument(
        "--key-prefix",
        type=inputs.name,
        help="the fleet's state.key_prefix, with --state only (default pep:)",
    )
    ad.add_argument("--config", "-c", help="pep's config file; its admin_listen is the address")
    ad.add_argument("--address", type=inputs.name, help="admin address (overrides --config; default 127.0.0.1:50052)")
    ad.add_argument(
        "--timeout",
        type=inputs.seconds,
        default=5.0,
        help=f"seconds to wait for the admin API, above 0 and at most {inputs.MAX_TIMEOUT:g} (default 5)",
    )
    ad_sub = ad.add_subparsers(title="admin commands", metavar="ACTION", required=True)
    kinds = KINDS
    kind_list = ", ".join(kinds)
    dis = ad_sub.add_parser(
        "disable",
        help="disable now",
        description="Disable an agent, agent group, user or issuer (or `all`) from the next decision until enabled.",
    )
    dis.add_argument("kind", choices=kinds, help=f"what to disable: {kind_list}")
    dis.add_argument("id", nargs="?", default="", type=inputs.optional_name, help="the id (required; none for `all`)")
    dis.add_argument("--reason", required=True, type=inputs.name, help="why; recorded in the decision log")
    dis.add_argument(
        "--actor", default=os.environ.get("USER", ""), type=inputs.optional_name, help="who is asking (default $USER)"
    )
    dis.set_defaults(func=cmd_admin, admin_action="disable", command="pep admin disable")
    en = ad_sub.add_parser(
        "enable",
        help="lift a disable made through the admin API",
        description="Lift a disable made through the admin API (entries in killswitch.yaml stay).",
    )
    en.add_argument("kind", choices=kinds, help=f"what to enable: {kind_list}")
    en.add_argument("id", nargs="?", default="", type=inputs.optional_name, help="the id (required; none for `all`)")
    en.add_argument(
        "--actor", default=os.environ.get("USER", ""), type=inputs.optional_name, help="who is asking (default $USER)"
    )
    en.set_defaults(func=cmd_admin, admin_action="enable", command="pep admin enable")
    st = ad_sub.add_parser(
        "status",
        help="what is disabled or revoked, from the admin API and killswitch.yaml",
        description="List what is disabled and revoked (admin API and killswitch.yaml) and the served policy version.",
    )
    st.set_defaults(func=cmd_admin, admin_action="status", command="pep admin status")
    revoke_commands.add_parsers(ad_sub, os.environ.get("USER", ""))

    ag = sub.add_parser(
        "agents",
        help="the agent inventory: owner, status, days to expiry, and what needs attention",
        description="List the agents of a registry (DIR/agents.yaml) with owner, status and days to expiry, "
        "flagging agents that expired, expire soon, or have no owner. With --usage --log LOG...: per agent, "
        "what policy could allow it, what it used and the scopes it never needed (give DIR before --log).",
    )
    ag.add_argument("dir", nargs="?", default="./policies", help="policy directory (default ./policies)")
    ag.add_argument(
        "--soon",
        type=inputs.bounded_int(0, 36500, "days"),
        default=30,
        help="flag agents expiring within this many days, 0 to 36500 (default 30)",
    )
    ag.add_argument("--json", action="store_true", help="print JSON")
    usage_commands.add_usage_arguments(ag)
    ag.set_defaults(func=cmd_agents, command="pep agents")

    v = sub.add_parser(
        "validate",
        help="parse and schema-validate a policy directory",
        description="Parse and validate a policy directory against its schema: live and shadow policies, "
        "entities, agent registry, links, limits and kill switch. Every problem is printed as "
        "file:line:col: message; exit 1 if there is any.",
    )
    v.add_argument("dir", help="policy directory")
    v.set_defaults(func=cmd_validate, command="pep validate")

    f = sub.add_parser(
        "fmt",
        help="format the .cedar files of a policy directory with Cedar's formatter",
        description="Rewrite every .cedar file of a policy directory with Cedar's formatter. "
        "With --check, change nothing and exit 1 if a file would change.",
    )
    f.add_argument("dir", help="policy directory")
    f.add_argument("--check", action="store_true", help="change nothing; exit 1 if any file is not formatted")
    f.set_defaults(func=cmd_fmt, command="pep fmt")

    ck = sub.add_parser(
        "check",
        help="one decision from the command line, explained",
        description="Evaluate one request against a policy directory and explain the decision: "
        "the reason, the determining policies and where they are. Give --principal for a direct "
        "Cedar query, or --token-claims to run claims through the whole pipeline.",
    )
    ck.add_argument("--policies", "-p", default="./policies", help="policy directory (default ./policies)")
    who = ck.add_mutually_exclusive_group(required=True)
    who.add_argument("--principal", type=inputs.name, help='Type::"id" (a direct Cedar query; give the full --context)')
    who.add_argument(
        "--token-claims",
        help='claims as a JSON object, e.g. \'{"sub": "alice", "act_chain": ["assistant"], "scopes": ["files:read"]}\' '
        "(act_chain, scopes and groups are lists of strings), or any claim as a real token carries it "
        '(e.g. \'{"sub": "alice", "act": {"sub": "assistant"}, "scope": "files:read"}\'; docs/policy-tests.md)',
    )
    ck.add_argument("--action", required=True, type=inputs.name, help='a name or Action::"name"')
    ck.add_argument("--resource", required=True, type=inputs.name, help='Type::"id"')
    ck.add_argument("--attributes", help="resource attributes as a JSON object")
    ck.add_argument("--context", help="context as a JSON object (Cedar JSON forms allowed)")
    ck.add_argument("--json", action="store_true", help="print the result as JSON")
    ck.set_defaults(func=cmd_check, command="pep check")

    ts = sub.add_parser(
        "test",
        help="run the policy test suites in DIR/tests/",
        description="Run the YAML suites in DIR/tests/ (format: docs/policy-tests.md). "
        "Token cases go through the whole pipeline.",
    )
    ts.add_argument("dir", help="policy directory")
    ts.add_argument("--filter", "-k", help="only cases whose name contains this text")
    ts.add_argument("--verbose", "-v", action="store_true", help="list passing cases too")
    test_reports.add_arguments(ts)
    ts.set_defaults(func=cmd_test, command="pep test")

    t = sub.add_parser(
        "token",
        help="mint a signed development token",
        description="Mint a development access token signed by the local dev issuer "
        f"({DEV_ISSUER}, audience {DEV_AUDIENCE!r}). `make run` trusts this issuer.",
    )
    t.add_argument("--init", action="store_true", help="only create the dev key and JWKS if missing, print nothing")
    t.add_argument("--dev-dir", default=DEFAULT_DEV_DIR, help=f"where the dev key lives (default {DEFAULT_DEV_DIR})")
    t.add_argument("--user", type=inputs.name, help="the user the agent acts for (token sub)")
    t.add_argument(
        "--agent",
        action="append",
        default=[],
        type=inputs.name,
        metavar="ID",
        help="an agent in the chain; repeat, current actor first (at most 31)",
    )
    t.add_argument("--scope", action="append", default=[], type=inputs.name, help="a scope; repeat for several")
    t.add_argument(
        "--audience",
        type=inputs.name,
        default=DEV_AUDIENCE,
        help=f"the token's aud (default {DEV_AUDIENCE!r}; the MCP proxy wants its mcp.resource)",
    )
    t.add_argument(
        "--group", action="append", default=[], type=inputs.name, help="a group of the user; repeat for several"
    )
    t.add_argument(
        "--ttl",
        type=inputs.bounded_int(1, MAX_TTL, "seconds"),
        default=600,
        help=f"lifetime in seconds, 1 to {MAX_TTL} (default 600)",
    )
    t.add_argument(
        "--dpop",
        action="store_true",
        help="bind the token to the dev DPoP key (pep authorize --dpop then sends proofs)",
    )
    t.add_argument("--claims", help="extra claims as a JSON object, applied last")
    t.set_defaults(func=cmd_token, command="pep token")

    a = sub.add_parser(
        "authorize",
        help="call a running pep's Authorize over gRPC",
        description="Send one Authorize call to a running pep and print the response as JSON.",
    )
    a.add_argument(
        "--address", default="127.0.0.1:50051", type=inputs.name, help="pep's gRPC address (default 127.0.0.1:50051)"
    )
    a.add_argument("--token", required=True, help="the access token ('-' reads it from stdin)")
    a.add_argument("--action", required=True, type=inputs.name, help="the action name, e.g. read_file")
    a.add_argument("--resource", required=True, type=inputs.name, help='Type::"id"')
    a.add_argument("--attributes", help="resource attributes as a JSON object")
    a.add_argument("--context", help="request context as a JSON object")
    a.add_argument("--dpop", action="store_true", help="send a fresh DPoP proof made with the dev DPoP key")
    a.add_argument(
        "--dev-dir",
        default=DEFAULT_DEV_DIR,
        help=f"where the dev DPoP key lives, for --dpop (default {DEFAULT_DEV_DIR})",
    )
    a.add_argument(
        "--timeout",
        type=inputs.seconds,
        default=5.0,
        help=f"seconds to wait for the answer, above 0 and at most {inputs.MAX_TIMEOUT:g} (default 5)",
    )
    a.set_defaults(func=cmd_authorize, command="pep authorize")

    config_commands.add_parser(sub)
    init_commands.add_parser(sub)
    log_commands.add_parser(sub)
    replay_commands.add_parser(sub)
    diff_commands.add_parser(sub)
    usage_commands.add_parser(sub)
    return p
