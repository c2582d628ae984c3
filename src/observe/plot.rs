//! Bar charts of benchmark tables: `uvs bench NAME --plot FILE.svg` (and `uvs plot TABLE.md
//! FILE.svg` for a saved run) draws the first results table the bench printed, one panel per
//! numeric column, one bar per row (switch or path), with `plotters`' SVG backend.
//!
//! A table is markdown: a header row, a separator row, data rows, all starting with `|`. The
//! first column names the row; a cell is numeric when, after removing thousands separators, a
//! trailing `%` or `x` and any parenthesised note, it parses as a number (`n/a` is a gap). Rows
//! whose first cell contains `/` (ratio rows such as `uvs / kernel`) are left out, and so are
//! columns without a number and a `p50 / p99 / p99.9` cell (its first number, the median, is
//! drawn, labelled so).

use std::path::Path;

use plotters::prelude::*;

/// A parsed table: column titles (without the first) and rows (name, values).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Titles of the value columns.
    pub columns: Vec<String>,
    /// Row name and one value per column (None: not a number).
    pub rows: Vec<(String, Vec<Option<f64>>)>,
}

fn cells(line: &str) -> Vec<String> {
    let t = line.trim().trim_start_matches('|').trim_end_matches('|');
    t.split('|').map(|c| c.trim().to_string()).collect()
}

fn number(cell: &str) -> Option<f64> {
    let c = cell.split('(').next().unwrap_or("").replace([',', '*'], "");
    let c = c.split(" / ").next().unwrap_or("").trim();
    let c = c.trim_end_matches(['%', 'x']).trim();
    c.parse().ok().filter(|v: &f64| v.is_finite())
}

/// The first table in `text` that has at least one numeric column.
pub fn first_table(text: &str) -> Option<Table> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i + 1 < lines.len() {
        let is_sep = lines[i + 1].trim_start().starts_with("|--")
            || lines[i + 1].trim_start().starts_with("|:-");
        if !(lines[i].trim_start().starts_with('|') && is_sep) {
            i += 1;
            continue;
        }
        let header = cells(lines[i]);
        // Columns after expanding `a p50 / p99 / p99.9 b` headers into one column per part.
        let mut columns = Vec::new();
        let mut source = Vec::new(); // (cell index, part)
        for (k, h) in header.iter().enumerate().skip(1) {
            let parts = split_header(h);
            for (n, name) in parts.iter().enumerate() {
                columns.push(name.clone());
                source.push((k, (parts.len() > 1).then_some(n)));
            }
        }
        let mut rows = Vec::new();
        let mut j = i + 2;
        while j < lines.len() && lines[j].trim_start().starts_with('|') {
            let c = cells(lines[j]);
            if !c[0].contains('/') {
                let vals = source
                    .iter()
                    .map(|(k, part)| {
                        let cell = c.get(*k)?;
                        match part {
                            Some(n) => cell.split(" / ").nth(*n).and_then(number),
                            None => number(cell),
                        }
                    })
                    .collect();
                rows.push((c[0].clone(), vals));
            }
            j += 1;
        }
        let t = Table { columns, rows };
        if t.numeric_columns().next().is_some() {
            return Some(t);
        }
        i = j;
    }
    None
}

