#!/usr/bin/env python3
"""Cost per million deliveries of report-delivery on AWS (us-east-1, arm64).

A reproducible model, pure Python 3 standard library. Counts come from the
code (see COUNTS below, each with the code path it was read from), the
DynamoDB write units from `make wcu` (BENCHMARKS.md), the log bytes from the
logs of a real integration-test run, prices from AWS's published prices
(each constant names where and when it was read). Durations are assumptions,
taken as options.

The scenario: one execution fanned out to T webhook targets (--targets),
every delivery succeeding on its first try, deliver invoked with batches of
B messages (--deliver-batch).

Usage:
    python3 scripts/cost_model.py                      # the table, defaults
    python3 scripts/cost_model.py --targets 20 --deliver-seconds 0.5
    python3 scripts/cost_model.py --measure-logs target/it/wcu-t2da94a6720
    python3 scripts/cost_model.py --self-test
    python3 scripts/cost_model.py --sources            # every price and its source

Free tiers are ignored (they do not matter at millions of deliveries).
1 GB of data = 2^30 bytes; Lambda memory GB = MB / 1024.
"""
import argparse
import json
import math
import os
import re
import sys

# --------------------------------------------------------------------------
# Prices, us-east-1. All read 2026-11-27 unless marked "(not re-read here)":
# those are AWS's well-known published prices, not confirmed by a page read
# for this model.
# --------------------------------------------------------------------------
READ = "2026-11-27"

# Lambda, Arm (Graviton), first pricing tier (7.5 billion GB-s / month).
# aws.amazon.com/lambda/pricing renders its rates client-side; the number was
# read at https://cloudchipr.com/blog/aws-lambda-pricing ("ARM Pricing ...
# $0.0000133334 per GB-second", US East) and matches artillery's price table
# (https://app.unpkg.com/artillery@2.0.28/files/lib/platform/aws-lambda/prices.js:
# arm64 1333340e-11).
LAMBDA_ARM_GB_SECOND = 0.0000133334
# https://raw.githubusercontent.com/api-evangelist/aws-lambda/refs/heads/main/plans/aws-lambda-plans-pricing.yml
# (transcribed from aws.amazon.com/lambda/pricing, "$0.20 per million
# requests"), also https://notes.kodekloud.com/docs/AWS-Lambda/Understanding-Lambda/Pricing
LAMBDA_PER_REQUEST = 0.20 / 1e6

# SQS standard queue: $0.40 per million requests (first 100 billion / month);
# "each 64 KB chunk of a payload is billed as 1 request".
# https://www.factualminds.com/blog/amazon-sqs-pricing-64kb-rule-fifo-vs-standard/ (us-east-1, June 2026)
# https://cloudburn.io/blog/amazon-sqs-pricing (us-east-1, March 2026)
# https://unanswered.io/guide/aws-sqs-pricing-and-cost-optimization (64 KB rule; Lambda long-polls)
SQS_PER_REQUEST = 0.40 / 1e6
SQS_CHUNK_BYTES = 64 * 1024

# DynamoDB on-demand, Standard table class, since the November 1, 2024 cut:
# $0.625 per million write request units, $0.125 per million read request units.
# https://airbyte.com/data-engineering-resources/dynamodb-pricing ("After the
# 50% reduction ... WRU $0.625 per million ... RRU $0.125 per million", US East)
# https://www.jusdb.com/blog/dynamodb-cost-optimization-a-comprehensive-guide-by-jusdb ("Effective November 1, 2024")
# Units: https://docs.aws.amazon.com/pt_br/whitepapers/latest/how-aws-pricing-works/dynamodb.html
# (strongly consistent read: 1 RRU per 4 KB; eventually consistent: 1/2;
# 1 WRU per 1 KB written) and https://aws.eu/dynamodb/pricing/on-demand
DDB_PER_WRU = 0.625 / 1e6
DDB_PER_RRU = 0.125 / 1e6
# (not re-read here) storage $0.25 per GB-month, continuous backups (PITR)
# $0.20 per GB-month.
DDB_STORAGE_GB_MONTH = 0.25
DDB_PITR_GB_MONTH = 0.20

# S3 Standard: PUT/COPY/POST/LIST $0.005 per 1,000; GET/HEAD $0.0004 per 1,000.
# https://c3x.dev/blog/s3-request-fees-explained ; aws.amazon.com/s3/pricing
# (read through a proxy) lists the request classes but renders no numbers.
S3_PER_PUT = 0.005 / 1000
S3_PER_GET = 0.0004 / 1000
S3_STANDARD_GB_MONTH = 0.023  # (not re-read here)

# KMS: $1 per customer managed key per month, +$1/month per rotated backing
# key (https://aws.amazon.com/kms/pricing/, official page, read); requests
# $0.03 per 10,000 (https://www.wring.co/blog/aws-kms-pricing-guide, March 2026).
KMS_KEY_MONTH = 1.00
KMS_PER_REQUEST = 0.03 / 10_000

# Secrets Manager: $0.40 per secret per month, $0.05 per 10,000 API calls.
# Official page not found by the search tool; read at
# https://hivebook.wiki/wiki/aws-secrets-manager-rotated-secrets-dynamic-db-credentials-kms
SECRETS_SECRET_MONTH = 0.40
SECRETS_PER_CALL = 0.05 / 10_000

