//! In-process counters that `/metrics` renders. Each part (SMTP listeners, delivery) keeps its
//! own counters and implements [`MetricSource`]; the admin API is handed the sources at
//! start-up, so it depends on none of those crates.

/// Something that can write Prometheus text-format samples.
pub trait MetricSource: Send + Sync {
    /// Appends `# HELP`, `# TYPE` and sample lines to `out`.
    fn render(&self, out: &mut String);
}

/// Writes one metric family with a single unlabelled sample.
pub fn render_single(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}
