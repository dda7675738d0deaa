//! Cursor pagination for every list that can grow. A cursor is opaque to clients: base64 (URL
//! safe) of the last item's sort key. Keyset pagination rather than offsets, so a page does not
//! shift when rows are added or removed meanwhile.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{AdminError, Result};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1-500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<u32> {
        checked_limit(self.limit)
    }
}

pub fn checked_limit(limit: Option<u32>) -> Result<u32> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(AdminError::BadRequest(format!(
            "limit: {n} is out of range (1-{MAX_LIMIT})"
        ))),
    }
}

pub fn encode(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

pub fn decode(cursor: &str) -> Result<String> {
    URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| AdminError::BadRequest("cursor: not a cursor from this API".into()))
}

/// A `(created_at, id)` sort key.
pub fn encode_time_id(at: i64, id: &str) -> String {
    encode(&format!("{at}:{id}"))
}

pub fn decode_time_id(cursor: Option<&str>) -> Result<Option<(i64, String)>> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let key = decode(cursor)?;
    key.split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_string())))
        .map(Some)
        .ok_or_else(|| AdminError::BadRequest("cursor: not a cursor from this API".into()))
}

/// Trims a result fetched with `limit + 1` rows to `limit`, returning the cursor of the next
/// page when there is one.
pub fn split_page<T>(
    mut items: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        let next = items.last().map(key);
        (items, next)
    } else {
        (items, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_400() {
        let c = encode_time_id(1_700_000_000_000, "t_abc");
        assert_eq!(
            decode_time_id(Some(&c)).unwrap(),
            Some((1_700_000_000_000, "t_abc".to_string()))
        );
        assert_eq!(decode_time_id(None).unwrap(), None);
        for bad in ["!!!", &encode("no-colon"), &encode("x:t_1")] {
            let err = decode_time_id(Some(bad)).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(checked_limit(None).unwrap(), DEFAULT_LIMIT);
        assert!(checked_limit(Some(0)).is_err());
        assert!(checked_limit(Some(MAX_LIMIT + 1)).is_err());
    }

    #[test]
    fn split_page_reports_more_only_when_there_is_more() {
        let (items, next) = split_page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((items, next), (vec![1, 2], Some("2".to_string())));
        let (items, next) = split_page(vec![1, 2], 2, |n| n.to_string());
        assert_eq!((items, next), (vec![1, 2], None));
    }
}
