//! The report as one self-contained HTML page: inline CSS and SVG drawn
//! here, nothing fetched, so it opens from a file, a mail or an air-gapped
//! laptop alike.

use std::fmt::Write;

use super::Report;
use super::stats::{Quantiles, VersionReport};
use crate::cli::when::format_ms;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 220.0;
/// Room for the axes' labels.
const MARGIN: f64 = 44.0;
const CHAMPION: &str = "#1f77b4";
const SHADOW: &str = "#ff7f0e";

/// Text escaped for HTML content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), super::number)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |x| format!("{:.2}%", x * 100.0))
}

/// A bar chart of (lo, hi, count) bars.
fn histogram_svg(title: &str, bars: &[(f64, f64, u64)]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg role="img" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"><title>{}</title>"#,
        esc(title)
    );
    axes(&mut svg);
    let top = bars.iter().map(|b| b.2).max().unwrap_or(0).max(1) as f64;
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    let w = plot_w / bars.len().max(1) as f64;
    for (i, (lo, hi, n)) in bars.iter().enumerate() {
        let h = *n as f64 / top * plot_h;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{SHADOW}"><title>{} to {}: {n}</title></rect>"#,
            MARGIN + i as f64 * w,
            HEIGHT - MARGIN - h,
            (w - 1.0).max(0.5),
            super::number(*lo),
            super::number(*hi)
        );
    }
    let max = bars.last().map_or(0.0, |b| b.1);
    label(&mut svg, MARGIN, HEIGHT - MARGIN + 16.0, "start", "0");
    label(&mut svg, WIDTH - MARGIN, HEIGHT - MARGIN + 16.0, "end", &super::number(max));
    label(&mut svg, WIDTH / 2.0, HEIGHT - 8.0, "middle", "max |diff| per record");
    label(&mut svg, MARGIN - 4.0, MARGIN + 4.0, "end", &format!("{top}"));
    svg.push_str("</svg>");
    svg
}

/// Both versions' latency CDFs on one chart.
fn cdf_svg(title: &str, champion: &[(f64, f64)], shadow: &[(f64, f64)]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg role="img" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"><title>{}</title>"#,
        esc(title)
    );
    axes(&mut svg);
    let max_ms = champion.iter().chain(shadow).map(|p| p.0).fold(0.0, f64::max).max(1e-3);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    for (points, colour, name) in [(champion, CHAMPION, "champion"), (shadow, SHADOW, "shadow")] {
        let line: Vec<String> = points
            .iter()
            .map(|(ms, q)| {
                format!("{:.1},{:.1}", MARGIN + ms / max_ms * plot_w, HEIGHT - MARGIN - q * plot_h)
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{name}</title></polyline>"#,
            line.join(" ")
        );
    }
    label(&mut svg, MARGIN, HEIGHT - MARGIN + 16.0, "start", "0 ms");
    label(&mut svg, WIDTH - MARGIN, HEIGHT - MARGIN + 16.0, "end", &format!("{} ms", super::number(max_ms)));
    label(&mut svg, WIDTH / 2.0, HEIGHT - 8.0, "middle", "latency; share of requests at or below");
    label(&mut svg, MARGIN - 4.0, MARGIN + 4.0, "end", "1");
    label(&mut svg, MARGIN - 4.0, HEIGHT - MARGIN, "end", "0");
    let _ = write!(
        svg,
        r#"<rect x="{x}" y="12" width="12" height="4" fill="{CHAMPION}"/><text x="{tx}" y="18" font-size="11">champion</text><rect x="{x}" y="26" width="12" height="4" fill="{SHADOW}"/><text x="{tx}" y="32" font-size="11">shadow</text>"#,
        x = WIDTH - MARGIN - 80.0,
        tx = WIDTH - MARGIN - 64.0
    );
    svg.push_str("</svg>");
    svg
}

fn axes(svg: &mut String) {
    let _ = write!(
        svg,
        r##"<path d="M{m} {t} V{b} H{r}" fill="none" stroke="#555"/>"##,
        m = MARGIN,
        t = MARGIN,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN
    );
}

fn label(svg: &mut String, x: f64, y: f64, anchor: &str, text: &str) {
    let _ = write!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="11" text-anchor="{anchor}">{}</text>"#,
        esc(text)
    );
}

