-- Hourly average weekday (Mon-Fri) traffic per service, bytes per hour (Figures 2, 9, 10).
with weekdays as (
    select * from traffic_hour where isodow(day) <= 5
),
final as (
    select week, service, hour,
           avg(in_bytes) as in_bytes, avg(out_bytes) as out_bytes
    from weekdays
    group by week, service, hour
)
select * from final order by week, service, hour
