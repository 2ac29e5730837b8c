-- The run that published each table of one week, and its rows (data-quality section). Parameter: $week.
-- `_publications` is built with the catalog from the manifest: one row per table and week (or month).
select table_name, run, rows
from _publications
where partition_column = 'week' and partition_key = cast($week as varchar)
order by table_name