# CloudWatch Logs ingestion, Standard class: $0.50 per GB. Since May 1, 2025
# Lambda's logs are priced as vended logs, tiered, the first tier (10 TB)
# being the old flat $0.50: https://www.duckbillgroup.com/?p=9080 ; storage
# $0.03 per GB-month: https://hykell.com/kb/platform-specific-guides/aws-cloudwatch-logs-pricing
# EMF: "you are only charged for Data Ingestion per GB, Data Archival per GB
# and per Custom Metric":
# https://docs.aws.amazon.com/zh_tw/wellarchitected/latest/serverless-applications-lens/logging-ingestion-and-storage.html
CW_LOGS_PER_GB = 0.50
CW_LOGS_STORAGE_GB_MONTH = 0.03
# Custom metrics $0.30 per metric per month (first 10,000):
# https://hivebook.wiki/wiki/cloudwatch-logs-cost-never-expire-retention-and-cardinality-blowups
# (aws.amazon.com/cloudwatch/pricing/ read: free tier 10 metrics; paid rates
# not rendered in the page text).
CW_CUSTOM_METRIC_MONTH = 0.30
# (not re-read here) standard alarm $0.10 per alarm metric per month,
# dashboard $3 per month.
CW_ALARM_MONTH = 0.10
CW_DASHBOARD_MONTH = 3.00

# SES outbound: $0.10 per 1,000 emails
# (https://www.acecloudinterviews.com/tutorials/aws/ses/ ; https://aws.amazon.com/ses/faqs/
# points to the pricing page); attachments $0.12 per GB (not re-read here).
SES_PER_EMAIL = 0.10 / 1000
SES_ATTACHMENT_PER_GB = 0.12

# X-Ray: $5.00 per million traces recorded (official, https://aws.amazon.com/de/xray/pricing/).
# Lambda active tracing samples 1 request per second and 5% of the rest, and
# the rate cannot be configured for a function:
# https://awsnotes.dendron.so/serverless/aws-lambda/common/monitoring-functions
# (adapted from the Lambda guide), default rule: https://tsypuk.github.io/posts/2023/03/27/xra-tracing-3.html
XRAY_PER_TRACE = 5.00 / 1e6
XRAY_RESERVOIR_PER_S = 1.0
XRAY_FIXED_RATE = 0.05

# (not re-read here) data transfer out to the internet, first 10 TB: $0.09 per GB.
EGRESS_PER_GB = 0.09

GB = 2 ** 30
SECONDS_PER_MONTH = 30.4375 * 86400

# --------------------------------------------------------------------------
# What template.yaml says (read 2026-11-27).
# --------------------------------------------------------------------------
MEMORY_MB = {"render": 512, "fanout": 256, "deliver": 512, "reconcile": 128}  # fanout: Globals
ESM_QUEUES = 5            # Executions, Fanout, Email, Slack, Webhook have an SQS event source
ALARMS = 24               # Type: AWS::CloudWatch::Alarm
DASHBOARDS = 1
RECONCILE_PER_MONTH = SECONDS_PER_MONTH / 300   # Schedule: rate(5 minutes)
PENDING_SHARDS = 16       # shared/src/store/mod.rs PENDING_SHARDS

# --------------------------------------------------------------------------
# DynamoDB write units per delivered webhook attempt, measured by `make wcu`
# (BENCHMARKS.md, "DynamoDB write units per delivery", 2026-11-27, 20 targets).
# Per-attempt items are independent of T; the execution's 3 units are
# shared by the T attempts (0.15 at T = 20).
# --------------------------------------------------------------------------
WRU_PER_ATTEMPT = [
    # (write, base table, GSI, code)
    ("attempt created (fan-out PutItem)", 1, 3, "AttemptStore::create: by_target, by_execution, open"),
    ("lease taken (deliver Begin: conditional PutItem)", 1, 0, "AttemptStore::apply(Begin) after a GetItem"),
    ("delivered (deliver: conditional PutItem)", 1, 1, "apply_from(Deliver) on the leased record: no read; leaves the sparse open index"),
    ("statistics: the target day item", 1, 0, "stats.rs record_all"),
]
# Written once per deliver invocation, whatever its batch holds.
WRU_PER_BATCH = [
    ("statistics: report-hour + service-hour shards", 2, "stats.rs record_all: Gain per item"),
]
WRU_PER_EXECUTION = [
    ("execution rendered (render PutItem) + by_unsettled put", 2, "put_rendered"),
    ("execution fanned out", 1, "mark_fanned_out"),
    ("execution outcome claimed (item over 1 KB)", 2, "claim_outcome"),
    ("execution completion recorded (item over 1 KB) + by_unsettled delete", 3, "record_outcome"),
]

# --------------------------------------------------------------------------
# Log bytes, measured from target/it/wcu-t2da94a6720 (one execution, 20
# signed webhook targets, all delivered on the first try; the functions'
# own logs through the local runner). Reproduce with --measure-logs.
# Local runs log text (LOG_FORMAT=text, set by local/src/runner.rs); on
# Lambda telemetry.rs logs JSON (flattened event, current span and span
# list), so each text line is rewritten as the JSON line tracing-subscriber
# writes (checked byte for byte against logs-tb5cb6ae186, a JSON run: see
# --self-test), with Lambda-length ids (X-Ray trace header, tgt_<uuid>
# target ids). EMF lines are the same in both formats.
# --------------------------------------------------------------------------
MEASURED_LOGS = {
    "run": "target/it/wcu-t2da94a6720",
    "per_execution_bytes": 3129,    # render 2 lines + 2 EMF, fanout 1 + 2 EMF, deliver "execution outcome sent"
    "per_execution_events": 8,
    "per_delivery_bytes": 976,      # deliver: "delivered" + its share of the invocation's EMF records (arrays)
    "per_delivery_events": 1,
    "text_per_delivery_bytes": 573,  # the same per-delivery lines as logged locally (text)
}

