//! The goodput curve as a PNG (the README shows it): completed calls a second
//! over capacity against offered load, one line per way of handling the excess
//! through the medians, a bar from the lowest pair to the highest at each point,
//! and the targets for the edge as crosses.
//!
//! Drawn with `plotters`' bitmap backend and its pure-Rust `ab_glyph` text, so
//! no fontconfig is needed; the one font it reads is Debian's DejaVu Sans
//! (`fonts-dejavu-core`, which `scripts/setup.sh` installs).

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Where the font lives on Debian.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One point of a curve: offered × capacity, and the goodput × capacity of
/// its pairs (median, lowest, highest).
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub load: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// One curve: its name and its points.
pub struct Curve {
    pub name: String,
    pub points: Vec<Point>,
}

/// Draws `curves` into `path` (900 × 560 PNG). `subtitle` says what the run was.
pub fn goodput(path: &std::path::Path, subtitle: &str, curves: &[Curve]) -> anyhow::Result<()> {
    // plotters keeps registered fonts for the life of the process: the bytes
    // are leaked once, deliberately.
    let bytes = std::fs::read(FONT).map_err(|e| anyhow::anyhow!("reading {FONT} (install fonts-dejavu-core): {e}"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a font plotters can read"))?;
    draw(path, subtitle, curves).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

fn draw(path: &std::path::Path, subtitle: &str, curves: &[Curve]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = curves.iter().flat_map(|c| c.points.iter().map(|p| p.max)).fold(1.2_f64, f64::max);
    // The loads are categories, evenly spaced (0.5, 1, 2, 5, 10 on a log
    // axis would leave 0.5 unlabelled and crowd the rest).
    let mut loads: Vec<f64> = curves.iter().flat_map(|c| c.points.iter().map(|p| p.load)).collect();
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    let at = |load: f64| SegmentValue::CenterOf(loads.iter().position(|l| *l == load).unwrap_or(0) as u32);
    // A segmented 0..n has n + 1 segments.
    let n = u32::try_from(loads.len()).unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Goodput under overload — {subtitle}"), ("sans-serif", 20))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(64)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0_f64..(top * 1.05).min(2.0))?;
    let label = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => loads.get(*i as usize).map_or_else(String::new, |l| format!("{l} ×")),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(loads.len())
        .x_desc("offered load (× capacity)")
        .y_desc("calls completed per second (× capacity)")
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    let palette = [RGBColor(110, 110, 110), RGBColor(214, 96, 77), RGBColor(33, 102, 172), RGBColor(27, 158, 119)];
    for (i, curve) in curves.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(curve.points.iter().map(|p| (at(p.load), p.median)), color.stroke_width(3)))?
            .label(curve.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        chart.draw_series(curve.points.iter().map(|p| Circle::new((at(p.load), p.median), 5, color.filled())))?;
        // The spread of the pairs (nothing where there was one).
        chart.draw_series(
            curve.points.iter().filter(|p| p.max > p.min).map(|p| {
                ErrorBar::new_vertical(at(p.load), p.min, p.median, p.max, color.mix(0.7).stroke_width(2), 10)
            }),
        )?;
    }
    // The floor for the edge at 2, 5 and 10 × capacity.
    let targets: Vec<(f64, f64)> =
        [(2.0, 0.9), (5.0, 0.85), (10.0, 0.8)].into_iter().filter(|(l, _)| loads.contains(l)).collect();
    chart
        .draw_series(targets.iter().map(|p| Cross::new((at(p.0), p.1), 7, BLACK.stroke_width(2))))?
        .label("target for the edge (at least)")
        .legend(|(x, y)| Cross::new((x + 12, y), 6, BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
