-- Attributed and unattributed share of the week's flow bytes per service (data-quality section).
-- Parameter: $week.
with week_traffic as (
    select service,
           sum(in_bytes + out_bytes) as attributed_bytes,
           sum(unattributed_bytes) as unattributed_bytes
    from traffic_hour
    where week = $week
    group by service
)
select service,
       attributed_bytes / 1e9 as attributed_gb,
       unattributed_bytes / 1e9 as unattributed_gb,
       100 * unattributed_bytes / (attributed_bytes + unattributed_bytes) as unattributed_pct
from week_traffic
order by service
