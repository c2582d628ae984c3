//! `uvs top`: a live terminal view (ratatui, crossterm backend) of per-port packet, bit and
//! drop rates and every worker's load (one line each: its core, CPU, busy share, loop passes
//! and sleeps per second; past eight workers the rest are summed on one line), refreshed every
//! second from the `stats` command over the control socket. Works over ssh and in tmux (plain
//! terminal escape sequences).
//!
//! Keys: `p` sort by packets/s (default), `b` by bit/s, `d` by drops/s, `n` by name, `r`
//! reverse, `q` or Esc quit. Rates are differences between two `stats` answers divided by the
//! time between them; the first screen shows zeros until a second answer arrives.
//!
//! The rate model ([`Rates`]) and the rendering ([`draw`]) are IO-free and tested with
//! ratatui's `TestBackend`; [`run`] adds the terminal and the socket.

use std::path::Path;
use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use serde_json::Value;

/// The order of the port table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Packets per second (rx + tx), highest first.
    Pps,
    /// Bits per second (rx + tx), highest first.
    Bps,
    /// Drops per second, highest first.
    Drops,
    /// Port name, A to Z.
    Name,
}

impl SortKey {
    fn label(self) -> &'static str {
        match self {
            SortKey::Pps => "pkts/s",
            SortKey::Bps => "bit/s",
            SortKey::Drops => "drops/s",
            SortKey::Name => "name",
        }
    }
}

/// One port's rates.
#[derive(Debug, Clone, PartialEq)]
pub struct PortRow {
    /// Port name.
    pub port: String,
    /// Its bridge.
    pub bridge: String,
    /// Frames received per second.
    pub rx_pps: f64,
    /// Frames sent per second.
    pub tx_pps: f64,
    /// Bits received per second.
    pub rx_bps: f64,
    /// Bits sent per second.
    pub tx_bps: f64,
    /// Drops per second (all reasons).
    pub drops: f64,
}

/// One worker's load over the last interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerRow {
    /// Its index (`stats`' `workers[].index`; 0 for a single worker).
    pub index: usize,
    /// The core it is pinned to (None: not pinned).
    pub core: Option<u64>,
    /// CPU time used per wall time, in percent of one core.
    pub cpu_pct: f64,
    /// Share of loop iterations that received frames, in percent.
    pub busy_pct: f64,
    /// Loop iterations per second.
    pub loops: f64,
    /// Sleeps per second.
    pub sleeps: f64,
}

/// Rates between successive `stats` answers.
#[derive(Debug, Default)]
pub struct Rates {
    prev: Option<(Value, f64)>,
    /// Port rows, in the current order.
    pub ports: Vec<PortRow>,
    /// Every worker, in index order.
    pub workers: Vec<WorkerRow>,
    /// The table's order.
    pub sort: Option<SortKey>,
    /// Reverse the order.
    pub reverse: bool,
}

fn total_drops(p: &Value) -> u64 {
    p["drops"]
        .as_object()
        .map_or(0, |d| d.values().filter_map(Value::as_u64).sum())
}

