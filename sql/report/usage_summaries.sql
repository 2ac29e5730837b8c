-- Five-year factors: mean, median and mode per service and direction of every published week.
with summaries as (
    select week, service, direction, mean_mb, median_mb, mode_mb from usage_summary
)
select * from summaries order by week, service, direction
