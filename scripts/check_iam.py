#!/usr/bin/env python3
"""Least privilege, checked on the template *after* SAM's expansion.

`sam validate` and cfn-lint read template.yaml as written, but what gets
deployed is what the SAM transform makes of it: an SQS event, for example,
quietly attaches the AWS-managed policy AWSLambdaSQSQueueExecutionRole
(sqs:ReceiveMessage, DeleteMessage, GetQueueAttributes on "*"). This script
expands the template with samtranslator (the library inside aws-sam-cli),
offline: no AWS call, no credentials; the managed-policy names SAM may need
come from the map bundled with samtranslator, never from IAM.

It then fails (exit 1) on:
  * an Allow statement in an identity policy (a role's inline policies,
    AWS::IAM::Policy, AWS::IAM::ManagedPolicy, ...) that grants any action
    ("sqs:*" and "*" included) on every resource: "*", or an ARN whose
    resource name is a wildcard (arn:aws:sqs:*:*:*, table/*,
    arn:aws:s3:::*). Only the actions listed in NO_RESOURCE_LEVEL, which AWS
    authorizes on "*" alone, are let through, each with its reason;
  * a managed policy attached to a role, other than the ALLOWED_MANAGED
    ones (X-Ray only). The known broad ones are named with what they grant.
Resource-based policies (bucket, topic and key policies) are not identity
grants and are not checked here; a key policy's "*" means the key itself.

Usage:
  check_iam.py template.yaml          check a template
  check_iam.py --self-test            prove the check fails on a bad template
  check_iam.py --dump template.yaml   print the expanded template (JSON)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator

# The only actions a statement may allow on "*": AWS has no resource-level
# permission for them (Service Authorization Reference: no resource type),
# so "*" is the only Resource it accepts. Exact action names only:
# "ses:Get*" is not excused by "ses:GetAccount". Each with its reason. A
# new entry is a reviewed decision; anything else on "*" fails make lint.
NO_RESOURCE_LEVEL = {
    # The operator API's GET /health reads SES sending status and quota.
    "ses:GetAccount": "SES v2 GetAccount has no resource type",
    # What AWSXrayWriteOnlyAccess grants (allowed below); none has a resource type.
    "xray:PutTraceSegments": "X-Ray PutTraceSegments has no resource type",
    "xray:PutTelemetryRecords": "X-Ray PutTelemetryRecords has no resource type",
    "xray:GetSamplingRules": "X-Ray GetSamplingRules has no resource type",
    "xray:GetSamplingTargets": "X-Ray GetSamplingTargets has no resource type",
    "xray:GetSamplingStatisticSummaries": "X-Ray GetSamplingStatisticSummaries has no resource type",
    # Not used (metrics are EMF log lines), listed for a future PutMetricData;
    # a cloudwatch:namespace condition is the way to narrow it.
    "cloudwatch:PutMetricData": "CloudWatch PutMetricData has no resource type",
}

# The only managed policies a role may carry.
ALLOWED_MANAGED = {
    # What SAM attaches for Tracing: Active, and its older twin.
    "AWSXrayWriteOnlyAccess": "X-Ray: PutTraceSegments, PutTelemetryRecords, sampling rules (Tracing: Active)",
    "AWSXRayDaemonWriteAccess": "X-Ray: PutTraceSegments, PutTelemetryRecords, sampling rules",
}

# Managed policies known to grant actions on "*", named with what they grant
# (any other AWS-managed policy fails too, as not allowed).
DATA_PLANE_MANAGED = [
    (r"^AWSLambdaBasicExecutionRole$", "logs:CreateLogGroup, CreateLogStream, PutLogEvents on *"),
    (r"^AWSLambdaSQSQueueExecutionRole$", "sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes on *"),
    (r"^AWSLambdaDynamoDBExecutionRole$", "dynamodb stream reads on *"),
    (r"^AWSLambdaKinesisExecutionRole$", "kinesis reads on *"),
    (r"^AmazonDynamoDB", "dynamodb actions on *"),
    (r"^AmazonS3", "s3 actions on *"),
    (r"^AmazonSQS", "sqs actions on *"),
    (r"^AmazonSES", "ses actions on *"),
    (r"^SecretsManagerReadWrite$", "secretsmanager:* (and more) on *"),
    (r"^AWSKeyManagementService", "kms actions on *"),
    (r"(FullAccess|PowerUser|Administrator)", "broad access on *"),
]

IDENTITY_POLICY_TYPES = {
    "AWS::IAM::Role",
    "AWS::IAM::User",
    "AWS::IAM::Group",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::IAM::RolePolicy",
    "AWS::IAM::UserPolicy",
    "AWS::IAM::GroupPolicy",
}

NO_VALUE = {"Ref": "AWS::NoValue"}


# ---------- expansion ----------


class BundledPolicies:
    """A managed-policy loader for samtranslator that never calls IAM: it
    answers from the name → ARN map samtranslator ships with."""

    def load(self) -> dict[str, str]:
        from samtranslator.internal.managed_policies import get_bundled_managed_policy_map

        return dict(get_bundled_managed_policy_map("aws") or {})


def _fake_s3_uri(props: dict[str, Any], key: str) -> None:
    value = props.get(key)
    if isinstance(value, str) and not value.startswith("s3://"):
        props[key] = "s3://check-iam-placeholder/" + (value.strip("./") or "code")


def expand(template: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation gets it after the SAM transform."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # samtranslator warns about its own unpublished usage metrics on exit.
    logging.getLogger("samtranslator.metrics").setLevel(logging.ERROR)
    from samtranslator.translator.transform import transform

    t = copy.deepcopy(template)
    # The translator wants S3 locations, as `sam validate` arranges too.
    _fake_s3_uri(t.get("Globals", {}).get("Function", {}), "CodeUri")
    for r in t.get("Resources", {}).values():
        props = r.get("Properties") or {}
        if r.get("Type") == "AWS::Serverless::Function" and props.get("PackageType", "Zip") == "Zip":
            _fake_s3_uri(props, "CodeUri")
        elif r.get("Type") == "AWS::Serverless::LayerVersion":
            _fake_s3_uri(props, "ContentUri")
    return transform(t, {}, BundledPolicies())


def load_template(path: Path) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(path.read_text(encoding="utf-8"))


# ---------- what a statement grants ----------


def branches(value: Any) -> Iterator[Any]:
    """Every value an Fn::If may take (both branches; NoValue dropped)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, then, other = value["Fn::If"]
        yield from branches(then)
        yield from branches(other)
    elif value != NO_VALUE:
        yield value


