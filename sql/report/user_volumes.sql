-- Per user of one week: average daily IN and OUT bytes (Figures 3-6). Parameters: $week, $service_group.
with users_of_week as (
    select user_key, customer_type, in_bytes_per_day, out_bytes_per_day
    from user_week_usage
    where week = $week and service_group = $service_group
)
select * from users_of_week where customer_type = 'personal' order by user_key