# Lambda platform lines per invocation (LogFormat: Text, Tracing: Active),
# from the formats shown at https://docs.baselime.io/advanced/discovered-keys/
# and https://docs.aws.amazon.com/lambda/latest/operatorguide/log-structure.html
PLATFORM_LINES = [
    "START RequestId: 8fc6f963-411b-58b5-8483-a32130c0f45d Version: $LATEST",
    "END RequestId: 8fc6f963-411b-58b5-8483-a32130c0f45d",
    "REPORT RequestId: 8fc6f963-411b-58b5-8483-a32130c0f45d\tDuration: 351.67 ms\t"
    "Billed Duration: 352 ms\tMemory Size: 512 MB\tMax Memory Used: 41 MB\t\n"
    "XRAY TraceId: 1-61c86fa4-59b3c6d959653c527fd10966\tSegmentId: 107ea78a5750a811\tSampled: true\t",
]
PLATFORM_BYTES = sum(len(l.encode()) for l in PLATFORM_LINES)

# Custom metrics (shared/src/metrics.rs): the 9 a webhook-only happy path
# publishes (seen in the run above), and the catalogue's upper bound.
HAPPY_PATH_METRICS = 9
ERROR_CODES = 56
CATALOGUE_METRICS = (5 * 3            # AttemptsStarted, RetriesScheduled, ImmediateRetries, SendDuration, EndToEndLatency x Channel
                     + 3 * 3 + 3      # Deliveries: Channel x Outcome, Outcome
                     + 3 * ERROR_CODES + ERROR_CODES  # SendErrors: Channel x ErrorCode, ErrorCode
                     + 3 + 3          # DeadLettered, DuplicatesIgnored x Stage
                     + 3 * 2          # TargetsStopped: Channel x Change
                     + 5)             # RenderDuration, PdfBytes, FanoutDuration, TargetsPerExecution, StuckAttempts


# --------------------------------------------------------------------------
# Log measurement: text lines of the local runner -> Lambda's JSON lines.
# --------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LEVEL_LINE = re.compile(r"^\s*(TRACE|DEBUG|INFO|WARN|ERROR) (.*)$")
SPAN = re.compile(r"([A-Za-z_][A-Za-z0-9_ ]*)\{(.*?)\}:")
FIELD = re.compile(r'(?:^| )([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|\S*)')
# A Lambda trace header (Root;Parent;Sampled) instead of the runner's
# "Root=1-<uuid>"; a default target id (tgt_ + 32 hex) instead of test ids.
LAMBDA_TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
LAMBDA_TARGET = "tgt_" + "0" * 32
# Lines only the local runner writes (ALLOW_PRIVATE_WEBHOOK_TARGETS is
# "false" in template.yaml; "Error: ..." is a process seeing the runner go).
LOCAL_ONLY = ("ALLOW_PRIVATE_WEBHOOK_TARGETS is on", "Error: ")


def _value(v):
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return json.loads(v)
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    if re.fullmatch(r"-?\d+\.\d+", v):
        return float(v)
    if v in ("true", "false"):
        return v == "true"
    return v


def _fields(text):
    return {m.group(1): _value(m.group(2)) for m in FIELD.finditer(text)}


