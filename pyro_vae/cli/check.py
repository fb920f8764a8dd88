"""``pyro-vae check``: every objective, guide, prior and standard error against closed
forms (the suites live in checks.py); exit status 1 when a row fails."""

import argparse

from pyro_vae.config import check_device


def check(args: argparse.Namespace) -> int:
    from pyro_vae.checks.harness import format_table, run_checks
    from pyro_vae.process import resolve_device

    check_device(args.device, "--device")
    resolve_device(args.device)
    rows = run_checks(args.device)
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
