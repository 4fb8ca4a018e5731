"""`stability-gateway token new NAME`: a fresh caller token, printed once.

The token goes to the caller (it sends it as `Authorization: Bearer <token>`); only its
SHA-256 goes into config.toml, in the `[callers.NAME]` table printed beside it. The gateway
cannot show a token again: a lost one is replaced by a new one.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any

from gateway.config import CALLER_NAME

TOKEN_PREFIX = "sgw_"  # recognisable in a secret scanner, and never a Stability key (sk-)


def add_parser(sub: Any) -> None:
    t = sub.add_parser("token", help="make caller tokens")
    actions = t.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="print a fresh token and its [callers.NAME] table")
    new.add_argument("name", help="the caller's name: 1-64 of a-z, 0-9, _ and -")
    new.add_argument("--priority", choices=("interactive", "batch"), default="interactive")
    new.add_argument("--requests-per-minute", type=int, default=0)
    new.add_argument("--daily-credit-budget", type=float, default=0)
    new.add_argument("--cache-scope", choices=("shared", "private"), default="shared")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not CALLER_NAME.fullmatch(args.name):
        print(f"error: {args.name!r} is not a caller name (1-64 of a-z, 0-9, _ and -)",
              file=sys.stderr)  # fmt: skip
        return 2
    from gateway.callers import token_hash

    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    print(f"token for {args.name} (shown once; give it to the caller):\n\n    {token}\n")
    print("add to config.toml:\n")
    print(f"[callers.{args.name}]")
    print(f'token_sha256 = "{token_hash(token)}"')
    print(f'priority = "{args.priority}"')
    print(f"requests_per_minute = {args.requests_per_minute}")
    print(f"daily_credit_budget = {args.daily_credit_budget:g}")
    print(f'cache_scope = "{args.cache_scope}"')
    return 0
