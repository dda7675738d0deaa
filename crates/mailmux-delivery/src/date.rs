//! RFC 5322 dates (`Tue, 1 Jul 2025 10:52:37 +0000`) for the DSN's Date and Arrival-Date,
//! from Unix milliseconds, in UTC. A dozen lines do not justify a date crate.

/// Formats `ms` (Unix milliseconds) as an RFC 5322 date-time in UTC.
pub(crate) fn rfc5322(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day} {month} {year} {:02}:{:02}:{:02} +0000",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let table = [
            (0, "Thu, 1 Jan 1970 00:00:00 +0000"),
            (951_782_400_000, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_700_000_000_123, "Tue, 14 Nov 2023 22:13:20 +0000"),
            (1_735_689_599_000, "Tue, 31 Dec 2024 23:59:59 +0000"),
            (4_102_444_800_000, "Fri, 1 Jan 2100 00:00:00 +0000"),
        ];
        for (ms, want) in table {
            assert_eq!(rfc5322(ms), want, "{ms}");
        }
    }
}
