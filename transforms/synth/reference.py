"""Reference figures of the IIJ Broadband Traffic Report (vol. 64), copied from shared/reference.

The generator calibrates to these; tests compare against them. Values are MB/day and % of bytes.
"""

from __future__ import annotations

import io

import polars as pl

TABLE1_CSV = """\
year,in_mean_mb,in_median_mb,in_mode_mb,out_mean_mb,out_median_mb,out_mode_mb
2007,436,5,5,718,59,56
2008,490,6,6,807,75,79
2009,561,6,6,973,91,100
2010,442,7,7,878,111,126
2011,398,9,9,931,144,200
2012,364,11,13,945,176,251
2013,320,13,16,928,208,355
2014,348,21,28,1124,311,501
2015,351,32,45,1399,443,708
2016,361,48,63,1808,726,1000
2017,391,63,79,2285,900,1259
2018,428,66,79,2664,1083,1585
2019,479,75,89,2986,1187,1995
2020,609,122,158,3810,1638,3162
2021,714,143,200,4432,2004,3981
2022,727,142,178,4610,2010,3981
2023,804,166,224,5456,2369,5012
2024,834,178,224,5743,2372,5620
"""

TABLE2_CSV = """\
year,in_mean_mb,in_median_mb,in_mode_mb,out_mean_mb,out_median_mb,out_mode_mb
2015,6.2,3.2,4.5,49.2,23.5,44.7
2016,7.6,4.1,7.1,66.5,32.7,63.1
2017,9.3,4.9,7.9,79.9,41.2,79.4
2018,10.5,5.4,8.9,83.8,44.3,79.4
2019,11.2,5.9,8.9,84.9,46.4,79.4
2020,10.4,4.5,7.1,79.4,35.1,63.1
2021,9.9,4.7,7.9,85.9,37.9,70.8
2022,12.8,6.0,10.0,113.7,49.2,89.1
2023,14.1,6.8,11.2,129.2,56.0,100.0
2024,16.3,8.2,14.1,150.4,66.7,112.2
"""

TABLE3_CSV = """\
category,2020,2021,2022,2023,2024
TCP,77.2,71.9,71.6,70.5,67.5
TCP <1024,70.5,65.8,65.4,64.8,61.1
TCP 443 (https),52.4,53.5,55.7,56.9,53.8
TCP 80 (http),17.2,11.6,8.9,7.2,6.5
TCP 183,0.0,0.1,0.2,0.2,0.2
TCP 993 (imaps),0.2,0.1,0.1,0.1,0.1
TCP 22 (ssh),0.2,0.2,0.1,0.1,0.1
TCP >=1024,6.7,6.1,6.2,5.7,6.4
TCP 31000,0.4,0.6,0.9,1.1,1.2
TCP 1935 (rtmp),0.4,0.2,0.2,0.2,0.3
TCP 8080,0.4,0.4,0.3,0.4,0.3
UDP,19.4,24.5,24.3,25.4,28.2
UDP 443 (https/quic),10.5,15.9,16.3,18.2,21.0
UDP 4500 (nat-t),0.6,0.8,0.8,1.0,0.9
UDP 8801,1.1,0.9,0.6,0.4,0.4
ESP,3.2,3.3,3.8,3.8,4.0
GRE,0.1,0.2,0.2,0.1,0.2
IP-ENCAP,0.1,0.1,0.1,0.1,0.1
ICMP,0.0,0.0,0.0,0.0,0.0
"""

TABLE4_CSV = """\
category,2020,2021,2022,2023,2024
TCP,75.5,70.3,71.6,71.0,71.0
TCP 443 (https),50.7,44.4,42.3,42.1,42.2
TCP 80 (http),7.4,5.0,4.1,3.5,1.8
TCP 993 (imaps),0.2,0.2,0.1,0.1,0.1
TCP 1935 (rtmp),0.1,0.1,0.1,0.2,0.1
UDP,18.0,23.8,24.4,26.5,27.5
UDP 443 (https/quic),9.3,16.3,17.9,20.9,22.5
UDP 4500 (nat-t),1.8,3.7,2.7,2.5,1.8
UDP 51820,0.0,0.0,0.1,0.2,0.3
UDP 53 (dns),0.1,0.2,0.2,0.2,0.2
UDP 8801,1.4,0.7,0.3,0.2,0.1
ESP,6.4,5.8,3.9,2.4,1.4
GRE,0.1,0.1,0.0,0.0,0.0
ICMP,0.0,0.0,0.0,0.1,0.0
"""

# Concentration of the 2024 report: share of volume carried by the top 1% / 10% of users.
TOP_SHARES_2024: dict[tuple[str, str], tuple[float, float]] = {
    ("broadband", "out"): (0.15, 0.50),
    ("broadband", "in"): (0.46, 0.75),
    ("mobile", "out"): (0.12, 0.48),
    ("mobile", "in"): (0.13, 0.45),
}


def daily_usage_table(service: str) -> pl.DataFrame:
    """Table 1 (broadband) or Table 2 (mobile): one row per year, in/out mean, median, mode MB."""
    text = TABLE1_CSV if service == "broadband" else TABLE2_CSV
    return pl.read_csv(io.StringIO(text))


def port_share_table(service: str) -> pl.DataFrame:
    """Table 3 (broadband) or Table 4 (mobile): category, then one column of % per year."""
    text = TABLE3_CSV if service == "broadband" else TABLE4_CSV
    return pl.read_csv(io.StringIO(text))


def usage_targets(service: str, year: int, direction: str) -> dict[str, float]:
    """mean_mb, median_mb, mode_mb, top1_share, top10_share targets of one reference row."""
    table = daily_usage_table(service)
    years = table["year"].to_list()
    if year not in years:
        raise ValueError(f"no {service} reference row for {year}; known years {years[0]}-{years[-1]}")
    row = table.filter(pl.col("year") == year).row(0, named=True)
    top1, top10 = TOP_SHARES_2024[(service, direction)]
    return {
        "mean_mb": float(row[f"{direction}_mean_mb"]),
        "median_mb": float(row[f"{direction}_median_mb"]),
        "mode_mb": float(row[f"{direction}_mode_mb"]),
        "top1_share": top1,
        "top10_share": top10,
    }


def port_share_targets(service: str, year: int) -> dict[str, float]:
    """Category -> % of bytes for one year; years outside the table take the nearest one."""
    table = port_share_table(service)
    years = [int(c) for c in table.columns[1:]]
    nearest = min(years, key=lambda y: abs(y - year))
    return dict(zip(table["category"].to_list(), table[str(nearest)].cast(pl.Float64).to_list()))