def as_list(value: Any) -> list[Any]:
    out: list[Any] = []
    for v in branches(value):
        for item in v if isinstance(v, list) else [v]:
            out.extend(branches(item))
    return out


def render(value: Any) -> str:
    """A resource as text, intrinsics shown compactly."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "Fn::Sub":
            return v if isinstance(v, str) else v[0]
        if k == "Ref":
            return "!Ref " + str(v)
        if k == "Fn::GetAtt":
            return "!GetAtt " + (".".join(v) if isinstance(v, list) else str(v))
    return json.dumps(value, sort_keys=True)


def literal(value: Any) -> str | None:
    """The text of a resource with every substitution made opaque ("X"),
    or None for a reference (!Ref, !GetAtt: one named resource)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "Fn::Sub":
            text = v if isinstance(v, str) else v[0]
            return re.sub(r"\$\{[^}]*\}", "X", text)
        if k == "Fn::Join":
            sep, parts = v
            return sep.join(p if isinstance(p, str) else "X" for p in parts)
    return None


def is_wildcard_resource(value: Any) -> bool:
    """Whether a Resource names every resource of its kind: "*", or an ARN
    whose resource name is (or starts with) a wildcard."""
    text = literal(value)
    if text is None:
        return False
    if text.strip() == "*":
        return True
    parts = text.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        # e.g. "X/reports/*" from !Sub "${Bucket.Arn}/reports/*": the
        # substitution names one resource; only a leading wildcard is "all".
        return text.lstrip().startswith(("*", "?"))
    service, resource = parts[2], parts[5]
    if service == "s3":
        name = resource.split("/", 1)[0]  # the bucket
    else:
        pieces = re.split(r"[/:]", resource, maxsplit=1)
        # "table/NAME", "secret:NAME", "key/ID", "identity/NAME"; a queue is just NAME
        name = pieces[1] if len(pieces) == 2 else pieces[0]
    return name == "" or name.startswith("*") or name.startswith("?")


def action_flagged(action: str) -> bool:
    """Whether an action allowed on "*" is a finding: anything but an exact
    NO_RESOURCE_LEVEL entry (so "*", "sqs:*" and "ses:Get*" all are)."""
    excused = {a.lower() for a in NO_RESOURCE_LEVEL}
    return action.strip().lower() not in excused


def statements(document: Any) -> Iterator[dict[str, Any]]:
    for doc in branches(document):
        if not isinstance(doc, dict):
            continue
        for s in as_list(doc.get("Statement", [])):
            if isinstance(s, dict):
                yield s