def text_to_json(line, lambda_ids=False):
    """The JSON line telemetry.rs writes on Lambda for one text-format line
    (fields flattened, then "span" and "spans"), or None if it is not one."""
    m = LEVEL_LINE.match(line)
    if not m:
        return None
    level, rest = m.groups()
    spans, pos = [], 0
    while True:
        sm = SPAN.match(rest, pos)
        if not sm:
            break
        spans.append((sm.group(1), _fields(sm.group(2))))
        pos = sm.end()
    body = rest[pos:].lstrip()
    fm = re.search(r"(?:^| )[A-Za-z_][A-Za-z0-9_.]*=", body)
    message, fields = (body[:fm.start()].rstrip(), _fields(body[fm.start():])) if fm else (body, {})
    if lambda_ids:
        for _, f in spans:
            if "xrayTraceId" in f:
                f["xrayTraceId"] = LAMBDA_TRACE
            if "target_id" in f:
                f["target_id"] = LAMBDA_TARGET
        if "target_id" in fields:
            fields["target_id"] = LAMBDA_TARGET
    out = {"level": level, "message": message}
    out.update(fields)
    if spans:
        name, f = spans[-1]
        out["span"] = dict(f, name=name)
        out["spans"] = [dict(f, name=n) for n, f in spans]
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def measure_logs(run_dir):
    """Bytes and events per execution and per delivery from a run's
    logs/{render,fanout,deliver}.log, as Lambda would ingest them (JSON)."""
    per_exec = {"bytes": 0, "events": 0}
    per_deliv = {"bytes": 0, "events": 0}
    text_bytes = 0
    deliveries = executions = 0
    invocations = {}
    skipped = []
    for fn in ("render", "fanout", "deliver"):
        path = os.path.join(run_dir, "logs", f"{fn}.log")
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ANSI.sub("", l.rstrip("\n")) for l in f]
        ids = set()
        for line in lines:
            if not line.strip():
                continue
            if any(marker in line for marker in LOCAL_ONLY):
                skipped.append(f"{fn}: {line[:70]}")
                continue
            m = re.search(r'requestId="([^"]+)"', line)
            if m:
                ids.add(m.group(1))
            if line.startswith("{"):          # EMF (or an already-JSON line)
                out, message = line, ""
                if '"_aws"' not in line:
                    message = json.loads(line).get("message", "")
            else:
                out = text_to_json(line, lambda_ids=True)
                if out is None:
                    skipped.append(f"{fn}: {line[:70]}")
                    continue
                message = json.loads(out)["message"]
            size = len(out.encode())
            if fn == "deliver" and message == "delivered":
                deliveries += 1
            if fn == "fanout" and message == "fan-out complete":
                executions += 1
            bucket = per_deliv if (fn == "deliver" and message != "execution outcome sent") else per_exec
            bucket["bytes"] += size
            bucket["events"] += 1
            if bucket is per_deliv:
                text_bytes += len(line.encode())
        invocations[fn] = len(ids)
    if not deliveries or not executions:
        raise SystemExit(f"{run_dir}: no delivered attempt or no finished fan-out in the logs")
    return {
        "run": run_dir,
        "deliveries": deliveries,
        "executions": executions,
        "invocations": invocations,
        "per_execution_bytes": round(per_exec["bytes"] / executions),
        "per_execution_events": round(per_exec["events"] / executions),
        "per_delivery_bytes": round(per_deliv["bytes"] / deliveries),
        "per_delivery_events": round(per_deliv["events"] / deliveries),
        "text_per_delivery_bytes": round(text_bytes / deliveries),
        "skipped": skipped,
    }


# --------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------
def sqs_requests(payload_bytes):
    """Billed requests of one API call carrying payload_bytes."""
    return max(1, math.ceil(payload_bytes / SQS_CHUNK_BYTES))


def xray_sampled_fraction(invocations_per_month):
    """Share of a function's invocations Lambda traces, arrivals spread evenly."""
    r = invocations_per_month / SECONDS_PER_MONTH
    if r <= 0:
        return 0.0
    sampled = min(r, XRAY_RESERVOIR_PER_S) + XRAY_FIXED_RATE * max(r - XRAY_RESERVOIR_PER_S, 0)
    return sampled / r