impl Rates {
    /// Take a new `stats` answer seen at `t` seconds (any monotonic origin).
    pub fn update(&mut self, stats: Value, t: f64) {
        let per = |new: &Value, old: Option<&Value>, dt: f64| {
            let n = new.as_u64().unwrap_or(0);
            let o = old.and_then(Value::as_u64).unwrap_or(n);
            if dt > 0.0 {
                n.saturating_sub(o) as f64 / dt
            } else {
                0.0
            }
        };
        let (old, dt) = match &self.prev {
            Some((v, t0)) => (Some(v), t - t0),
            None => (None, 0.0),
        };
        let mut rows = Vec::new();
        for (name, p) in stats["ports"].as_object().into_iter().flatten() {
            let o = old.map(|v| &v["ports"][name]).filter(|v| v.is_object());
            let f = |k: &str| per(&p[k], o.map(|o| &o[k]), dt);
            let drops = per(
                &Value::from(total_drops(p)),
                o.map(|o| Value::from(total_drops(o))).as_ref(),
                dt,
            );
            rows.push(PortRow {
                port: name.clone(),
                bridge: p["bridge"].as_str().unwrap_or("").to_string(),
                rx_pps: f("rx_packets"),
                tx_pps: f("tx_packets"),
                rx_bps: 8.0 * f("rx_bytes"),
                tx_bps: 8.0 * f("tx_bytes"),
                drops,
            });
        }
        let olds = old.map(workers).unwrap_or_default();
        self.workers = workers(&stats)
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let index = w["index"].as_u64().map_or(i, |x| x as usize);
                worker_row(index, w, olds.get(i).copied(), dt)
            })
            .collect();
        self.ports = rows;
        self.prev = Some((stats, t));
        self.order();
    }

    /// Sort the rows by the current key.
    pub fn order(&mut self) {
        let key = self.sort.unwrap_or(SortKey::Pps);
        let desc = |a: f64, b: f64| b.total_cmp(&a);
        self.ports.sort_by(|a, b| {
            let o = match key {
                SortKey::Pps => desc(a.rx_pps + a.tx_pps, b.rx_pps + b.tx_pps),
                SortKey::Bps => desc(a.rx_bps + a.tx_bps, b.rx_bps + b.tx_bps),
                SortKey::Drops => desc(a.drops, b.drops),
                SortKey::Name => std::cmp::Ordering::Equal,
            };
            o.then_with(|| a.port.cmp(&b.port))
        });
        if self.reverse {
            self.ports.reverse();
        }
    }

    /// Apply a key press; false when it asks to quit.
    pub fn key(&mut self, c: char) -> bool {
        match c {
            'q' => return false,
            'p' => self.sort = Some(SortKey::Pps),
            'b' => self.sort = Some(SortKey::Bps),
            'd' => self.sort = Some(SortKey::Drops),
            'n' => self.sort = Some(SortKey::Name),
            'r' => self.reverse = !self.reverse,
            _ => {}
        }
        self.order();
        true
    }
}

/// The workers of a `stats` answer: `workers` (several), else the one `worker`.
fn workers(stats: &Value) -> Vec<&Value> {
    match stats["workers"].as_array() {
        Some(all) => all.iter().collect(),
        None if stats["worker"].is_object() => vec![&stats["worker"]],
        None => Vec::new(),
    }
}

/// One worker's load between its `old` and `new` figures, `dt` seconds apart.
fn worker_row(index: usize, new: &Value, old: Option<&Value>, dt: f64) -> WorkerRow {
    let d = |k: &str| {
        let n = new[k].as_f64().unwrap_or(0.0);
        (n - old.and_then(|o| o[k].as_f64()).unwrap_or(n)).max(0.0)
    };
    let (cpu, wall, iters) = (d("cpu_ns"), d("wall_ns"), d("iterations"));
    WorkerRow {
        index,
        core: new["core"].as_u64(),
        cpu_pct: if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 },
        busy_pct: if iters > 0.0 {
            100.0 * d("busy_iterations") / iters
        } else {
            0.0
        },
        loops: if dt > 0.0 { iters / dt } else { 0.0 },
        sleeps: if dt > 0.0 { d("sleeps") / dt } else { 0.0 },
    }
}

/// Worker lines the header shows; more workers are summed on the last line.
const WORKER_LINES: usize = 8;

/// The header's lines: one per worker, the ones past `WORKER_LINES - 1` summed on the last.
fn worker_lines(workers: &[WorkerRow]) -> Vec<String> {
    let line = |w: &WorkerRow| {
        let core = w
            .core
            .map_or("unpinned".to_string(), |c| format!("core {c}"));
        format!(
            "worker {} ({core}): cpu {:5.1}%  busy {:5.1}%  loops/s {:>8}  sleeps/s {:>6}",
            w.index,
            w.cpu_pct,
            w.busy_pct,
            si(w.loops),
            si(w.sleeps)
        )
    };
    if workers.len() <= WORKER_LINES {
        return workers.iter().map(line).collect();
    }
    let (shown, rest) = workers.split_at(WORKER_LINES - 1);
    let mut lines: Vec<String> = shown.iter().map(line).collect();
    let cpu: f64 = rest.iter().map(|w| w.cpu_pct).sum();
    let busy = rest.iter().map(|w| w.busy_pct).sum::<f64>() / rest.len() as f64;
    lines.push(format!(
        "workers {}-{} ({} more): cpu {cpu:5.1}% together  busy {busy:5.1}% on average",
        rest[0].index,
        rest[rest.len() - 1].index,
        rest.len()
    ));
    lines
}

