-- How many users download more than a threshold per day, and what share of all download is theirs?
-- Parameters: $week (a Monday), $threshold_gb (GB/day).
with personal as (
    select service_group, out_bytes_per_day
    from user_week_usage
    where week = $week and customer_type = 'personal'
),
per_group as (
    select service_group,
           count(*) as users,
           count(*) filter (where out_bytes_per_day > $threshold_gb * 1e9) as heavy_users,
           sum(out_bytes_per_day) filter (where out_bytes_per_day > $threshold_gb * 1e9) as heavy_bytes,
           sum(out_bytes_per_day) as all_bytes
    from personal
    group by service_group
)
select service_group, users, heavy_users,
       100 * heavy_users / users as heavy_users_pct,
       100 * coalesce(heavy_bytes, 0) / all_bytes as heavy_download_pct
from per_group
order by service_group
