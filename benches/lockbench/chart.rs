//! docs/img/benchmarks.svg: hand-off latency (median bars, p99 whiskers) and contention scaling
//! (hand-overs per second; etcd requests and watch events per hand-over), lockkeeper beside its
//! peers. SVG, so no font files are needed to draw it.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{Contention, Results};
use crate::stats;

const LOCKKEEPER: RGBColor = RGBColor(31, 119, 180);
const PYTHON: RGBColor = RGBColor(255, 127, 14);
const ETCDCTL: RGBColor = RGBColor(44, 160, 44);
const FLOOR: RGBColor = RGBColor(150, 150, 150);

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

pub fn write(res: &Results, path: &Path) -> Result<(), Box<dyn Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1320, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let (mid, last) = right.split_horizontally(410);
    handoff(&left, res)?;
    throughput(&mid, res)?;
    traffic(&last, res)?;
    root.present()?;
    Ok(())
}

fn color_of(id: &str) -> RGBColor {
    match id {
        "floor" => FLOOR,
        "py" => PYTHON,
        "etcdctl" | "etcdctl_signal" => ETCDCTL,
        _ => LOCKKEEPER,
    }
}

fn short(id: &str) -> &'static str {
    match id {
        "floor" => "floor: delete→watch",
        "lib" => "lockkeeper library",
        "sidecar" => "lockkeeper run (/events)",
        "sidecar_readyz" => "… until /readyz 200",
        "exec" => "lockkeeper exec CMD",
        "etcdctl" => "etcdctl lock CMD",
        "etcdctl_signal" => "etcdctl lock (signal)",
        "py" => "python-etcd3",
        _ => "?",
    }
}

fn handoff(area: &Area<'_>, res: &Results) -> Result<(), Box<dyn Error>> {
    let rows: Vec<(&'static str, RGBColor, f64, f64)> = res
        .handoff
        .iter()
        .filter(|r| !r.id.ends_with("_q30"))
        .filter_map(|r| {
            Some((
                short(r.id),
                color_of(r.id),
                r.series.median()?,
                r.series.p99()?,
            ))
        })
        .collect();
    let k = rows.len().max(1) as i32;
    let xmax = rows.iter().map(|r| r.3).fold(1.0, f64::max) * 1.35;
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Hand-off latency, ms (bar: median, whisker: p99)",
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(170)
        .build_cartesian_2d(0f64..xmax, (0..k - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(k as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names
                .get((k - 1 - *i) as usize)
                .map_or(String::new(), |s| (*s).to_owned()),
            SegmentValue::Last => String::new(),
        })
        .x_desc("milliseconds")
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 13))
        .draw()?;
    for (idx, (_, color, med, p99)) in rows.iter().enumerate() {
        // First row at the top.
        let i = k - 1 - idx as i32;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*med, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(5, 5, 0, 0);
        chart.draw_series(std::iter::once(bar))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![
                (*med, SegmentValue::CenterOf(i)),
                (*p99, SegmentValue::CenterOf(i)),
            ],
            BLACK.stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!(" {med:.1} / {p99:.1}"),
            (*p99, SegmentValue::CenterOf(i)),
            ("sans-serif", 12)
                .into_font()
                .into_text_style(area)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        )))?;
    }
    Ok(())
}

/// (N, median over runs of `f(run)`) for each N of one implementation.
fn points(
    cs: &[&Contention],
    f: impl Fn(&crate::results::ContRun) -> Option<f64>,
) -> Vec<(f64, f64)> {
    cs.iter()
        .filter_map(|c| {
            let vals: Vec<f64> = c.runs.iter().filter_map(&f).filter(|v| *v > 0.0).collect();
            stats::median_of(&vals).map(|m| (c.n as f64, m))
        })
        .collect()
}

fn by_impl(res: &Results) -> Vec<(&'static str, RGBColor, Vec<&Contention>)> {
    let mut out = Vec::new();
    for (id, label, color) in [
        ("lib", "lockkeeper", LOCKKEEPER),
        ("py", "python-etcd3", PYTHON),
    ] {
        let cs: Vec<&Contention> = res.contention.iter().filter(|c| c.id == id).collect();
        if !cs.is_empty() {
            out.push((label, color, cs));
        }
    }
    out
}

