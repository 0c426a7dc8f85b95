//! The queue's shape (`Store::queue_shape`) in SQL: the part of the count query that does
//! not depend on the database, so that every SQL store buckets ages alike.

/// The SQL expression that numbers the age bucket of `age` (an expression in milliseconds):
/// `CASE WHEN age <= b0 THEN 0 WHEN age <= b1 THEN 1 … ELSE n END`, the first bound not
/// below the age, with the `n` bounds bound as parameters written by `parameter(0..n)`
/// (`?3`, `$3`: each database has its own placeholders). A CASE, not a join with a table of
/// bounds, so that the count stays one pass over the pending recipients.
/// Without bounds every age is in bucket 0 (SQL has no CASE without a WHEN).
pub fn age_bucket(age: &str, bounds: usize, parameter: impl Fn(usize) -> String) -> String {
    if bounds == 0 {
        return "0".into();
    }
    let arms: String = (0..bounds)
        .map(|i| format!(" WHEN {age} <= {} THEN {i}", parameter(i)))
        .collect();
    format!("CASE{arms} ELSE {bounds} END")
}

/// The bounds in seconds as the milliseconds the stores' timestamps count in.
pub fn bounds_in_ms(bounds: &[u64]) -> Vec<i64> {
    bounds
        .iter()
        .map(|seconds| i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_the_first_bound_not_below_the_age() {
        let sql = age_bucket("(?1 - submitted_at)", 2, |i| format!("?{}", i + 2));
        assert_eq!(
            sql,
            "CASE WHEN (?1 - submitted_at) <= ?2 THEN 0 WHEN (?1 - submitted_at) <= ?3 THEN 1 ELSE 2 END"
        );
        assert_eq!(age_bucket("age", 0, |_| unreachable!()), "0");
    }

    #[test]
    fn bounds_count_in_milliseconds() {
        assert_eq!(bounds_in_ms(&[300, u64::MAX]), [300_000, i64::MAX]);
    }
}
