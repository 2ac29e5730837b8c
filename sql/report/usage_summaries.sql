-- Five-year factors: mean, median and mode per service and direction of every published week; users
-- (Figures 5 and 6 say how many of a week's users they show).
with summaries as (
    select week, service, direction, users, mean_mb, median_mb, mode_mb from usage_summary
)
select * from summaries order by week, service, direction
