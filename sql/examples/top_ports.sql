-- Which ports carry the most traffic of a service in a week?
-- Parameters: $week (a Monday), $service ('broadband' or 'mobile'), $limit (rows).
-- Port is the lower of the two ports of a flow; protocols without ports have a null port.
with week_ports as (
    select protocol, port, bytes
    from port_usage
    where week = $week and service = $service
),
ranked as (
    select protocol, port, bytes,
           100 * bytes / sum(bytes) over () as share_pct
    from week_ports
)
select protocol, port, bytes, share_pct
from ranked
order by bytes desc, protocol, port
limit $limit
