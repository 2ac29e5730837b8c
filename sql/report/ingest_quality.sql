-- Data-quality section: records read and set aside per feed, and where sampling rates came from.
-- Parameter: $week.
with feeds as (
    select feed_type, feed, service, records, quarantined_records, quarantined_pct, sampling
    from ingest_quality
    where week = $week
)
select * from feeds order by feed_type, feed
