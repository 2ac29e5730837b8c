-- Figure 1: average traffic per service and month, bit/s, every published month.
with months as (
    select month, service, in_bps, out_bps, coverage from monthly_traffic
)
select * from months order by service, month