def model(a):
    """Everything per execution of T deliveries; returns lines, counts, fixed costs."""
    T, B = a.targets, a.deliver_batch
    deliver_invocations = T / B                  # steady state: full batches
    exec_reads_deliver = math.ceil(T / B)        # one execution read per invocation (cached per batch)
    fanout_seconds = a.fanout_seconds if a.fanout_seconds is not None else 0.05 + 0.005 * T
    lines = []   # (section, item, $ per execution, note)

    def add(section, item, dollars, note=""):
        lines.append((section, item, dollars, note))

    # ---- Lambda ---------------------------------------------------------
    def lam(fn, invocations, seconds):
        gb = MEMORY_MB[fn] / 1024
        cold = invocations * a.cold_start_rate
        compute = (invocations * seconds + cold * a.init_seconds) * gb * LAMBDA_ARM_GB_SECOND
        requests = invocations * LAMBDA_PER_REQUEST
        add("Lambda", f"{fn} ({MEMORY_MB[fn]} MB, {seconds:g} s x {invocations:g}/exec)",
            compute + requests, f"compute {compute * 1e6 / T:.3f} + requests {requests * 1e6 / T:.3f} $/M")
    lam("render", 1, a.render_seconds)
    lam("fanout", 1, fanout_seconds)
    lam("deliver", deliver_invocations, a.deliver_seconds)

    # ---- SQS (pipeline) --------------------------------------------------
    exec_msg = sqs_requests(a.execution_message_kb * 1024)
    sqs = {
        "render: ESM ReceiveMessage + DeleteMessageBatch": 2 * exec_msg,
        "render: SendMessage fanout.v1": 1,
        "fanout: ESM ReceiveMessage + DeleteMessageBatch": 2,
        "fanout: SendMessageBatch (10 per call)": math.ceil(T / 10),
        "deliver: ESM ReceiveMessage + DeleteMessageBatch": 2 * deliver_invocations,
    }
    add("SQS", "pipeline requests", sum(sqs.values()) * SQS_PER_REQUEST,
        f"{sum(sqs.values()) / T:.2f} requests/delivery")

    # ---- Outcome events --------------------------------------------------
    execution_event = 350 + 140 * T            # events/outcome-execution.json: ~907 B for 4 attempts
    # deliver sends an invocation's delivery events in SendMessageBatch
    # calls of 10 (outcomes.rs send_chunk), ~600 B each
    per_call = min(B, 10)
    outcome_sends = (deliver_invocations * math.ceil(B / per_call) * sqs_requests(per_call * 600)
                     + sqs_requests(execution_event))
    consumer = 2 * (T + 1) / a.outcome_consumer_batch   # receive + delete, in batches
    add("SQS", "outcome events (send + consumer receive/delete)",
        (outcome_sends + consumer) * SQS_PER_REQUEST,
        f"{outcome_sends / T:.2f} sends + {consumer / T:.2f} consumer requests/delivery")

    # ---- DynamoDB writes -------------------------------------------------
    attempt_wru = (sum(b + g for _, b, g, _ in WRU_PER_ATTEMPT)
                   + sum(u for _, u, _ in WRU_PER_BATCH) / a.deliver_batch)
    exec_wru = sum(u for _, u, _ in WRU_PER_EXECUTION)
    wru = a.wru if a.wru is not None else attempt_wru + exec_wru / T
    add("DynamoDB", f"write units ({wru:.2f}/delivery, GSI included)", wru * T * DDB_PER_WRU,
        "measured by make wcu" if a.wru is None else "--wru")

    # ---- DynamoDB reads --------------------------------------------------
    key_entry = 200  # bytes of a keys-only index entry (keys + overhead), generous
    query = lambda n: 0.5 * max(1, math.ceil(n * key_entry / 4096))   # eventually consistent (GSI)
    reads = {
        "render: GetItem execution (strong, absent)": 1,
        "fanout: GetItem execution (strong)": 1,
        "fanout: Query by_report (keys only, 500/page)": sum(query(min(500, T - p)) for p in range(0, T, 500)) or 0.5,
        "deliver: GetItem attempt before Begin (strong), per message": T,
        "deliver: GetItem target (strong), per message": T,
        "deliver: GetItem connection (strong), signed": T * a.signed_fraction,
        "deliver: GetItem execution (strong), once per invocation": exec_reads_deliver,
        "fanout: Query open (is any attempt open?)": 0.5,
        "deliver: Query open (is any attempt open?), once per invocation": 0.5 * exec_reads_deliver,
        "completion: GetItem execution (strong)": 1,
        "completion: Query by_execution (keys only)": query(T),
        "completion: BatchGetItem attempts (strong, <4 KB each)": T,
    }
    rru = sum(reads.values())
    add("DynamoDB", f"read units ({rru / T:.2f}/delivery)", rru * DDB_PER_RRU,
        "ALL_NEW return values cost no read units")

    # ---- S3 ---------------------------------------------------------------
    # input.json, report-*.pdf, report-*.csv, preview-*.json (+ chart-*.png)
    puts = 4 + a.chart
    # the claim check; the preview once per deliver invocation; email reads
    # the attached files and the chart picture per delivery
    gets = (a.claim_check + deliver_invocations
            + (T * (a.attached_files + a.chart) if a.channel == "email" else 0))
    add("S3", f"requests ({puts} PUT + {gets:g} GET per execution)",
        puts * S3_PER_PUT + gets * S3_PER_GET,
        "webhooks carry links: deliver reads the preview once per invocation" if a.channel == "webhook"
        else "email attaches the files and inlines the chart")

    # ---- KMS and Secrets Manager -----------------------------------------
    decrypts = T * a.signed_fraction * (1 - a.kms_hit_rate)
    add("KMS", f"Decrypt ({decrypts / T:.3f}/delivery)", decrypts * KMS_PER_REQUEST,
        "data keys cached 5 min per warm instance" if a.kms_hit_rate >= 1 else "")
    secret_reads = deliver_invocations * a.cold_start_rate
    add("Secrets Manager", "GetSecretValue (link keys, once per deliver cold start)",
        secret_reads * SECRETS_PER_CALL, f"cold starts: {a.cold_start_rate:g} per invocation")

    # ---- CloudWatch Logs ingestion ----------------------------------------
    logs = a.logs
    invocations = 1 + 1 + deliver_invocations
    log_bytes = (logs["per_execution_bytes"] + T * logs["per_delivery_bytes"] + invocations * PLATFORM_BYTES
                 + a.event_overhead * (logs["per_execution_events"] + T * logs["per_delivery_events"] + 3 * invocations))
    add("CloudWatch", f"Logs ingestion ({log_bytes / T:,.0f} B/delivery with EMF and START/END/REPORT)",
        log_bytes / GB * CW_LOGS_PER_GB, f"from {logs['run']}")

    # ---- Email only: SES ---------------------------------------------------
    if a.channel == "email":
        add("SES", "SendEmail", T * SES_PER_EMAIL, "")
        add("SES", "attachment data", T * a.attachment_kb * 1024 / GB * SES_ATTACHMENT_PER_GB, "")

    # ---- Billed too, not in the list --------------------------------
    execs_per_month = a.deliveries_per_month / T
    traced = (2 * xray_sampled_fraction(execs_per_month)
              + deliver_invocations * xray_sampled_fraction(execs_per_month * deliver_invocations))
    if a.tracing == "Active":
        add("extra", f"X-Ray traces (Tracing: Active; {traced / invocations:.0%} of invocations sampled)",
            traced * XRAY_PER_TRACE, f"at {a.deliveries_per_month:,.0f} deliveries/month, even arrivals")
    else:
        add("extra", "X-Ray traces (TracingMode PassThrough, the default: none of our own)", 0.0,
            "--tracing Active to price active tracing")
    xray_active = traced * XRAY_PER_TRACE
    if a.channel == "webhook":
        add("extra", f"data transfer out (webhook POST, ~{a.egress_kb:g} KB)",
            T * a.egress_kb * 1024 / GB * EGRESS_PER_GB, "estimate: body 660 B + headers + TLS handshake")

    # ---- Storage held for the retention periods (per million deliveries) ----
    months = a.record_days / 30.4375
    attempt_gb = T * a.attempt_stored_kb * 1024 / GB
    execution_gb = 1.5 * 1024 / GB
    storage = [
        ("DynamoDB storage + PITR, attempts and executions", (attempt_gb + execution_gb) * months
         * (DDB_STORAGE_GB_MONTH + DDB_PITR_GB_MONTH), f"{a.record_days:g} days (RecordRetentionDays)"),
        ("S3 Standard, reports/ (PDF, CSV, input)", a.report_kb * 1024 / GB * (a.report_days / 30.4375)
         * S3_STANDARD_GB_MONTH, f"{a.report_days:g} days (ReportRetentionDays)"),
        ("CloudWatch Logs storage (uncompressed, upper bound)", log_bytes / GB * (a.log_days / 30.4375)
         * CW_LOGS_STORAGE_GB_MONTH, f"{a.log_days:g} days (LogRetentionDays)"),
    ]

    # ---- Fixed monthly costs ------------------------------------------------
    polls = ESM_QUEUES * a.pollers * SECONDS_PER_MONTH / a.poll_wait_seconds
    reconcile_gb_s = RECONCILE_PER_MONTH * a.reconcile_seconds * MEMORY_MB["reconcile"] / 1024
    fixed = [
        (f"SQS: ESM polling of idle queues ({ESM_QUEUES} queues x {a.pollers} pollers, "
         f"{a.poll_wait_seconds:g} s long polls)", polls * SQS_PER_REQUEST, f"{polls / 1e6:.2f} M empty receives"),
        ("KMS: ConnectionsKey (+$1/month per rotation, rotation on)", KMS_KEY_MONTH, "$2 in year 2, $3 after"),
        ("Secrets Manager: LinkSigningSecret", SECRETS_SECRET_MONTH, ""),
        (f"CloudWatch: custom metrics (EMF), {a.custom_metrics}", a.custom_metrics * CW_CUSTOM_METRIC_MONTH,
         f"happy path {HAPPY_PATH_METRICS}, catalogue up to {CATALOGUE_METRICS}"),
        (f"CloudWatch: {ALARMS} alarms + {DASHBOARDS} dashboard", ALARMS * CW_ALARM_MONTH
         + DASHBOARDS * CW_DASHBOARD_MONTH, "(not re-read here)"),
        ("reconcile every 5 min (Lambda 128 MB + 16 Query + 1 receive)",
         reconcile_gb_s * LAMBDA_ARM_GB_SECOND + RECONCILE_PER_MONTH * (
             LAMBDA_PER_REQUEST + PENDING_SHARDS * 0.5 * DDB_PER_RRU + SQS_PER_REQUEST + XRAY_PER_TRACE),
         f"{RECONCILE_PER_MONTH:,.0f} runs"),
    ]
    counts = {"sqs": sqs, "reads": reads, "wru": wru, "attempt_wru": attempt_wru, "exec_wru": exec_wru,
              "log_bytes": log_bytes / T, "fanout_seconds": fanout_seconds,
              "outcome_sends": outcome_sends, "consumer": consumer, "xray_active": xray_active}
    return lines, storage, fixed, counts


