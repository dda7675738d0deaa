//! `mailmux postmaster list|show`: the operator's postmaster mailbox (mail to the bare
//! `<postmaster>` while `inbound.postmaster` is unset), as `GET /api/postmaster` shows it.

use mailmux_admin::pagination::PageQuery;
use mailmux_admin::postmaster;

use super::{Context, with_store};
use crate::output::Shown;

const COLUMNS: &[&str] = &["id", "mail_from", "size", "received_at"];

pub async fn list(context: &Context, limit: u32, cursor: Option<String>) -> anyhow::Result<Shown> {
    let page = PageQuery {
        limit: Some(limit),
        cursor,
    };
    let list = with_store(context, async |store| postmaster::list(store, &page).await).await?;
    Shown::list(list, "messages", COLUMNS)
}

/// One message, parsed (headers, text, HTML, attachment metadata).
pub async fn show(context: &Context, id: &str) -> anyhow::Result<Shown> {
    let message = with_store(context, async |store| postmaster::show(store, id).await).await?;
    Shown::object(message)
}