/// `1.23M`, `456k`, `12`.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Draw one screen.
pub fn draw(f: &mut Frame, r: &Rates, title: &str, error: Option<&str>) {
    let lines = match error {
        Some(e) => vec![format!("error: {e}")],
        None if r.workers.is_empty() => vec!["no worker figures yet".to_string()],
        None => worker_lines(&r.workers),
    };
    let [head, table, foot] = Layout::vertical([
        Constraint::Length(lines.len() as u16 + 2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(lines.join("\n"))
            .block(Block::bordered().title(format!(" uvs top: {title} "))),
        head,
    );
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let header = Row::new([
        "port", "bridge", "rx pkt/s", "tx pkt/s", "rx bit/s", "tx bit/s", "drops/s",
    ])
    .style(bold);
    let rows = r.ports.iter().map(|p| {
        Row::new([
            p.port.clone(),
            p.bridge.clone(),
            si(p.rx_pps),
            si(p.tx_pps),
            si(p.rx_bps),
            si(p.tx_bps),
            si(p.drops),
        ])
    });
    let widths = [
        Constraint::Length(24),
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(9),
    ];
    let sort = r.sort.unwrap_or(SortKey::Pps).label();
    let dir = if r.reverse { " (reversed)" } else { "" };
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" ports, by {sort}{dir} "))),
        table,
    );
    f.render_widget(
        Line::from("p pkts/s  b bit/s  d drops/s  n name  r reverse  q quit"),
        foot,
    );
}