def per_million(dollars_per_execution, targets):
    return dollars_per_execution / targets * 1e6


def report(a):
    T = a.targets
    lines, storage, fixed, c = model(a)
    out = []
    w = out.append
    w(f"Cost per million deliveries, us-east-1, arm64, prices read {READ}")
    w(f"Scenario: 1 execution -> {T} {a.channel} targets, all delivered on the first try; "
      f"deliver batches of {a.deliver_batch}")
    w(f"Durations (assumed): render {a.render_seconds:g} s, fanout {c['fanout_seconds']:g} s, "
      f"deliver {a.deliver_seconds:g} s per batch; cold starts {a.cold_start_rate:g}/invocation")
    w("")
    w(f"{'line item':<78} {'$ / M deliveries':>16}")
    w("-" * 95)
    main_total = extra_total = 0.0
    for section, item, dollars, note in lines:
        v = per_million(dollars, T)
        if section == "extra":
            continue
        main_total += v
        w(f"{section + ': ' + item:<78} {v:>16.3f}" + (f"   {note}" if a.notes and note else ""))
    w("-" * 95)
    w(f"{'total, the issue list (Lambda, SQS, DynamoDB, S3, KMS/SM, Logs, outcomes)':<78} {main_total:>16.3f}")
    w("")
    w("Billed as well, not in the issue's list:")
    for section, item, dollars, note in lines:
        if section != "extra":
            continue
        v = per_million(dollars, T)
        extra_total += v
        w(f"  {item:<76} {v:>16.3f}" + (f"   {note}" if a.notes and note else ""))
    storage_total = 0.0
    for item, dollars, note in storage:
        v = per_million(dollars, T)
        storage_total += v
        w(f"  storage held: {item:<62} {v:>16.3f}   {note}")
    w(f"{'total, all in (per-delivery costs + storage held)':<78} {main_total + extra_total + storage_total:>16.3f}")
    w("")
    fixed_total = sum(d for _, d, _ in fixed)
    w(f"{'Fixed monthly costs (whatever the volume)':<78} {'$ / month':>16}")
    for item, dollars, note in fixed:
        w(f"  {item:<76} {dollars:>16.2f}" + (f"   {note}" if note else ""))
    w(f"  {'total':<76} {fixed_total:>16.2f}")
    w(f"  = ${fixed_total / (a.deliveries_per_month / 1e6):.3f} per million deliveries at "
      f"{a.deliveries_per_month:,.0f} deliveries/month")
    w("")
    w(f"DynamoDB write units per delivery: {c['wru']:.2f}"
      + ("" if a.wru is None else " (--wru)"))
    for item, base, gsi, _ in WRU_PER_ATTEMPT:
        w(f"  {item:<64} {base + gsi:>5.2f}" + (f"  ({base} + {gsi} GSI)" if gsi else ""))
    for item, units, _ in WRU_PER_BATCH:
        w(f"  {item + f', {units} / batch':<64} {units / a.deliver_batch:>5.2f}")
    exec_units = sum(u for _, u, _ in WRU_PER_EXECUTION)
    w(f"  {f'execution: rendered, fanned out, claimed, recorded, {exec_units} / T':<64} {c['exec_wru'] / T:>5.2f}")
    w(f"  = ${c['wru'] * DDB_PER_WRU * 1e6:.3f} per million deliveries")
    w("")
    w("Counts per execution (from the code):")
    for k, v in c["sqs"].items():
        w(f"  SQS {k:<66} {v:>7.2f}")
    w(f"  SQS {'outcome events: SendMessageBatch of 10 + 1 execution event':<66} {c['outcome_sends']:>7.2f}")
    w(f"  SQS {'outcome events: consumer ReceiveMessage + DeleteMessageBatch':<66} {c['consumer']:>7.2f}")
    for k, v in c["reads"].items():
        w(f"  RRU {k:<66} {v:>7.2f}")
    w(f"  Log bytes per delivery (JSON as on Lambda, EMF, START/END/REPORT {PLATFORM_BYTES} B/invocation): "
      f"{c['log_bytes']:,.0f}")
    w("")
    w("Sensitivity:")
    worst_kms = T * a.signed_fraction * KMS_PER_REQUEST
    w(f"  every signed delivery misses the KMS data-key cache: +${per_million(worst_kms, T):.3f}/M")
    events = a.logs["per_execution_events"] + T * a.logs["per_delivery_events"] + 3 * (2 + T / a.deliver_batch)
    w(f"  CloudWatch bills 26 B per log event on top: +${per_million(26 * events / GB * CW_LOGS_PER_GB, T):.3f}/M")
    w(f"  TracingMode Active (even arrivals): +${per_million(c['xray_active'], T):.3f}/M")
    xr_low = (2 + T / a.deliver_batch) * XRAY_FIXED_RATE * XRAY_PER_TRACE
    w(f"  X-Ray at the 5% floor (bursty arrivals, high volume): ${per_million(xr_low, T):.3f}/M")
    return "\n".join(out), main_total, extra_total, storage_total


