//! Kill points for crash tests: named places where a test can make the
//! process die, as Lambda may at any line. Inert unless `CHAOS_KILL_POINTS`
//! is set, which `template.yaml` never does.
//!
//! * `CHAOS_KILL_POINTS` – comma-separated point names, or `*` for all;
//! * `CHAOS_KILL_RATE` – chance of dying at a listed point (default 1);
//! * `CHAOS_KILL_ONCE_DIR` – if set, each point kills at most once (a
//!   marker file per point is left there).

use std::sync::OnceLock;

struct Plan {
    points: Vec<String>,
    rate: f64,
    once_dir: Option<std::path::PathBuf>,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let points = std::env::var("CHAOS_KILL_POINTS").ok()?;
        let rate = std::env::var("CHAOS_KILL_RATE")
            .ok()
            .and_then(|r| r.parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .unwrap_or(1.0);
        Some(Plan {
            points: points.split(',').map(|p| p.trim().to_owned()).collect(),
            rate,
            once_dir: std::env::var_os("CHAOS_KILL_ONCE_DIR").map(Into::into),
        })
    })
    .as_ref()
}

/// Dies here if a crash test asked for it.
pub fn point(name: &str) {
    let Some(plan) = plan() else { return };
    if !plan.points.iter().any(|p| p == name || p == "*") {
        return;
    }
    let roll = uuid::Uuid::new_v4().as_u128() as f64 / u128::MAX as f64;
    if roll >= plan.rate {
        return;
    }
    if let Some(dir) = &plan.once_dir {
        let marker = dir.join(name);
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok();
        if !first {
            return;
        }
    }
    eprintln!("chaos: killed at {name}");
    std::process::abort();
}
