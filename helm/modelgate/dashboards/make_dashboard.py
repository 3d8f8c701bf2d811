"""Writes modelgate-rollout.json, the Grafana dashboard for a person watching
a rollout, with Grafana's own dashboard SDK (grafana-foundation-sdk, pinned in
tests/python/requirements-dashboard.txt).

    python make_dashboard.py > modelgate-rollout.json

tests/tests/monitoring.rs runs it and fails when the committed JSON differs,
then evaluates every expression in it against a real Prometheus scraping a
fleet that rolls out.
"""

import json

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every selector: the scrape job(s) and the model(s) picked at the top.
SEL = 'job=~"$job", model=~"$model"'
SERVER_ERRORS = 'code=~"INTERNAL|UNKNOWN|UNAVAILABLE|DEADLINE_EXCEEDED"'
RATE = "$__rate_interval"


def q(expr, legend):
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DS)


def series(title, description, unit, *targets, span=12):
    p = timeseries.Panel().title(title).description(description).datasource(DS).unit(unit)
    p = p.height(8).span(span)
    for t in targets:
        p = p.with_target(t)
    return p


def single(title, description, unit, target, span=6):
    return stat.Panel().title(title).description(description).datasource(DS).unit(unit) \
        .height(4).span(span).with_target(target)


def event_expr(metric, matcher, by):
    """Counter increments as annotations. A counter first seen already
    counting is an event too: to increase() its lone first sample is none."""
    sel = f"{metric}{{{SEL}{matcher}}}"
    return (
        f"sum by ({by}) (increase({sel}[1m])) > 0\n"
        f"or\n"
        f"sum by ({by}) ({sel} unless {sel} offset 1m) > 0"
    )


