//! Unix time, and its RFC 3339 form, as the lease log writes it. Other modules (the
//! accounting log, the CLI) use both through `store::lease::{now, rfc3339}`.

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A Unix time from `YYYY-MM-DDTHH:MM:SSZ` (UTC, as [`rfc3339`] writes it; `T` may be a
/// space and `Z` may be left out) or from plain seconds since the epoch.
pub fn parse_time(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Some(secs);
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = t.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut h = time.splitn(3, ':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // days-from-civil (proleptic Gregorian), the inverse of `rfc3339`
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix = days.checked_mul(86_400)? + (hh * 3600 + mm * 60 + ss) as i64;
    u64::try_from(unix)
        .ok()
        .filter(|&u| rfc3339(u) == format!("{date}T{time}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_time_inverts_rfc3339_and_takes_seconds() {
        for t in [0, 951_782_400, 1_795_305_600, 1_795_305_601, 4_102_444_799] {
            assert_eq!(parse_time(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(parse_time("1795305600"), Some(1_795_305_600));
        assert_eq!(parse_time("2026-11-22 00:00:00"), Some(1_795_305_600));
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-22",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
    }
}