fn quantile_row(out: &mut String, name: &str, q: &Quantiles) {
    let _ = write!(
        out,
        "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        q.n,
        num(q.p50),
        num(q.p90),
        num(q.p99),
        num(q.max)
    );
}

fn version_section(out: &mut String, v: &VersionReport) {
    let champions: Vec<String> = v.champion_versions.iter().map(|c| format!("v{c}")).collect();
    let _ = write!(
        out,
        "<section><h2>Shadow v{} beside champion {}</h2>\
         <p>{} records from {} to {}, replicas: {}</p>\
         <table><tr><th>compared</th><td>{}</td></tr><tr><th>shadow errors</th><td>{}</td></tr>\
         <tr><th>agreement rate</th><td>{} over {} label outputs</td></tr>\
         <tr><th>mean |diff|</th><td>{} over {} numeric outputs</td></tr>\
         <tr><th>shadow NaN/Inf</th><td>{}</td></tr><tr><th>outputs not comparable</th><td>{}</td></tr></table>",
        v.shadow_version,
        esc(&champions.join(", ")),
        v.records,
        esc(&format_ms(v.first_ts_ms)),
        esc(&format_ms(v.last_ts_ms)),
        esc(&v.replicas.join(", ")),
        v.compared,
        v.errors,
        pct(v.agreement_rate),
        v.label_outputs,
        num(v.mean_abs_diff),
        v.numeric_outputs,
        v.shadow_nan_inf,
        v.mismatched_outputs
    );
    out.push_str("<h3>Output differences per record</h3><table><tr><th></th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>");
    quantile_row(out, "mean |diff|", &v.record_mean_abs_diff);
    quantile_row(out, "max |diff|", &v.record_max_abs_diff);
    out.push_str("</table>");
    out.push_str(&histogram_svg(
        &format!("histogram of max |diff| per record, shadow v{}", v.shadow_version),
        &v.plots.max_abs_diff_bars,
    ));
    let _ = write!(
        out,
        "<h3>Latency</h3><table><tr><th></th><th>n</th><th>p50 ms</th><th>p99 ms</th></tr>\
         <tr><th>champion</th><td>{}</td><td>{}</td><td>{}</td></tr>\
         <tr><th>shadow</th><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        v.champion_latency.n,
        num(v.champion_latency.p50_ms),
        num(v.champion_latency.p99_ms),
        v.shadow_latency.n,
        num(v.shadow_latency.p50_ms),
        num(v.shadow_latency.p99_ms)
    );
    out.push_str(&cdf_svg(
        &format!("latency CDFs, champion and shadow v{}", v.shadow_version),
        &v.plots.champion_latency_cdf,
        &v.plots.shadow_latency_cdf,
    ));
    let _ = write!(
        out,
        "<h3>By champion score</h3><p>Score: {}.</p><table><tr><th>score</th><th>n</th><th>disagreement</th><th>mean |diff|</th></tr>",
        esc(&v.score)
    );
    for b in &v.score_buckets {
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&super::bucket_name(b)),
            b.n,
            pct(b.disagreement_rate),
            num(b.mean_abs_diff)
        );
    }
    out.push_str("</table><h3>Largest differences</h3><table><tr><th>request id</th><th>time</th><th>output</th><th>diff</th><th>champion</th><th>shadow</th></tr>");
    for t in &v.largest_differences {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.request_id),
            esc(&format_ms(t.ts_ms)),
            esc(&t.output),
            super::number(t.diff),
            esc(&t.champion),
            esc(&t.shadow)
        );
    }
    out.push_str("</table></section>");
}

/// The whole page.
pub fn page(report: &Report) -> String {
    let mut out = String::new();
    let title = format!("Shadow report: {}", report.model);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right}}\
         th{{background:#f4f4f4}}svg{{display:block;margin:.5em 0}}section{{margin-top:2em}}\
         </style></head><body><h1>{}</h1><p>From {}: {}, {} records; {} unreadable lines skipped; \
         {} records of other models, {} outcomes and {} outside the filter left out.</p>",
        esc(&title),
        esc(&title),
        esc(&report.from),
        report.read.units(),
        report.read.records,
        report.read.unreadable,
        report.skipped.other_models,
        report.skipped.outcomes,
        report.skipped.outside_filter
    );
    for v in &report.versions {
        version_section(&mut out, v);
    }
    out.push_str("</body></html>\n");
    out
}
