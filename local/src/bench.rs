//! Benchmarks (run with `make bench`; figures in BENCHMARKS.md):
//!
//! * `render`: renders a synthetic table to PDF and CSV in this process and
//!   reports wall time and peak RSS (`VmHWM`).
//! * `fanout`: fans one execution out to N targets against moto with the
//!   real adapters, counting every DynamoDB and SQS request by operation.

use crate::stack::LocalStack;
use anyhow::Result;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use futures::StreamExt;
use shared::contract::{Column, ColumnType, Table};
use shared::domain::execution::{ReportExecution, StoredFile};
use shared::domain::{DeliveryTarget, TargetConfig, Timestamp};
use shared::handlers::fanout::{ChannelQueues, Deps, handle};
use shared::store::dynamo::DynamoStore;
use shared::store::{ExecutionStore, TargetStore};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Peak resident set size of this process so far, in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A synthetic report: `rows` × 8 columns of every type, with Unicode names
/// and some long text.
pub fn synthetic_table(rows: usize) -> Table {
    let col = |name: &str, kind| Column::new(name, kind);
    Table {
        columns: vec![
            col("City", ColumnType::String),
            col("Product", ColumnType::String),
            col("Quantity", ColumnType::Integer),
            col("Unit price", ColumnType::Decimal),
            col("Total", ColumnType::Decimal),
            col("Ordered at", ColumnType::DateTime),
            col("Paid", ColumnType::Boolean),
            col("Notes", ColumnType::String),
        ],
        rows: (0..rows).map(synthetic_table_row).collect(),
    }
}

/// Row `i` of the synthetic report.
fn synthetic_table_row(i: usize) -> Vec<serde_json::Value> {
    const CITIES: [&str; 8] = [
        "Zürich",
        "Łódź",
        "東京",
        "Αθήνα",
        "Lisbon",
        "Москва",
        "São Paulo",
        "Reykjavík",
    ];
    vec![
        CITIES[i % CITIES.len()].into(),
        format!("Product {:05}", i % 977).into(),
        ((i % 50) as i64 + 1).into(),
        serde_json::json!(((i % 1000) as f64) / 10.0 + 0.99),
        serde_json::json!((((i % 50) + 1) as f64) * (((i % 1000) as f64) / 10.0 + 0.99)),
        "2026-11-25T18:42:00Z".into(),
        (!i.is_multiple_of(3)).into(),
        format!(
            "Delivered to warehouse {} after a short delay in customs, signed by the night shift",
            i % 17
        )
        .into(),
    ]
}

