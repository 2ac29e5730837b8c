-- The run that published each table of one week (data-quality section). Parameter: $week.
with runs as (
    select 'user_day_usage' as table_name, any_value(run) as run, count(*) as rows from user_day_usage where week = $week
    union all select 'user_week_usage', any_value(run), count(*) from user_week_usage where week = $week
    union all select 'usage_summary', any_value(run), count(*) from usage_summary where week = $week
    union all select 'port_usage', any_value(run), count(*) from port_usage where week = $week
    union all select 'port_share', any_value(run), count(*) from port_share where week = $week
    union all select 'traffic_hour', any_value(run), count(*) from traffic_hour where week = $week
    union all select 'port_bucket_hour', any_value(run), count(*) from port_bucket_hour where week = $week
    union all select 'ingest_quality', any_value(run), count(*) from ingest_quality where week = $week
)
select * from runs order by table_name
