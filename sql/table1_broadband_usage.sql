-- Table 1: broadband users' daily usage (MB/day), one row per published week and direction.
with broadband as (
    select * from usage_summary where service = 'broadband'
),
final as (
    select week, upper(direction) as direction, users, mean_mb, median_mb, mode_mb,
           100 * top1_share as top1_pct, 100 * top10_share as top10_pct
    from broadband
)
select * from final order by week, direction