/// The synthetic report as the CSV claim check a reporting system would
/// upload, built a line at a time (never as a parsed table).
pub fn synthetic_csv(rows: usize) -> (Vec<u8>, Vec<Column>) {
    let columns = synthetic_table(0).columns;
    let mut w = ::csv::Writer::from_writer(Vec::with_capacity(rows * 160));
    let _ = w.write_record(columns.iter().map(|c| c.name.as_str()));
    for i in 0..rows {
        let row = synthetic_table_row(i);
        let _ = w.write_record(row.iter().map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    (w.into_inner().unwrap_or_default(), columns)
}

/// Runs the render benchmark and prints its figures; with `out`, writes
/// `bench.pdf` and `bench.csv` there. The rows come as a CSV claim check,
/// read the way render reads one: kept as bytes, parsed on each pass.
pub fn render(rows: usize, out: Option<&str>) -> Result<()> {
    let baseline = peak_rss_kib();
    let (csv_in, columns) = synthetic_csv(rows);
    let input_bytes = csv_in.len();
    let table = shared::contract::CsvRows::new(csv_in, columns).map_err(anyhow::Error::msg)?;
    let checked = std::time::Instant::now();
    let summary = shared::contract::summarize(&table)?;
    let check_ms = checked.elapsed().as_millis();
    anyhow::ensure!(summary.rows == rows, "{} rows read back", summary.rows);
    let after_data = peak_rss_kib();
    let started = Instant::now();
    let fonts = shared::render::fonts::fonts();
    let _ = fonts.width("warm-up", false, 10.0);
    let font_ms = started.elapsed().as_millis();
    let after_fonts = peak_rss_kib();
    let tz = shared::render::time_zone("Europe/Zurich").unwrap_or_else(jiff_utc);
    let params = BTreeMap::from([("region".to_owned(), "EMEA".to_owned())]);
    let meta = shared::render::ReportMeta {
        report_name: "Benchmark report",
        execution_id: "bench",
        generated_at: Timestamp::now(),
        time_zone: &tz,
        time_zone_name: "Europe/Zurich",
        parameters: &params,
        chart: None,
    };
    // As render does: each file is stored (here: measured, written out)
    // and dropped before the next one renders.
    let t = Instant::now();
    let pdf = shared::render::render_pdf(&meta, &table, &summary).map_err(anyhow::Error::msg)?;
    let pdf_ms = t.elapsed().as_millis();
    let after_pdf = peak_rss_kib();
    let (pdf_kib, font_programs) = (
        pdf.len() / 1024,
        pdf.windows(b"/FontFile2".len())
            .filter(|w| w == b"/FontFile2")
            .count(),
    );
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(format!("{dir}/bench.pdf"), &pdf)?;
    }
    drop(pdf);
    let t = Instant::now();
    let csv = shared::render::csv::render_csv(&table);
    let csv_ms = t.elapsed().as_millis();
    if let Some(dir) = out {
        std::fs::write(format!("{dir}/bench.csv"), &csv)?;
    }
    let csv_kib = csv.len() / 1024;
    drop(csv);
    println!(
        "render: {rows} rows x {} columns, from a {} KiB CSV claim check",
        shared::contract::Rows::columns(&table).len(),
        input_bytes / 1024
    );
    println!("  check + totals      {check_ms} ms");
    println!(
        "  pages               {}",
        shared::render::page_count(rows, true)
    );
    println!("  font parse          {font_ms} ms");
    println!("  PDF                 {pdf_ms} ms, {pdf_kib} KiB, {font_programs} font programs");
    println!("  CSV                 {csv_ms} ms, {csv_kib} KiB");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("  RSS at start        {:.1} MiB", mib(baseline));
    println!("  RSS with input held {:.1} MiB", mib(after_data));
    println!("  RSS with fonts      {:.1} MiB", mib(after_fonts));
    println!("  peak RSS, PDF done  {:.1} MiB", mib(after_pdf));
    println!("  peak RSS            {:.1} MiB", mib(peak_rss_kib()));
    if let Some(dir) = out {
        println!("  written to          {dir}/bench.pdf, {dir}/bench.csv");
    }
    Ok(())
}

fn jiff_utc() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::UTC
}

/// Counts SDK requests by `service.operation`, retries included.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>()
            && let Ok(mut counts) = self.0.lock()
        {
            *counts
                .entry(format!("{}.{}", m.service(), m.name()))
                .or_default() += 1;
        }
        Ok(())
    }
}