def policy_documents(rid: str, resource: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(label, document) for each identity policy a resource carries."""
    props = resource.get("Properties") or {}
    kind = resource.get("Type")
    if kind in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
        for i, p in enumerate(as_list(props.get("Policies", []))):
            if isinstance(p, dict):
                yield f"{rid} inline policy {render(p.get('PolicyName', i))}", p.get("PolicyDocument")
    elif kind in IDENTITY_POLICY_TYPES:
        name = props.get("PolicyName") or props.get("ManagedPolicyName") or rid
        yield f"{rid} ({kind}, {render(name)})", props.get("PolicyDocument")


def statement_findings(label: str, document: Any) -> Iterator[str]:
    for i, s in enumerate(statements(document)):
        if s.get("Effect") != "Allow":
            continue
        where = f"{label}, statement {i}" + (f" (Sid {s['Sid']})" if s.get("Sid") else "")
        if "NotResource" in s:
            wild = ["NotResource " + ", ".join(render(r) for r in as_list(s["NotResource"]))]
        else:
            wild = [render(r) for r in as_list(s.get("Resource", [])) if is_wildcard_resource(r)]
        if not wild:
            continue
        if "NotAction" in s:
            yield f"{where}: Allow with NotAction on {wild[0]!r} grants every other action, data plane included"
            continue
        for a in as_list(s.get("Action", [])):
            if isinstance(a, str) and action_flagged(a):
                yield (
                    f"{where}: allows {a} on {wild[0]!r}; scope it to the stack's own "
                    "resources (or, if AWS has no resource-level permission for it, add it to "
                    "NO_RESOURCE_LEVEL in scripts/check_iam.py with the reason)"
                )


def managed_policy_name(arn: Any) -> tuple[str | None, str]:
    """(name of an AWS-managed policy or None, the ARN as text)."""
    text = literal(arn)
    shown = render(arn)
    if text is None:
        return None, shown
    m = re.match(r"^arn:[^:]*:iam::aws:policy/(?:.*/)?([^/]+)$", text)
    return (m.group(1) if m else None), shown


def managed_findings(rid: str, resource: dict[str, Any], resources: dict[str, Any]) -> Iterator[str]:
    props = resource.get("Properties") or {}
    for arn in as_list(props.get("ManagedPolicyArns", [])):
        name, shown = managed_policy_name(arn)
        if name in ALLOWED_MANAGED:
            continue
        if name is None:
            # A policy of this template is checked as a resource of its own.
            target = arn.get("Ref") if isinstance(arn, dict) else None
            if isinstance(target, str) and resources.get(target, {}).get("Type") == "AWS::IAM::ManagedPolicy":
                continue
            yield f"{rid}: managed policy {shown} cannot be checked here (not AWS-managed and not in this template)"
            continue
        grants = next((what for pattern, what in DATA_PLANE_MANAGED if re.search(pattern, name)), None)
        if grants:
            yield f"{rid}: managed policy {name} grants {grants}; give the role explicit statements instead"
        else:
            allowed = ", ".join(sorted(ALLOWED_MANAGED))
            yield f"{rid}: managed policy {name} is not on the allow-list ({allowed})"


def check(expanded: dict[str, Any]) -> list[str]:
    resources = expanded.get("Resources", {})
    findings: list[str] = []
    for rid, r in sorted(resources.items()):
        if r.get("Type") not in IDENTITY_POLICY_TYPES:
            continue
        for label, doc in policy_documents(rid, r):
            findings.extend(statement_findings(label, doc))
        findings.extend(managed_findings(rid, r, resources))
    return findings


# ---------- self-test ----------

BAD_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Transform": "AWS::Serverless-2016-10-31",
    "Resources": {
        "Queue": {"Type": "AWS::SQS::Queue"},
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            },
        },
        # SAM's SQS event attaches AWSLambdaSQSQueueExecutionRole; the
        # policy allows dynamodb:PutItem on "*".
        "Consumer": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": ".",
                "Handler": "bootstrap",
                "Runtime": "provided.al2023",
                "Policies": [{"Statement": [{"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "*"}]}],
                "Events": {"Q": {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["Queue", "Arn"]}}}},
            },
        },
    },
}


def self_test() -> list[str]:
    """Problems with the check itself (empty: it works)."""
    problems: list[str] = []
    found = check(expand(BAD_TEMPLATE))
    expected = ["AWSLambdaSQSQueueExecutionRole", "dynamodb:PutItem on '*'"]
    for e in expected:
        if not any(e in f for f in found):
            problems.append(f"the bad template's {e!r} was not reported (findings: {found})")

    # The same function done right passes: its own role, its own log group,
    # and statements on the queue and table it uses.
    good = copy.deepcopy(BAD_TEMPLATE)
    fn = good["Resources"]["Consumer"]["Properties"]
    del fn["Policies"]
    fn["Role"] = {"Fn::GetAtt": ["ConsumerRole", "Arn"]}
    good["Resources"]["ConsumerLogGroup"] = {"Type": "AWS::Logs::LogGroup"}
    good["Resources"]["ConsumerRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
            },
            "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXrayWriteOnlyAccess"}],
            "Policies": [{
                "PolicyName": "consumer",
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                     "Resource": {"Fn::GetAtt": ["ConsumerLogGroup", "Arn"]}},
                    {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"], "Resource": {"Fn::GetAtt": ["Queue", "Arn"]}},
                    {"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": {"Fn::GetAtt": ["Table", "Arn"]}},
                    {"Effect": "Allow", "Action": "ses:GetAccount", "Resource": "*"},
                ]},
            }],
        },
    }
    if found := check(expand(good)):
        problems.append(f"the good template was refused: {found}")

    # Wildcards in every form are caught; an exception covers only its exact action.
    cases = [
        ("sqs:*", "*", True),
        ("*", "*", True),
        ("ses:Get*", "*", True),
        ("ses:GetAccount", "*", False),
        ("kms:Decrypt", {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"}, True),
        ("dynamodb:Query", {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"}, True),
        ("s3:GetObject", "arn:aws:s3:::*/*", True),
        ("s3:GetObject", {"Fn::Sub": "${Bucket.Arn}/reports/*"}, False),
        ("sqs:SendMessage", {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*"}, True),
        ("cloudwatch:PutMetricData", "*", False),
        ("xray:PutTraceSegments", "*", False),
        # Any service's action on "*" is a finding, not only the data plane's.
        ("iam:PassRole", "*", True),
        ("lambda:InvokeFunction", "*", True),
        ("sns:Publish", "*", True),
        ("sts:AssumeRole", "*", True),
        ("ssm:GetParameter", "*", True),
        ("events:PutEvents", "*", True),
        ("logs:PutLogEvents", "*", True),
        ("logs:PutLogEvents", {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*"}, True),
        ("logs:PutLogEvents", {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/x:*"}, False),
        ("ssm:GetParameter", {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/*"}, True),
    ]
    for action, resource, bad in cases:
        doc = {"Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}
        got = bool(list(statement_findings("case", doc)))
        if got != bad:
            problems.append(f"{action} on {render(resource)}: flagged={got}, expected {bad}")
    for name, bad in [("AmazonS3FullAccess", True), ("SecretsManagerReadWrite", True),
                      ("AWSLambdaBasicExecutionRole", True), ("AWSXrayWriteOnlyAccess", False),
                      ("ReadOnlyAccess", True)]:
        role = {"Type": "AWS::IAM::Role", "Properties": {"ManagedPolicyArns": [f"arn:aws:iam::aws:policy/{name}"]}}
        got = bool(list(managed_findings("R", role, {})))
        if got != bad:
            problems.append(f"managed policy {name}: flagged={got}, expected {bad}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("template", nargs="?", type=Path)
    ap.add_argument("--self-test", action="store_true", help="check the checker on a bad template")
    ap.add_argument("--dump", action="store_true", help="print the expanded template as JSON")
    args = ap.parse_args()
    if args.self_test:
        problems = self_test()
        for p in problems:
            print(f"check_iam self-test: {p}", file=sys.stderr)
        if problems:
            return 1
        print("check_iam self-test: the bad template fails as it must, the good one passes")
        return 0
    if args.template is None:
        ap.error("a template is required (or --self-test)")
    expanded = expand(load_template(args.template))
    if args.dump:
        json.dump(expanded, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
        return 0
    findings = check(expanded)
    for f in findings:
        print(f"check_iam: {f}", file=sys.stderr)
    if findings:
        print(f"check_iam: {len(findings)} finding(s) in {args.template} after SAM's expansion", file=sys.stderr)
        return 1
    roles = sum(1 for r in expanded.get("Resources", {}).values() if r.get("Type") == "AWS::IAM::Role")
    print(f"check_iam: {args.template}: {roles} roles, no action on * beyond the {len(NO_RESOURCE_LEVEL)} without resource-level permissions, no managed policy beyond X-Ray")
    return 0


if __name__ == "__main__":
    sys.exit(main())
