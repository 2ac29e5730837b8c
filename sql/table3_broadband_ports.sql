-- Table 3: broadband usage by port (% of all bytes), the report's rows in its order.
with broadband_rows as (
    select * from port_share where service = 'broadband' and category <> 'Other'
),
final as (
    select week, position, category, share_pct from broadband_rows
)
select * from final order by week, position