/// Runs the fan-out benchmark against moto and prints its figures.
pub async fn fanout(targets: usize) -> Result<()> {
    let work = crate::stack::project_root().join(".local/bench");
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let s = LocalStack::up(&prefix, &work).await?;
    let report = "rpt-bench";
    let t = Instant::now();
    seed_webhook_targets(&s.store, report, targets, 0).await?;
    println!(
        "fanout: seeded {targets} targets in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    record_rendered(&s.store, "exec-bench", report).await?;

    let counter = CallCounter::default();
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&s.sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&s.sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let deps = fanout_deps(&s, DynamoStore::new(ddb, s.store_tables()), sqs)?;
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(serde_json::json!({
        "Records": [{"messageId": "bench", "body": r#"{"type":"fanout.v1","execution_id":"exec-bench"}"#}]
    }))?;
    let t = Instant::now();
    let response = handle(&deps, event, None).await;
    let wall = t.elapsed();
    anyhow::ensure!(response.batch_item_failures.is_empty(), "fan-out failed");
    println!(
        "fanout: {targets} targets in {:.1} s against moto",
        wall.as_secs_f64()
    );
    let counts = counter.snapshot();
    let total: u64 = counts.values().sum();
    for (op, n) in &counts {
        println!("  {op:<40} {n}");
    }
    println!("  {:<40} {total}", "total requests");
    println!(
        "  minimum: {} Query pages (500 targets each), {targets} conditional PutItem, {} SendMessageBatch",
        targets.div_ceil(500).max(1),
        targets.div_ceil(10)
    );
    s.down().await;
    Ok(())
}

/// Stores `active` active and `inactive` inactive webhook targets for a
/// report (ids `<report>-t00000`, …), 16 writes in flight.
pub async fn seed_webhook_targets(
    store: &DynamoStore,
    report: &str,
    active: usize,
    inactive: usize,
) -> Result<()> {
    let targets = webhook_target_records(report, active, inactive, "https://hooks.example.com")?;
    futures::stream::iter(&targets)
        .map(|t| store.put_target(t))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

/// Records an execution as rendered (with a placeholder file), so fan-out
/// can run without render.
pub async fn record_rendered(store: &DynamoStore, execution_id: &str, report: &str) -> Result<()> {
    store
        .put_rendered(&rendered_execution(execution_id, report))
        .await?;
    Ok(())
}

/// A rendered execution record (files not stored).
pub fn rendered_execution(execution_id: &str, report: &str) -> ReportExecution {
    let now = Timestamp::now();
    ReportExecution {
        id: execution_id.into(),
        report_id: report.into(),
        report_name: "Fan-out".into(),
        generated_at: now,
        time_zone: "UTC".into(),
        row_count: 0,
        pdf: StoredFile {
            key: format!("reports/{report}/{execution_id}/report.pdf"),
            content_type: "application/pdf".into(),
            size: 1,
            sha256: "00".into(),
        },
        csv: None,
        preview: None,
        chart: None,
        rendered_at: now,
        fanned_out_at: None,
        target_count: None,
        fanout_note: None,
        created_at: now,
        updated_at: now,
        input_sha256: None,
        test_target_id: None,
        reopened: 0,
        outcome_revision: None,
    }
}

/// `active` then `inactive` webhook targets of `report`, posting to
/// `{base}/{i}`, unsigned.
pub fn webhook_target_records(
    report: &str,
    active: usize,
    inactive: usize,
    base: &str,
) -> Result<Vec<DeliveryTarget>> {
    let now = Timestamp::now();
    (0..active + inactive)
        .map(|i| {
            Ok(DeliveryTarget {
                id: format!("{report}-t{i:05}"),
                report_id: report.into(),
                service_connection_id: None,
                config: TargetConfig::from_json(
                    "webhook",
                    serde_json::json!({"url": format!("{base}/{i}")}),
                    // A local receiver (http on 127.0.0.1), as the local stack allows.
                    base.starts_with("http://127.0.0.1"),
                )?,
                formats: Vec::new(),
                preview_rows: None,
                active: i < active,
                disable_requested: None,
                consecutive_failures: 0,
                version: 0,
                created_at: now,
                updated_at: now,
            })
        })
        .collect()
}

/// Fan-out deps over a local stack's tables and queues, with the given
/// store and SQS client (so callers can count their requests).
pub fn fanout_deps(s: &LocalStack, store: DynamoStore, sqs: aws_sdk_sqs::Client) -> Result<Deps> {
    let url = |q: &str| s.stack.queue_url(q).map(str::to_owned);
    Ok(Deps {
        metrics: shared::metrics::Metrics::none(),
        targets: Box::new(store.clone()),
        attempts: Box::new(store.clone()),
        executions: Box::new(store),
        queue: Box::new(shared::queue::sqs::SqsQueue::new(sqs)),
        channel_queues: ChannelQueues {
            email: url("EmailDeliveryQueue")?,
            slack: url("SlackDeliveryQueue")?,
            webhook: url("WebhookDeliveryQueue")?,
        },
        fanout_queue_url: url("FanoutQueue")?,
        dead_letter_url: url("FanoutDeadLetterQueue")?,
        outcomes_url: None,
        page_size: 500,
        concurrency: 16,
        reserve: Duration::from_secs(20),
    })
}

/// Cold starts of every function: each is started `runs` times by the local
/// runner (as Lambda starts a new execution environment) against a fresh
/// stack in moto, measuring process spawn → first Runtime API request (all
/// clients built) and peak RSS then. Prints median and p95.
pub async fn cold_starts(runs: usize) -> Result<()> {
    let work = crate::stack::project_root().join(".local/bench-cold");
    let prefix = format!("cold-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut s = LocalStack::up(&prefix, &work).await?;
    s.start_runner(&[]).await?;
    let hosts = s
        .runner
        .as_ref()
        .map(|r| r.hosts.clone())
        .unwrap_or_default();
    println!(
        "cold start: {runs} starts per function, binaries from {}",
        crate::stack::binaries_dir()?.display()
    );
    println!(
        "{:<10} {:>11} {:>11} {:>11} {:>14}",
        "function", "median ms", "p95 ms", "max ms", "peak RSS MiB"
    );
    for host in hosts {
        let count = || host.cold_starts.lock().map(|c| c.len()).unwrap_or(0);
        // The first start (with every other function starting too) is not counted.
        wait_for(|| count() >= 1, Duration::from_secs(20)).await?;
        let mut samples = Vec::new();
        for _ in 0..runs {
            let before = count();
            host.kill_slot(0).await;
            wait_for(|| count() > before, Duration::from_secs(20)).await?;
            if let Some(last) = host.cold_starts.lock().ok().and_then(|c| c.last().copied()) {
                samples.push(last);
            }
        }
        let mut ms: Vec<f64> = samples
            .iter()
            .map(|c| c.init.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let mut rss: Vec<u64> = samples.iter().filter_map(|c| c.peak_rss_kib).collect();
        rss.sort_unstable();
        let at = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        println!(
            "{:<10} {:>11.1} {:>11.1} {:>11.1} {:>14.1}",
            host.name(),
            at(&ms, 0.5),
            at(&ms, 0.95),
            ms.last().copied().unwrap_or_default(),
            rss.get(rss.len() / 2).copied().unwrap_or_default() as f64 / 1024.0
        );
    }
    s.down().await;
    Ok(())
}

async fn wait_for(ready: impl Fn() -> bool, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    while !ready() {
        if Instant::now() > until {
            anyhow::bail!("timed out waiting for a cold start");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Deliver throughput: per round, one execution to a single webhook target
/// and one to ten, against a receiver that answers every request after
/// 200 ms, through the local runner (real deliver processes, real SQS
/// batches from moto). Prints the deliver invocations' durations by batch
/// size, and the deliver processes' CPU time per delivery.
pub async fn deliver(rounds: usize) -> Result<()> {
    use crate::sinks::Fault;
    let work = crate::stack::project_root().join(".local/bench-deliver");
    let prefix = format!("dlv-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut s = LocalStack::up(&prefix, &work).await?;
    s.start_runner(&[]).await?;
    let targets = |report: &str, n: usize| {
        let list: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "id": format!("{report}-{i}"),
                    "report_id": report,
                    "target_type": "webhook",
                    "active": true,
                    "service_connection_id": "conn-bench-signing",
                    "config": {"url": format!("{{{{webhook_sink_url}}}}/hooks/{report}/{i}")},
                })
            })
            .collect();
        serde_json::json!({
            "connections": [{"id": "conn-bench-signing", "kind": "webhook_signing",
                "secrets": ["whsec_dGVzdC1zaWduaW5nLXNlY3JldC0zMi1ieXRlcy1sb25nIQ=="]}],
            "targets": list,
        })
        .to_string()
    };
    s.seed(&targets("rpt-bench-1", 1)).await?;
    s.seed(&targets("rpt-bench-10", 10)).await?;
    let sample: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        crate::stack::project_root().join("events/execution-completed.json"),
    )?)?;
    let host = s.function("deliver")?;
    let run = |report: &'static str, n: usize| {
        let mut msg = sample.clone();
        let id = format!("exec-{}", uuid::Uuid::new_v4().simple());
        msg["execution_id"] = id.clone().into();
        msg["report_id"] = report.into();
        (id, msg.to_string(), n)
    };
    let moto = moto_pid();
    let cpu_before = host.cpu_ticks().await;
    let moto_before = moto.and_then(crate::runner::cpu_ticks_of).unwrap_or(0);
    let mut deliveries = 0;
    for _ in 0..rounds {
        for (id, body, n) in [run("rpt-bench-1", 1), run("rpt-bench-10", 10)] {
            for _ in 0..n {
                s.webhook
                    .push_fault(Fault::Delay(Duration::from_millis(200)));
            }
            s.send("ExecutionsQueue", &body).await?;
            let settled = s.wait_settled(&id, n, Duration::from_secs(60)).await?;
            anyhow::ensure!(
                settled
                    .iter()
                    .all(|a| a.status == shared::domain::AttemptStatus::Delivered),
                "every delivery succeeds"
            );
            deliveries += n;
        }
    }
    // The last invocation answers after its attempts settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = host.cpu_ticks().await.saturating_sub(cpu_before);
    let moto_cpu = moto
        .and_then(crate::runner::cpu_ticks_of)
        .map(|t| t.saturating_sub(moto_before));
    let timings = host.timings.lock().map(|t| t.clone()).unwrap_or_default();
    s.down().await;
    println!(
        "deliver: {rounds} rounds of 1 + 10 signed webhooks, receiver answers after 200 ms, binaries from {}",
        crate::stack::binaries_dir()?.display()
    );
    let mut sizes: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (records, d) in timings {
        sizes
            .entry(records)
            .or_default()
            .push(d.as_secs_f64() * 1000.0);
    }
    print_batches(sizes);
    println!(
        "  deliver CPU: {:.1} ms per delivery ({} ms over {deliveries} deliveries, user + system)",
        cpu as f64 * 10.0 / deliveries as f64,
        cpu * 10
    );
    if let Some(m) = moto_cpu {
        println!(
            "  moto server CPU: {:.1} ms per delivery (one Python process serves every call)",
            m as f64 * 10.0 / deliveries as f64
        );
    }
    Ok(())
}

/// Prints invocation wall times (ms) by batch size: count, median, p95 and
/// max, and the batch of 10 against the batch of 1.
pub fn print_batches(by_size: BTreeMap<usize, Vec<f64>>) {
    println!(
        "{:>6} {:>12} {:>10} {:>10} {:>10}",
        "batch", "invocations", "median ms", "p95 ms", "max ms"
    );
    let mut medians = BTreeMap::new();
    for (size, mut ms) in by_size {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        medians.insert(size, at(0.5));
        println!(
            "{size:>6} {:>12} {:>10.1} {:>10.1} {:>10.1}",
            ms.len(),
            at(0.5),
            at(0.95),
            ms.last().copied().unwrap_or_default()
        );
    }
    if let (Some(one), Some(ten)) = (medians.get(&1), medians.get(&10)) {
        println!("  batch of 10 / batch of 1 (medians): {:.2}x", ten / one);
    }
}

/// The moto server `scripts/moto.sh` started, if its pid file is there.
fn moto_pid() -> Option<u32> {
    std::fs::read_to_string(crate::stack::project_root().join(".local/moto/pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
