-- How has broadband download per user moved from week to week?
-- Mean, median and mode of MB/day (personal users) per published week, with the change of the
-- median against the week before.
with broadband_download as (
    select week, users, mean_mb, median_mb, mode_mb
    from usage_summary
    where service = 'broadband' and direction = 'out'
),
with_previous as (
    select *, lag(median_mb) over (order by week) as previous_median_mb
    from broadband_download
)
select week, users, mean_mb, median_mb, mode_mb,
       median_mb / previous_median_mb - 1 as median_change
from with_previous
order by week