def build():
    d = (
        dashboard.Dashboard("modelgate: rollouts")
        .uid("modelgate-rollouts")
        .tags(["modelgate"])
        .refresh("10s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("job")
            .label("Job")
            .datasource(DS)
            .query("label_values(modelgate_requests_total, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
        )
        .with_variable(
            dashboard.QueryVariable("model")
            .label("Model")
            .datasource(DS)
            .query('label_values(modelgate_model_version_state{job=~"$job"}, model)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
        )
        .annotation(
            dashboard.AnnotationQuery()
            .name("Rollout decisions")
            .datasource(DS)
            .enable(True)
            .icon_color("blue")
            .expr(event_expr("modelgate_rollout_events_total", ', action!="alert"', "model, action"))
        )
        .annotation(
            dashboard.AnnotationQuery()
            .name("Rollbacks")
            .datasource(DS)
            .enable(True)
            .icon_color("red")
            .expr(event_expr("modelgate_rollbacks_total", "", "model, version, trigger"))
        )
        .annotation(
            dashboard.AnnotationQuery()
            .name("Soft-trigger alerts")
            .datasource(DS)
            .enable(True)
            .icon_color("orange")
            .expr(event_expr("modelgate_alerts_total", "", "model, trigger"))
        )
    )

    d = d.with_row(dashboard.Row("Traffic"))
    d = d.with_panel(series(
        "Traffic share per version",
        "Observed share of each model's answered requests per version (solid), and the split the rollout "
        "asks for (target).",
        "percentunit",
        q(
            f'sum by (model, version, role) (rate(modelgate_requests_total{{{SEL}, version!="", role!="shadow"}}[{RATE}]))\n'
            f"/ on (model) group_left ()\n"
            f'sum by (model) (rate(modelgate_requests_total{{{SEL}, version!="", role!="shadow"}}[{RATE}]))',
            "{{model}} v{{version}} {{role}}",
        ),
        q(
            f"avg by (model, version, role) (modelgate_rollout_weight_ratio{{{SEL}}})",
            "{{model}} v{{version}} {{role}} (target)",
        ),
    ))
    d = d.with_panel(series(
        "Requests per second by code",
        "Answers per version and gRPC status code.",
        "reqps",
        q(
            f'sum by (model, version, code) (rate(modelgate_requests_total{{{SEL}, version!=""}}[{RATE}]))',
            "{{model}} v{{version}} {{code}}",
        ),
    ))

    d = d.with_row(dashboard.Row("Latency"))
    for quantile, name in [(0.5, "p50"), (0.99, "p99")]:
        d = d.with_panel(series(
            f"{name} latency per version against the SLA",
            f"{name} of successful requests (queue wait plus inference) per version; the dashed line is "
            "the model's p99 SLA (model.toml [triggers] p99_sla_ms).",
            "s",
            q(
                f"histogram_quantile({quantile}, sum by (model, version, le) "
                f"(rate(modelgate_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                f"{{{{model}}}} v{{{{version}}}} {name}",
            ),
            q(f"max by (model) (modelgate_p99_sla_seconds{{{SEL}}})", "{{model}} SLA"),
        ))

    d = d.with_row(dashboard.Row("Errors"))
    d = d.with_panel(series(
        "Server error ratio per version",
        "INTERNAL, UNKNOWN, UNAVAILABLE and DEADLINE_EXCEEDED over all answers (a client's mistake is not "
        "the model's error); the error_rate trigger rolls a candidate back on this.",
        "percentunit",
        q(
            f'(sum by (model, version) (rate(modelgate_requests_total{{{SEL}, version!="", {SERVER_ERRORS}}}[{RATE}]))\n'
            f'  or 0 * sum by (model, version) (rate(modelgate_requests_total{{{SEL}, version!=""}}[{RATE}])))\n'
            f'/ sum by (model, version) (rate(modelgate_requests_total{{{SEL}, version!=""}}[{RATE}]))',
            "{{model}} v{{version}}",
        ),
        span=8,
    ))
    d = d.with_panel(series(
        "NaN/Inf answer ratio per version",
        "Successful answers holding a NaN or an infinity; the nan_inf_rate trigger rolls back on this.",
        "percentunit",
        q(
            f"sum by (model, version) (rate(modelgate_nan_inf_outputs_total{{{SEL}}}[{RATE}]))\n"
            f'/ sum by (model, version) (rate(modelgate_requests_total{{{SEL}, code="OK"}}[{RATE}]))',
            "{{model}} v{{version}}",
        ),
        span=8,
    ))
    d = d.with_panel(series(
        "Refused requests per second",
        "Answers other than OK by code, including clients' mistakes and overload shedding.",
        "reqps",
        q(
            f'sum by (model, code) (rate(modelgate_requests_total{{{SEL}, code!="OK"}}[{RATE}]))',
            "{{model}} {{code}}",
        ),
        span=8,
    ))

    d = d.with_row(dashboard.Row("Shadow and drift"))
    d = d.with_panel(series(
        "Shadow agreement with the champion",
        "Mean label agreement of each shadow version with the champion's answers (1 = always the same).",
        "percentunit",
        q(f"avg by (model, version) (modelgate_shadow_agreement_ratio{{{SEL}}})", "{{model}} v{{version}}"),
        span=8,
    ))
    d = d.with_panel(series(
        "Shadow copies per second",
        "Copies compared, failed, and dropped (the shadow queue was full or the CPU budget spent).",
        "ops",
        q(f"sum by (model, version) (rate(modelgate_shadow_comparisons_total{{{SEL}}}[{RATE}]))",
          "{{model}} v{{version}} compared"),
        q(f"sum by (model, version) (rate(modelgate_shadow_errors_total{{{SEL}}}[{RATE}]))",
          "{{model}} v{{version}} failed"),
        q(f"sum by (model, version) (rate(modelgate_shadow_dropped_total{{{SEL}}}[{RATE}]))",
          "{{model}} v{{version}} dropped"),
        span=8,
    ))
    d = d.with_panel(series(
        "Prediction shift (PSI)",
        "PSI of each candidate's or shadow's scores against the champion's: 0.1 warns, 0.25 alerts.",
        "none",
        q(f"max by (model, version) (modelgate_prediction_shift_psi{{{SEL}}})", "{{model}} v{{version}}"),
        span=8,
    ))

    d = d.with_row(dashboard.Row("Rollout"))
    d = d.with_panel(single(
        "Stage",
        "The live rollout's stage, numbered from 1 as modelgate status shows it.",
        "none",
        q(f"max by (model, strategy) (modelgate_rollout_stage{{{SEL}}})", "{{model}} {{strategy}}"),
    ))
    d = d.with_panel(single(
        "Rollout state",
        "The state of each model's latest rollout.",
        "none",
        q(f"max by (model, state) (modelgate_rollout_state{{{SEL}}})", "{{model}} {{state}}"),
    ))
    d = d.with_panel(single(
        "Rollbacks in the range",
        "Rollbacks by version and trigger (manual: an operator's).",
        "none",
        q(f"sum by (model, version, trigger) (modelgate_rollbacks_total{{{SEL}}})",
          "{{model}} v{{version}} {{trigger}}"),
    ))
    d = d.with_panel(single(
        "Firing alerts",
        "modelgate's alert rules firing now.",
        "none",
        q('count by (alertname) (ALERTS{alertstate="firing", alertname=~"Modelgate.*"})',
          "{{alertname}}"),
    ))

    d = d.with_row(dashboard.Row("Fleet health"))
    d = d.with_panel(single(
        "Replicas up",
        "Replicas Prometheus scrapes successfully.",
        "none",
        q('sum(up{job=~"$job"})', "up"),
    ))
    d = d.with_panel(single(
        "Replicas connected to etcd",
        "A replica that lost etcd serves its last known state (fail static) and refuses changes.",
        "none",
        q('sum(modelgate_fleet_store_connected{job=~"$job"})', "connected"),
    ))
    d = d.with_panel(single(
        "Leader",
        "The replica that takes the fleet's once-only decisions (exactly one).",
        "none",
        q('sum(modelgate_fleet_leader{job=~"$job"})', "leaders"),
    ))
    d = d.with_panel(single(
        "Rollbacks waiting for etcd",
        "Rollbacks made while etcd was unreachable, not yet written back.",
        "none",
        q('sum(modelgate_fleet_pending_rollbacks{job=~"$job"})', "pending"),
    ))
    d = d.with_panel(series(
        "Versions loaded",
        "Replicas holding each version, by load state (ready, failed).",
        "none",
        q(f"count by (model, version, state) (modelgate_model_version_state{{{SEL}}})",
          "{{model}} v{{version}} {{state}}"),
    ))
    d = d.with_panel(series(
        "Queue depth and refusals",
        "Requests waiting per version, and those refused because the queue was full.",
        "none",
        q(f"sum by (model, version) (modelgate_queue_depth{{{SEL}}})", "{{model}} v{{version}} waiting"),
        q(f"sum by (model, version) (rate(modelgate_queue_rejected_total{{{SEL}}}[{RATE}]))",
          "{{model}} v{{version}} refused/s"),
    ))
    return d.build()


if __name__ == "__main__":
    print(json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True))