def self_test():
    failures = []

    def check(name, got, want, tol=1e-9):
        if abs(got - want) > tol:
            failures.append(f"{name}: got {got!r}, want {want!r}")

    # 1. A hand-computed line item: deliver Lambda at the defaults.
    # 512 MB = 0.5 GB; one batch of 10 in 0.35 s = 0.175 GB-s per 10
    # deliveries; per million: 100,000 batches x 0.175 GB-s = 17,500 GB-s
    # x $0.0000133334 = $0.2333345; + 100,000 requests x $0.20/M = $0.02;
    # no cold starts here. Total $0.2533345.
    a = parse([]); a.cold_start_rate = 0.0
    lines, _, _, c = model(a)
    deliver = [d for s, i, d, _ in lines if i.startswith("deliver (")][0]
    check("deliver Lambda $/M", per_million(deliver, a.targets), 0.2533345, 1e-9)
    # 2. The DynamoDB writes: 8 per attempt, 2 per full batch of 10 and 8
    # per execution (8.60 at T = 20 with 2 full
    # batches).
    a = parse(["--targets", "20"])
    check("WRU at T=20", model(a)[3]["wru"], 8.6)
    # 3. SQS chunks: a 256 KB payload bills 4 requests.
    check("64 KB chunks", sqs_requests(256 * 1024), 4)
    # 4. Text -> JSON: this text line and the JSON line logged by the same
    # code path in a JSON run (target/it/logs-tb5cb6ae186) have this size.
    text = (' INFO Lambda runtime invoke{requestId="7608bf14-aeed-4334-8e72-35ee93ab18b2" '
            'xrayTraceId="Root=1-7608bf14-aeed-4334-8e72-35ee93ab18b2"}:message{message_id='
            '24a240a5-164b-4ec5-a295-4b275b43745c receive_count=1 execution_id='
            '"exec-85d7a53f37594f268a1c093976a05aed"}: fan-out complete execution_id='
            'exec-85d7a53f37594f268a1c093976a05aed targets=2')
    logged = ('{"level":"INFO","message":"fan-out complete","execution_id":"exec-7a9f3035fabc4463a344c5ef663e2b1c",'
              '"targets":2,"span":{"execution_id":"exec-7a9f3035fabc4463a344c5ef663e2b1c","message_id":'
              '"c2896dcf-bac9-4a0e-b4f6-f21982bc3931","receive_count":1,"name":"message"},"spans":[{"requestId":'
              '"385f25bc-c1cf-42cd-98a5-619e17e20b18","xrayTraceId":"Root=1-385f25bc-c1cf-42cd-98a5-619e17e20b18",'
              '"name":"Lambda runtime invoke"},{"execution_id":"exec-7a9f3035fabc4463a344c5ef663e2b1c","message_id":'
              '"c2896dcf-bac9-4a0e-b4f6-f21982bc3931","receive_count":1,"name":"message"}]}')
    converted = text_to_json(text)
    check("text->JSON bytes", len(converted.encode()), len(logged.encode()))
    check("text->JSON keys", 0 if set(json.loads(converted)) == set(json.loads(logged)) else 1, 0)
    if failures:
        print("self-test FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("self-test passed: deliver Lambda $0.2533345/M by hand, 8.6 WRU at T=20, "
          "64 KB chunks, text->JSON log size")
    return 0


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--targets", type=int, default=10, help="targets per execution (T)")
    p.add_argument("--channel", choices=["webhook", "email"], default="webhook")
    p.add_argument("--deliver-batch", type=int, default=10, help="messages per deliver invocation (template: 10)")
    p.add_argument("--render-seconds", type=float, default=0.2, help="ASSUMED billed render time, small report")
    p.add_argument("--fanout-seconds", type=float, default=None,
                   help="ASSUMED billed fan-out time (default 0.05 + 0.005 x T: 0.1 s for 10)")
    p.add_argument("--deliver-seconds", type=float, default=0.35,
                   help="ASSUMED billed time of one deliver batch (receiver answering in 200 ms)")
    p.add_argument("--cold-start-rate", type=float, default=0.01, help="ASSUMED cold starts per invocation")
    p.add_argument("--init-seconds", type=float, default=0.05, help="ASSUMED billed init per cold start")
    p.add_argument("--wru", type=float, default=None,
                   help="write units per delivery (default: measured 12 per attempt + 3 per execution / T)")
    p.add_argument("--signed-fraction", type=float, default=1.0,
                   help="share of webhook targets with a signing connection (one more GetItem, KMS)")
    p.add_argument("--kms-hit-rate", type=float, default=1.0,
                   help="share of connection reads served by the 5-minute data-key cache")
    p.add_argument("--execution-message-kb", type=float, default=1.0, help="execution_completed.v1 size")
    p.add_argument("--outcome-consumer-batch", type=float, default=10,
                   help="ASSUMED outcome events per receive/delete of the reporting system")
    p.add_argument("--claim-check", type=int, default=0, help="1 if the rows come as an S3 claim check")
    p.add_argument("--chart", type=int, default=0, help="1 if the execution asks for a chart (PNG stored, inlined in email)")
    p.add_argument("--attached-files", type=int, default=1, help="email: files attached (GetObject each)")
    p.add_argument("--attachment-kb", type=float, default=40, help="email: attached bytes per email (base64)")
    p.add_argument("--egress-kb", type=float, default=2.5, help="ESTIMATED bytes out per webhook delivery")
    p.add_argument("--event-overhead", type=int, default=0, help="bytes billed per log event besides the message")
    p.add_argument("--tracing", choices=["PassThrough", "Active"], default="PassThrough",
                   help="the template's TracingMode")
    p.add_argument("--logs-from", default=None, help="measure log bytes from this run directory")
    p.add_argument("--deliveries-per-month", type=float, default=30e6,
                   help="volume, for X-Ray sampling and fixed costs per million (1M a day)")
    p.add_argument("--pollers", type=int, default=5, help="ESM pollers per idle queue")
    p.add_argument("--poll-wait-seconds", type=float, default=20, help="ESM long-poll wait")
    p.add_argument("--reconcile-seconds", type=float, default=0.3, help="ASSUMED billed reconcile run")
    p.add_argument("--custom-metrics", type=int, default=HAPPY_PATH_METRICS, help="custom metrics published")
    p.add_argument("--record-days", type=float, default=30, help="RecordRetentionDays")
    p.add_argument("--report-days", type=float, default=30, help="ReportRetentionDays")
    p.add_argument("--log-days", type=float, default=30, help="LogRetentionDays")
    p.add_argument("--attempt-stored-kb", type=float, default=1.5,
                   help="ASSUMED stored bytes per attempt: item (<1 KB) + 100 B overhead + 2 keys-only index entries")
    p.add_argument("--report-kb", type=float, default=60, help="ASSUMED stored reports/ bytes per execution")
    p.add_argument("--notes", action="store_true", help="print each line's note")
    p.add_argument("--measure-logs", metavar="RUN_DIR", help="only measure a run's log bytes and print them")
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--sources", action="store_true", help="print the price constants' sources")
    a = p.parse_args(argv)
    a.logs = measure_logs(a.logs_from) if a.logs_from else MEASURED_LOGS
    return a


def main(argv):
    a = parse(argv)
    if a.self_test:
        return self_test()
    if a.sources:
        src = open(__file__, encoding="utf-8").read()
        block = src.split("# Prices, us-east-1.")[1].split("GB = 2 ** 30")[0]
        print("# Prices, us-east-1." + block.rstrip())
        return 0
    if a.measure_logs:
        m = measure_logs(a.measure_logs)
        print(json.dumps({k: v for k, v in m.items()}, indent=2))
        return 0
    text, *_ = report(a)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