/// Run the live view against the daemon at `socket` until `q`.
pub fn run(socket: &Path, interval: Duration) -> Result<(), String> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
    // Fail before touching the terminal when the daemon is not there.
    crate::control::call(socket, "stats", &[]).map_err(|e| e.to_string())?;
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(
            "top: needs a terminal (in a script or pipe use `uvs ctl stats` or `uvs ctl --json stats`)"
                .into(),
        );
    }
    let mut term = ratatui::try_init().map_err(|e| format!("top: terminal: {e}"))?;
    let origin = Instant::now();
    let mut rates = Rates::default();
    let title = socket.display().to_string();
    let mut next = Instant::now();
    let mut error: Option<String> = None;
    let result = loop {
        if Instant::now() >= next {
            match crate::control::call(socket, "stats", &[]) {
                Ok(r) => {
                    rates.update(r.data, origin.elapsed().as_secs_f64());
                    error = None;
                }
                Err(e) => error = Some(e.to_string()),
            }
            next += interval;
            if let Err(e) = term.draw(|f| draw(f, &rates, &title, error.as_deref())) {
                break Err(format!("terminal: {e}"));
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        match event::poll(wait) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    let quit = match k.code {
                        KeyCode::Esc => true,
                        KeyCode::Char(c) => !rates.key(c),
                        _ => false,
                    };
                    if quit {
                        break Ok(());
                    }
                    if let Err(e) = term.draw(|f| draw(f, &rates, &title, error.as_deref())) {
                        break Err(format!("terminal: {e}"));
                    }
                }
                Ok(_) => {}
                Err(e) => break Err(format!("terminal: {e}")),
            },
            Ok(false) => {}
            Err(e) => break Err(format!("terminal: {e}")),
        }
    };
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn stats(a: (u64, u64), b: (u64, u64), drops: u64, cpu: u64, wall: u64) -> Value {
        json!({
            "ports": {
                "pa": {"bridge": "br0", "rx_packets": a.0, "rx_bytes": a.1, "tx_packets": 0,
                       "tx_bytes": 0, "drops": {"no-route": drops}},
                "pb": {"bridge": "br0", "rx_packets": b.0, "rx_bytes": b.1, "tx_packets": 0,
                       "tx_bytes": 0, "drops": {}},
            },
            "worker": {"cpu_ns": cpu, "wall_ns": wall, "iterations": 1000 + wall / 1000,
                       "busy_iterations": wall / 4000, "sleeps": 0}
        })
    }

    #[test]
    fn rates_are_differences_over_time_and_sort() {
        let mut r = Rates::default();
        r.update(stats((0, 0), (0, 0), 0, 0, 0), 10.0);
        assert!(r.ports.iter().all(|p| p.rx_pps == 0.0));
        r.update(
            stats((100, 10_000), (1000, 64_000), 6, 500_000_000, 2_000_000_000),
            12.0,
        );
        assert_eq!(r.ports[0].port, "pb", "busiest first");
        assert_eq!(r.ports[0].rx_pps, 500.0);
        assert_eq!(r.ports[0].rx_bps, 256_000.0);
        assert_eq!(r.ports[1].drops, 3.0);
        assert_eq!(r.workers.len(), 1);
        assert_eq!(r.workers[0].cpu_pct, 25.0);
        assert_eq!(r.workers[0].busy_pct, 25.0);
        assert!(r.key('d'));
        assert_eq!(r.ports[0].port, "pa");
        assert!(r.key('n') && r.key('r'));
        assert_eq!(r.ports[0].port, "pb");
        assert!(!r.key('q'));
    }

    #[test]
    fn draws_ports_rates_and_worker() {
        let mut r = Rates::default();
        r.update(stats((0, 0), (0, 0), 0, 0, 0), 0.0);
        r.update(
            stats((2500, 1_250_000), (0, 0), 0, 1_000_000_000, 1_000_000_000),
            1.0,
        );
        let mut t = Terminal::new(TestBackend::new(100, 12)).unwrap();
        t.draw(|f| draw(f, &r, "/run/uvs/uvs.sock", None)).unwrap();
        let text: String = t
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        for want in [
            "uvs top",
            "pa",
            "br0",
            "2.5k",
            "10.00M",
            "cpu 100.0%",
            "by pkts/s",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }

    /// `stats` of `n` workers (as `stats_each` answers): worker i pinned to core i, having used
    /// `cpu(i)` ns of CPU in `wall` ns.
    fn stats_of(n: usize, cpu: impl Fn(usize) -> u64, wall: u64) -> Value {
        let workers: Vec<Value> = (0..n)
            .map(|i| {
                json!({"index": i, "core": i, "cpu_ns": cpu(i), "wall_ns": wall,
                       "iterations": wall / 1000, "busy_iterations": 0, "sleeps": i * 10})
            })
            .collect();
        json!({"ports": {}, "worker": workers[0].clone(), "workers": workers})
    }

    fn screen(r: &Rates, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(110, height)).unwrap();
        t.draw(|f| draw(f, r, "s", None)).unwrap();
        let b = t.backend().buffer();
        (0..height)
            .map(|y| {
                (0..110)
                    .map(|x| b[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
                    + "\n"
            })
            .collect()
    }

    #[test]
    fn every_worker_has_its_line_and_many_are_summed() {
        let mut r = Rates::default();
        r.update(stats_of(2, |_| 0, 0), 0.0);
        r.update(
            stats_of(2, |i| (i as u64 + 1) * 250_000_000, 1_000_000_000),
            1.0,
        );
        assert_eq!(r.workers.len(), 2);
        assert_eq!((r.workers[1].index, r.workers[1].core), (1, Some(1)));
        assert_eq!(r.workers[1].cpu_pct, 50.0);
        assert_eq!(r.workers[1].sleeps, 0.0, "a counter that did not move");
        let text = screen(&r, 14);
        assert!(text.contains("worker 0 (core 0): cpu  25.0%"), "{text}");
        assert!(text.contains("worker 1 (core 1): cpu  50.0%"), "{text}");

        // Sixteen workers: seven lines, then workers 7-15 together (9 x 10%).
        let mut r = Rates::default();
        r.update(stats_of(16, |_| 0, 0), 0.0);
        r.update(stats_of(16, |_| 100_000_000, 1_000_000_000), 1.0);
        let text = screen(&r, 20);
        assert!(text.contains("worker 6 (core 6): cpu  10.0%"), "{text}");
        assert!(!text.contains("worker 7 (core 7)"), "{text}");
        assert!(
            text.contains("workers 7-15 (9 more): cpu  90.0% together"),
            "{text}"
        );
        // The port table still has its header below the eight worker lines.
        assert!(text.contains("rx pkt/s"), "{text}");
    }
}
