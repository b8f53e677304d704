"""Schemathesis hooks for the property-based OpenAPI test (`tests/it/openapi.rs`).

The API is a Lambda function URL with AWS_IAM auth. The local runner, like
AWS, refuses a request without a SigV4 `Authorization` header (and
`X-Amz-Date`) with 403, and checks the header's shape, not its signature.
So this signs in that shape, and the checks that leave auth out see the 403
that AWS answers.
"""

import datetime

import schemathesis
from schemathesis.specs.openapi import checks as builtin


@schemathesis.auth()
class SigV4Shape:
    """An `AWS4-HMAC-SHA256` header with a credential scope and `X-Amz-Date`."""

    def get(self, case, ctx):
        return "AKIDSCHEMATHESIS"

    def set(self, case, data, ctx):
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        case.headers = case.headers or {}
        case.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={data}/{now[:8]}/us-east-1/lambda/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
        )
        case.headers["X-Amz-Date"] = now


@schemathesis.check
def missing_required_header_sigv4(ctx, response, case):
    """The built-in `missing_required_header`, except that a request without
    `Authorization` must get the 403 a function URL answers (documented on
    every operation), where the built-in insists on 401."""
    meta = case.meta
    data = getattr(getattr(meta, "phase", None), "data", None)
    if getattr(data, "parameter", None) and data.parameter.lower() == "authorization":
        if response.status_code != 403:
            raise AssertionError(
                f"a request without Authorization got {response.status_code}, not 403"
            )
        return None
    return builtin.missing_required_header(ctx, response, case)


# OpenAPI cannot state how query parameters depend on each other. These keep
# generated queries inside the dependencies the document describes in words,
# so the positive checks test everything else. Each is covered by its own
# test through the real parts (tests/it/api.rs, tests/it/monitoring.rs).


def _positive(case):
    """Whether the case is meant to be valid (a negative one stays as drawn)."""
    meta = case.meta
    return meta is None or meta.generation.mode.name == "POSITIVE"


@schemathesis.hook("map_case").apply_to(method="GET", path="/stats")
def stats_range_is_ordered(ctx, case):
    """`from` is at or before `to`, at most 92 days apart: make `to` `from`."""
    if _positive(case) and case.query and "from" in case.query:
        case.query["to"] = case.query["from"]
    return case


@schemathesis.hook("map_case").apply_to(method="GET", path="/attempts")
def cursors_come_from_a_previous_page(ctx, case):
    """A cursor is opaque: only one the API gave out is valid."""
    if _positive(case) and case.query:
        case.query.pop("cursor", None)
    return case


@schemathesis.hook("map_case").apply_to(method="GET", path="/targets/{id}/suppressions")
def suppression_cursors_come_from_a_previous_page(ctx, case):
    """As for /attempts: only a cursor the API gave out is valid."""
    if _positive(case) and case.query:
        case.query.pop("cursor", None)
    return case
