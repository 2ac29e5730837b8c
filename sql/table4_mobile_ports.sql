-- Table 4: mobile usage by port (% of all bytes), the report's rows in its order.
with mobile_rows as (
    select * from port_share where service = 'mobile' and category <> 'Other'
),
final as (
    select week, position, category, share_pct from mobile_rows
)
select * from final order by week, position
