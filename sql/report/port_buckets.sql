-- Figures 7 and 8: bytes per hour of one week and service in the report's four port buckets.
-- Parameters: $week, $service.
with week_buckets as (
    select day, hour, bucket, bytes
    from port_bucket_hour
    where week = $week and service = $service
)
select * from week_buckets order by day, hour, bucket