fn log_range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || hi <= 0.0 {
        return (0.1, 10.0);
    }
    (lo / 2.0, hi * 6.0) // room for the legend at the top
}

fn n_range(res: &Results) -> (f64, f64) {
    let ns = res.contention.iter().map(|c| c.n as f64);
    let lo = ns.clone().fold(f64::INFINITY, f64::min);
    let hi = ns.fold(0.0, f64::max);
    if lo.is_finite() && hi > 0.0 {
        ((lo / 1.6).max(1.0), hi * 1.6)
    } else {
        (1.0, 10.0)
    }
}

/// One line of a log-log panel.
struct Line {
    label: String,
    color: RGBColor,
    pts: Vec<(f64, f64)>,
    dashed: bool,
}

fn throughput(area: &Area<'_>, res: &Results) -> Result<(), Box<dyn Error>> {
    let lines: Vec<Line> = by_impl(res)
        .into_iter()
        .map(|(label, color, cs)| Line {
            label: label.to_owned(),
            color,
            pts: points(&cs, |r| r.rate()),
            dashed: false,
        })
        .collect();
    log_panel(
        area,
        res,
        "Contention: hand-overs/s (client per contender)",
        "hand-overs / s",
        &lines,
    )
}

fn traffic(area: &Area<'_>, res: &Results) -> Result<(), Box<dyn Error>> {
    let mut lines = Vec::new();
    for (label, color, cs) in by_impl(res) {
        lines.push(Line {
            label: format!("{label}: requests"),
            color,
            pts: points(&cs, |r| {
                (r.ok > 0).then(|| (r.traffic.unary + r.traffic.watch_requests) / r.ok as f64)
            }),
            dashed: false,
        });
        lines.push(Line {
            label: format!("{label}: watch events"),
            color,
            pts: points(&cs, |r| {
                (r.ok > 0).then(|| r.traffic.watch_events / r.ok as f64)
            }),
            dashed: true,
        });
    }
    log_panel(
        area,
        res,
        "etcd traffic per hand-over (client per contender)",
        "requests (solid), watch events (dashed)",
        &lines,
    )
}

fn log_label(v: &f64) -> String {
    if *v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn log_panel(
    area: &Area<'_>,
    res: &Results,
    caption: &str,
    ydesc: &str,
    lines: &[Line],
) -> Result<(), Box<dyn Error>> {
    let (ylo, yhi) = log_range(lines.iter().flat_map(|l| l.pts.iter().map(|p| p.1)));
    let (xlo, xhi) = n_range(res);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d((xlo..xhi).log_scale(), (ylo..yhi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("N contenders on one lock")
        .y_desc(ydesc)
        .x_label_formatter(&log_label)
        .y_label_formatter(&log_label)
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .label_style(("sans-serif", 13))
        .draw()?;
    for l in lines {
        draw_line(&mut chart, l)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK.mix(0.4))
        .background_style(WHITE.mix(0.85))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

type LogChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::combinators::LogCoord<f64>,
        plotters::coord::combinators::LogCoord<f64>,
    >,
>;

fn draw_line<'a, 'b: 'a>(chart: &mut LogChart<'a, 'b>, l: &Line) -> Result<(), Box<dyn Error>> {
    let color = l.color;
    let style = color.stroke_width(2);
    let anno = if l.dashed {
        chart.draw_series(DashedLineSeries::new(l.pts.iter().copied(), 6, 4, style))?
    } else {
        chart.draw_series(LineSeries::new(l.pts.iter().copied(), style))?
    };
    let dashed = l.dashed;
    anno.label(l.label.clone()).legend(move |(x, y)| {
        if dashed {
            PathElement::new(vec![(x, y), (x + 7, y)], color.stroke_width(2))
        } else {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        }
    });
    chart.draw_series(l.pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    Ok(())
}
