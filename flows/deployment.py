"""The deployments: the weekly report every Monday 04:00 Asia/Tokyo for the week that just ended
(04:00 is outside 01:00-03:00, where zones with daylight saving skip or repeat an hour, so the
schedule never double-fires or skips), the monthly counters on the 2nd, and backfill on demand."""

from __future__ import annotations

from typing import Any

from prefect.schedules import Cron

WEEKLY_CRON = "0 4 * * 1"
MONTHLY_CRON = "0 4 2 * *"
TIMEZONE = "Asia/Tokyo"


def build_deployments(parameters: dict[str, Any]) -> list[Any]:
    """RunnerDeployments of the weekly, monthly and backfill flows; `parameters` (landing_zone,
    warehouse, staging, config, exporter_services, feed_retries, ...) go to the scheduled flows."""
    from flows.backfill import backfill
    from flows.monthly import scheduled_monthly_traffic
    from flows.weekly import scheduled_weekly_report

    weekly_keys = {
        "landing_zone",
        "warehouse",
        "staging",
        "config",
        "exporter_services",
        "feed_retries",
        "feed_retry_delay_seconds",
    }
    monthly_keys = {"landing_zone", "warehouse", "staging", "config"}
    return [
        scheduled_weekly_report.to_deployment(
            name="weekly",
            schedules=[Cron(WEEKLY_CRON, timezone=TIMEZONE)],
            parameters={k: v for k, v in parameters.items() if k in weekly_keys and v is not None},
            concurrency_limit=1,
            description="The week that ended last Sunday, every Monday 04:00 Asia/Tokyo",
        ),
        scheduled_monthly_traffic.to_deployment(
            name="monthly",
            schedules=[Cron(MONTHLY_CRON, timezone=TIMEZONE)],
            parameters={k: v for k, v in parameters.items() if k in monthly_keys and v is not None},
            concurrency_limit=1,
            description="Interface counters of the previous month, the 2nd of every month 04:00 Asia/Tokyo",
        ),
        backfill.to_deployment(name="backfill", description="Every week and counter month in a range, on demand"),
    ]


def serve_deployments(parameters: dict[str, Any]) -> None:
    """Registers the deployments with the Prefect API and runs their flow runs until stopped."""
    from prefect import serve

    serve(*build_deployments(parameters))