/// `ping p50 / p99 / p99.9 ms` -> `ping p50 ms`, `ping p99 ms`, `ping p99.9 ms`; any other
/// header stays one column.
fn split_header(h: &str) -> Vec<String> {
    let parts: Vec<&str> = h.split(" / ").collect();
    if parts.len() < 2 || !h.contains("p50") {
        return vec![h.to_string()];
    }
    let first: Vec<&str> = parts[0].split_whitespace().collect();
    let last: Vec<&str> = parts[parts.len() - 1].split_whitespace().collect();
    let prefix = first[..first.len().saturating_sub(1)].join(" ");
    let suffix = last.get(1..).unwrap_or_default().join(" ");
    let n = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let core = match i {
                0 => first.last().copied().unwrap_or(""),
                _ if i == n - 1 => last.first().copied().unwrap_or(""),
                _ => p.trim(),
            };
            [prefix.as_str(), core, suffix.as_str()]
                .iter()
                .filter(|x| !x.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

impl Table {
    /// Indices of the columns with at least one number.
    pub fn numeric_columns(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.columns.len()).filter(|k| self.rows.iter().any(|(_, v)| v[*k].is_some()))
    }
}

/// Draw `t` as an SVG of bar-chart panels at `out`.
pub fn draw(t: &Table, title: &str, out: &Path) -> Result<(), String> {
    let cols: Vec<usize> = t.numeric_columns().collect();
    if cols.is_empty() || t.rows.is_empty() {
        return Err("plot: no numeric column to draw".into());
    }
    let per_row = cols.len().min(3);
    let nrows = cols.len().div_ceil(per_row);
    let size = (420 * per_row as u32, 60 + 300 * nrows as u32);
    let root = SVGBackend::new(out, size).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("plot: {}: {e}", out.display());
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(e)?;
    let panels = root.split_evenly((nrows, per_row));
    for (panel, &k) in panels.iter().zip(&cols) {
        bars(panel, t, k).map_err(|x| format!("plot: {}: {x}", out.display()))?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    t: &Table,
    k: usize,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = t.rows.len();
    let max = t.rows.iter().filter_map(|(_, v)| v[k]).fold(0.0, f64::max);
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(&t.columns[k], ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n.max(1) as u32 - 1).into_segmented(), 0f64..top)?;
    let names: Vec<String> = t.rows.iter().map(|(r, _)| r.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n + 1)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|y| short(*y))
        .draw()?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    chart.draw_series(t.rows.iter().enumerate().filter_map(|(i, (_, v))| {
        let (i, y) = (i as u32, v[k]?);
        let color = palette[i as usize % palette.len()];
        let mut r = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), y),
            ],
            color.mix(0.7).filled(),
        );
        r.set_margin(0, 0, 12, 12);
        Some(r)
    }))?;
    chart.draw_series(t.rows.iter().enumerate().filter_map(|(i, (_, v))| {
        let y = v[k]?;
        Some(Text::new(
            short(y),
            (SegmentValue::CenterOf(i as u32), y + top * 0.02),
            ("sans-serif", 12),
        ))
    }))?;
    Ok(())
}

fn short(v: f64) -> String {
    match v.abs() {
        0.0 => "0".into(),
        a if a >= 1e6 => format!("{:.2}M", v / 1e6),
        a if a >= 1e4 => format!("{:.0}k", v / 1e3),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "netns L2 benchmark\n\n\
        | switch | 64B pps delivered | delivered/sent | TCP Gbit/s | ping avg ms | ping p50 / p99 / p99.9 ms | switch CPU % |\n\
        |---|---:|---:|---:|---:|---:|---:|\n\
        | kernel | 204,315 | 100.0% | 10.81 | 0.059 | 0.050 / 0.090 / 0.120 | 68 (softirq) |\n\
        | ovs | n/a | n/a | 1.30 | 1.040 | n/a / n/a / n/a | 65 |\n\
        | uvs-afxdp | 247,029 | 73.8% | 2.11 | 0.358 | 0.300 / 0.900 / 1.500 | 61 |\n\
        | uvs / kernel | 1.21x | | | | | |\n\n- notes\n";

    #[test]
    fn parses_the_results_table() {
        let t = first_table(RUN).unwrap();
        assert_eq!(t.columns.len(), 8);
        assert_eq!(
            t.columns[4..7],
            ["ping p50 ms", "ping p99 ms", "ping p99.9 ms"].map(String::from)
        );
        assert_eq!(t.rows.len(), 3, "ratio rows are left out");
        assert_eq!(t.rows[0].1[0], Some(204_315.0));
        assert_eq!(t.rows[0].1[1], Some(100.0));
        assert_eq!(t.rows[2].1[4..7], [Some(0.3), Some(0.9), Some(1.5)]);
        assert_eq!(t.rows[0].1[7], Some(68.0));
        assert_eq!(t.rows[1].1[0], None);
        assert_eq!(t.numeric_columns().count(), 8);
        assert!(first_table("| a | b |\n|---|---|\n| x | y |\n").is_none());
    }

    #[test]
    fn draws_an_svg_with_every_row_and_column() {
        let t = first_table(RUN).unwrap();
        let out = std::env::temp_dir().join(format!("uvs-plot-{}.svg", std::process::id()));
        draw(&t, "netns L2", &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for want in [
            "netns L2",
            "uvs-afxdp",
            "kernel",
            "TCP Gbit/s",
            "204k",
            "10.81",
        ] {
            assert!(svg.contains(want), "{want} missing");
        }
        assert!(svg.contains("ping p99.9 ms"));
        assert!(svg.matches("<rect").count() >= 8 * 2, "bars drawn");
        // One row, all zero: still a chart.
        let one = first_table("| s | pps |\n|---|---:|\n| uvs | 0 |\n").unwrap();
        draw(&one, "one", &out).unwrap();
        assert!(std::fs::read_to_string(&out).unwrap().contains("uvs"));
        let _ = std::fs::remove_file(&out);
    }
}
