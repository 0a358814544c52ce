"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) before it runs: works around a CPython 3.11 bug.

hypothesis describes each filter lambda by parsing its source file with `ast.parse`; on
CPython 3.11 (3.11.7 here) that parse sometimes fails with "SystemError: AST constructor
recursion depth mismatch", which aborted schemathesis in the middle of a run with every
generated case passed. The description is only the strategy's repr: on that error it is
"unknown" instead, and the values generated are the same.
"""

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f):
    try:
        return _describe(f)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description
