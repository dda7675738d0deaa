//! `mailmux message …` and `mailmux audit list`: the queue as a tenant sees it, and the audit log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailmux_admin::messages::MessageQuery;
use mailmux_admin::pagination::PageQuery;
use mailmux_admin::{audit, lookup, messages};

use super::{Context, with_store};
use crate::output::Shown;

const MESSAGE_COLUMNS: &[&str] = &[
    "id",
    "status",
    "mail_from",
    "size",
    "attempts",
    "created_at",
    "next_attempt_at",
];

const AUDIT_COLUMNS: &[&str] = &["id", "at", "actor", "tenant_id", "action", "target"];

/// The options of `message list`.
#[derive(clap::Args)]
pub struct MessageListArgs {
    #[arg(long)]
    pub tenant: String,
    /// queued, deferred, delivered, bounced or partial.
    #[arg(long)]
    pub status: Option<String>,
    /// Only messages accepted since then: Unix milliseconds, or a time ago such as 30m, 2h,
    /// 7d (s, m, h, d).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<i64>,
    /// Messages per page, 1-500.
    #[arg(long, default_value_t = mailmux_admin::pagination::DEFAULT_LIMIT)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `--since`: Unix milliseconds as the API takes them, or a duration back from now.
fn parse_since(value: &str) -> Result<i64, String> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    let ago = number
        .parse::<u64>()
        .ok()
        .filter(|_| seconds > 0)
        .and_then(|n| n.checked_mul(seconds))
        .ok_or_else(|| {
            format!("{value:?}: expected Unix milliseconds or a time ago such as 30m, 2h, 7d")
        })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(Duration::from_secs(ago));
    Ok(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

pub async fn list(context: &Context, args: MessageListArgs) -> anyhow::Result<Shown> {
    let query = MessageQuery {
        status: args.status,
        since: args.since,
        limit: Some(args.limit),
        cursor: args.cursor,
    };
    let list = with_store(context, async |store| {
        messages::list(store, &args.tenant, &query).await
    })
    .await?;
    Shown::list(list, "messages", MESSAGE_COLUMNS)
}

pub async fn show(context: &Context, tenant_id: &str, id: &str) -> anyhow::Result<Shown> {
    let shown = with_store(context, async |store| {
        messages::show(store, tenant_id, id).await
    })
    .await?;
    Shown::object(shown)
}

pub async fn audit_list(
    context: &Context,
    tenant_id: Option<&str>,
    limit: u32,
    cursor: Option<String>,
) -> anyhow::Result<Shown> {
    let page = PageQuery {
        limit: Some(limit),
        cursor,
    };
    let entries = with_store(context, async |store| {
        // As the REST route: an unknown tenant is 404, not an empty log.
        if let Some(id) = tenant_id {
            lookup::tenant(store, id).await?;
        }
        audit::list(store, tenant_id, &page).await
    })
    .await?;
    Shown::list(entries, "entries", AUDIT_COLUMNS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_milliseconds_or_a_time_ago() {
        assert_eq!(parse_since("1700000000000"), Ok(1_700_000_000_000));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let two_hours = parse_since("2h").unwrap();
        assert!((now - two_hours - 7_200_000).abs() < 5_000, "{two_hours}");
        for bad in ["2w", "h", "", "-3m", "yesterday"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
