//! The `uvs` command: `run` (the daemon), `ctl` (the control client), `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, Subcommand};

use tracing::{debug, info, warn};
use uvs::clock::MonotonicClock;
use uvs::config::Config;

use uvs::control::db::Db;
use uvs::control::store::Store;
use uvs::control::{self, Registry};
use uvs::worker::{self, WorkerOptions};

#[derive(Parser)]
#[command(name = "uvs", version, about = "A poll-mode userspace virtual switch")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the switch daemon.
    Run {
        /// Control socket path (default: $UVS_SOCKET or /run/uvs/uvs.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// TOML file of the configuration to start with when the database has none (SIGHUP
        /// re-reads it and applies the difference).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Database of the running configuration, rewritten on every change (default:
        /// /var/lib/uvs/conf.db with the default socket; none with another --socket).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Cores to run datapath workers on, one pinned worker per core (`--cores 1`, or
        /// `--cores 0,1` for two; see "Several workers" in the README). Default: `UVS_CORES`,
        /// else `cores` in the --config file, else one unpinned worker.
        #[arg(long)]
        cores: Option<String>,
        /// Workers never sleep (OVS's PMD): the lowest latency, every worker's core always
        /// busy. Default: idle back-off (an idle worker sleeps; its first frame waits for the
        /// wake-up). Also `UVS_BUSY_POLL=1` (or true, yes, on).
        #[arg(long)]
        busy_poll: bool,
        /// Microseconds a worker keeps polling after the last frame of a flow that keeps
        /// coming back, before it sleeps (default 20000: flows of 50 packets a second or more
        /// wait for a wake-up only for their first few packets; an idle switch still sleeps).
        /// Lower saves CPU on sparse traffic at the price of latency. Also
        /// `UVS_POLL_LINGER_US`.
        #[arg(long)]
        poll_linger_us: Option<u64>,
        /// Frames in each worker's frame region (2 KiB each).
        #[arg(long, default_value_t = uvs::packet::DEFAULT_FRAME_COUNT)]
        frames: u32,
        /// Serve Prometheus metrics on this address (e.g. `127.0.0.1:9477`, path /metrics).
        #[arg(long)]
        metrics: Option<String>,
        /// Join the etcd overlay at this etcd URL (flannel's schema; `[etcd]` in --config sets
        /// the rest), e.g. `--etcd http://127.0.0.1:2379`.
        #[arg(long)]
        etcd: Option<String>,
        /// The overlay's etcd key prefix (default /coreos.com/network, as flannel).
        #[arg(long)]
        etcd_prefix: Option<String>,
        /// Directory of the per-bridge OpenFlow sockets `BRIDGE.mgmt` (default: /run/uvs with
        /// the default control socket; none with another --socket); `none`: no OpenFlow.
        #[arg(long)]
        mgmt_dir: Option<PathBuf>,
        /// Where gateways forward DNS queries for names not registered (`ADDRESS[:PORT]`, or
        /// several comma-separated, tried in order when one does not answer; default:
        /// `dns_upstream` in --config, else the nameservers of /etc/resolv.conf; `none`:
        /// answer NXDOMAIN; `off`: no DNS service at all).
        #[arg(long)]
        dns_upstream: Option<String>,
    },
    /// Send a command to a running daemon (`uvs ctl list-commands` lists them).
    Ctl {
        /// Control socket path (default: $UVS_SOCKET or /run/uvs/uvs.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the JSON answer instead of text.
        #[arg(long)]
        json: bool,
        /// Command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A live view of port rates and worker load (`q` quits; `p`/`b`/`d`/`n` sort, `r` reverses).
    Top {
        /// Control socket path (default: $UVS_SOCKET or /run/uvs/uvs.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Draw the first results table of a saved benchmark run (markdown) as SVG bar charts.
    Plot {
        /// The benchmark's output (or any markdown with a results table).
        table: PathBuf,
        /// The SVG to write.
        svg: PathBuf,
        /// Chart title (default: the table file's name).
        #[arg(long)]
        title: Option<String>,
    },
    /// Read `ping` output on stdin; print RTT percentiles `p50 p99 p99.9 max count` (ms) from an
    /// HDR histogram (used by the bench scripts).
    #[command(hide = true)]
    Latency,
    /// Build a throwaway topology of namespace "containers" on a uvs bridge, show that they
    /// reach each other, and remove it all (needs root).
    Demo {
        /// Keep the demo running this many seconds after the checks (0: clean up at once).
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
    /// Run a benchmark in network namespaces against the kernel (and OVS) on this machine, in
    /// one run, and print the table (needs root; see docs/benchmarks.md):
    /// `l2` (kernel bridge, OVS AF_XDP, uvs AF_XDP and TAP), `nat` (uvs masquerade vs iptables),
    /// `encap` (VXLAN overhead: uvs and kernel VTEPs against their unencapsulated paths);
    /// `gen` is the benchmarks' XDP live-frames generator (`uvs bench gen -- --help`).
    Bench {
        /// Which: l2, nat, encap, gen.
        name: String,
        /// Options for the script (`--quick`, `--only ...`; `uvs bench l2 -- --help` lists
        /// them all: a plain `--help` is this text); `--plot FILE.svg` also draws the results
        /// table as bar charts.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own narrative; its daemon logs only warnings unless asked.
    let log_filter = init_logging(if matches!(cli.cmd, Cmd::Demo { .. }) {
        "warn"
    } else {
        "info"
    });
    let r = match cli.cmd {
        Cmd::Run {
            socket,
            config,
            db,
            cores,
            busy_poll,
            poll_linger_us,
            frames,
            metrics,
            etcd,
            etcd_prefix,
            mgmt_dir,
            dns_upstream,
        } => run(
            socket,
            config,
            db,
            cores,
            (
                frames,
                busy_poll
                    || std::env::var("UVS_BUSY_POLL")
                        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on")),
                match poll_linger(poll_linger_us) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("uvs: {e}");
                        return ExitCode::from(2);
                    }
                },
            ),
            metrics,
            (etcd, etcd_prefix),
            (mgmt_dir, dns_upstream),
            log_filter,
        ),
        Cmd::Ctl { socket, json, args } => ctl(socket, json, args),
        Cmd::Top { socket, interval } => top(socket, interval),
        Cmd::Latency => latency(),
        Cmd::Plot { table, svg, title } => plot(&table, &svg, title),
        Cmd::Demo { hold } => uvs::demo::run(hold),
        Cmd::Bench { name, args } => bench(&name, &args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uvs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines (control changes, port state changes) go to stderr, one line each, with a level;
/// `UVS_LOG` (or `RUST_LOG`) filters them, e.g. `UVS_LOG=debug` (default `level`). The
/// answer changes the filter while the daemon runs (`uvs ctl log-level`).
fn init_logging(level: &str) -> Arc<control::log_filter::LogFilter> {
    use tracing_subscriber::EnvFilter;
    let (filter, text) = [std::env::var("UVS_LOG"), std::env::var("RUST_LOG")]
        .into_iter()
        .flatten()
        .find_map(|s| EnvFilter::try_new(&s).ok().map(|f| (f, s)))
        .unwrap_or_else(|| (EnvFilter::new(level), level.to_string()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    let _ = builder.try_init();
    control::log_filter::LogFilter::new(
        text,
        Box::new(move |t| {
            let f = EnvFilter::try_new(t).map_err(|e| e.to_string())?;
            handle.reload(f).map_err(|e| e.to_string())
        }),
    )
}

/// `--cores 1` or `--cores 0,1,...`: one worker per core (none: one unpinned worker).
fn parse_cores(cores: Option<String>) -> Result<Vec<Option<usize>>, String> {
    let Some(c) = cores else {
        return Ok(vec![None]);
    };
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut ids = Vec::new();
    for part in c.split(',') {
        let id: usize = part
            .trim()
            .parse()
            .map_err(|_| format!("--cores: '{part}' is not a core id (e.g. --cores 1 or 0,1)"))?;
        if id >= n {
            return Err(format!(
                "--cores: core {id} does not exist (this machine has {n})"
            ));
        }
        if ids.contains(&Some(id)) {
            return Err(format!("--cores: core {id} is listed twice"));
        }
        ids.push(Some(id));
    }
    Ok(ids)
}

/// The worker's linger: `--poll-linger-us`, else `UVS_POLL_LINGER_US`, else the default.
fn poll_linger(flag: Option<u64>) -> Result<Duration, String> {
    let us = match (flag, std::env::var("UVS_POLL_LINGER_US")) {
        (Some(us), _) => us,
        (None, Ok(v)) => v
            .trim()
            .parse()
            .map_err(|_| format!("UVS_POLL_LINGER_US: {v:?} is not a number of microseconds"))?,
        (None, Err(_)) => return Ok(worker::POLL_LINGER),
    };
    Ok(Duration::from_micros(us))
}

#[allow(clippy::too_many_arguments)]
fn run(
    socket: Option<PathBuf>,
    config_path: Option<PathBuf>,
    db: Option<PathBuf>,
    cores: Option<String>,
    (frames, busy_poll, linger): (u32, bool, Duration),
    metrics: Option<String>,
    etcd: (Option<String>, Option<String>),
    (mgmt_dir, dns_upstream): (Option<PathBuf>, Option<String>),
    log_filter: Arc<control::log_filter::LogFilter>,
) -> Result<(), String> {
    let path = control::socket_path(socket.as_deref());
    let etcd_spec = etcd_spec(etcd, config_path.as_deref())?;
    let dns_opts = dns_options(dns_upstream, config_path.as_deref())?;
    // A metrics address that cannot be resolved is refused before anything starts.
    if let Some(a) = &metrics {
        std::net::ToSocketAddrs::to_socket_addrs(a.as_str())
            .map_err(|e| format!("--metrics {a}: {e} (give ADDRESS:PORT, e.g. 127.0.0.1:9477)"))?;
    }
    // Before touching anything (TAPs, XDP programs): is a daemon already serving this socket?
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(format!(
            "another uvs is already running on {}; not starting (nothing was changed)",
            path.display()
        ));
    }
    // Nor one that cannot be bound (in use: it was found only after the daemon had listened
    // and made its database).
    let metrics = match metrics {
        Some(a) => {
            let l = std::net::TcpListener::bind(a.as_str())
                .map_err(|e| format!("--metrics {a}: {e}; not starting (nothing was changed)"))?;
            Some((a, l))
        }
        None => None,
    };
    let db = match db_path(db, &path) {
        Some(p) => Some(Db::open(&p)?),
        None => {
            warn!("no database (--db): changes made with `uvs ctl` will not survive a restart");
            None
        }
    };
    let (config, from_db) = initial_config(config_path.as_deref(), db.as_ref())?;
    // What the overlay needs from the configuration, before anything is created (it was found
    // only after the configuration was applied and the database written).
    if let Some(spec) = &etcd_spec {
        spec.check_against(&config)?;
    }
    let cores = parse_cores(cores.or_else(|| cores_from(config_path.as_deref())))?;
    let stop = uvs::port::wait::install_stop_handler();
    let hup = uvs::port::wait::install_hup_handler();
    let w = worker::spawn_workers(
        WorkerOptions {
            core: None,
            frames,
            busy_poll,
            linger,
        },
        &cores,
        Arc::new(MonotonicClock::default()),
    )
    .map_err(|e| format!("cannot start the worker: {e}"))?;
    let w = Arc::new(w);
    let store = Arc::new(Store::new(w.clone(), db));
    store
        .start_flusher()
        .map_err(|e| format!("cannot start the database flusher thread: {e}"))?;
    let applied = store.apply(&config);
    for c in &applied.changes {
        debug!("start: {c}");
    }
    // A step of a --config file that fails stops the start (the user's file is wrong); one of
    // the database, which uvs wrote, is logged and the rest runs: a switch that does not come
    // back after a reboot because of one stale entry is worse than one without that entry.
    if from_db {
        for e in &applied.errors {
            warn!("database: {e}; left out, the rest runs");
        }
    } else if let Some(e) = applied.errors.first() {
        w.shutdown();
        return Err(format!("config: {e}"));
    }
    if let Err(e) = store.save() {
        w.shutdown();
        return Err(e);
    }
    info!(
        "started with {} configuration steps, {} ports pending",
        applied.changes.len(),
        applied.pending.len()
    );
    let mut reg = Registry::new();
    control::commands::register(&mut reg, w.clone());
    control::commands::register_store(&mut reg, store.clone(), etcd_spec.clone());
    control::log_filter::register(&mut reg, log_filter);
    let dns = match dns_opts {
        Some(o) => Some(Arc::new(
            uvs::dns::start(&w, o).inspect_err(|_| w.shutdown())?,
        )),
        None => None,
    };
    uvs::dns::commands::register(&mut reg, w.clone(), dns.clone());
    let overlay = match etcd_spec {
        Some(spec) => {
            let state = spec
                .state_file
                .clone()
                .unwrap_or_else(|| path.with_extension("subnet.env"));
            let a =
                uvs::etcd::agent::start(spec, state, w.clone()).inspect_err(|_| w.shutdown())?;
            Some(a.status)
        }
        None => None,
    };
    uvs::etcd::register(&mut reg, overlay);
    let reg = Arc::new(reg);
    let server = control::serve(&path, reg.clone(), control::DEFAULT_SOCKET_MODE).map_err(|e| {
        w.shutdown();
        format!("control socket {}: {e}", path.display())
    })?;
    info!("listening on {}", path.display());
    let _openflow = openflow(mgmt_dir, &path, reg, w.events());
    let _metrics = match metrics {
        Some((a, listener)) => {
            let m =
                uvs::observe::metrics::serve(listener, w.clone(), dns.clone()).map_err(|e| {
                    w.shutdown();
                    format!("--metrics {a}: {e}")
                })?;
            info!("metrics on http://{}/metrics", m.addr());
            Some(m)
        }
        None => None,
    };
    let mut pending = PendingRetry::default();
    while !stop.load(Ordering::SeqCst) {
        if hup.swap(false, Ordering::SeqCst) {
            reload(config_path.as_deref(), &store, &cores);
        }
        pending.tick(&store);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    info!("stopping");
    drop(server);
    // Changes an OpenFlow controller made since its last barrier.
    if let Err(e) = uvs::control::Journal::sync(&*store) {
        tracing::error!("the database could not be written at exit: {e}");
    }
    w.shutdown();
    Ok(())
}

/// The workers' cores when `--cores` is not given: `UVS_CORES`, else `cores` in the `--config`
/// file.
fn cores_from(file: Option<&std::path::Path>) -> Option<String> {
    std::env::var("UVS_CORES")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            file.and_then(|p| Config::load(p).ok())
                .and_then(|c| c.cores)
        })
}

/// The DNS service's settings: `--dns-upstream`, else `dns_upstream` in the `--config` file,
/// else /etc/resolv.conf; None (no service) for `off`.
fn dns_options(
    flag: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<Option<uvs::dns::service::ServiceOptions>, String> {
    let spec = flag.or_else(|| {
        file.and_then(|p| Config::load(p).ok())
            .and_then(|c| c.dns_upstream)
    });
    if spec.as_deref() == Some("off") {
        return Ok(None);
    }
    let upstreams = uvs::dns::service::upstreams_from(spec.as_deref())?;
    Ok(Some(uvs::dns::service::ServiceOptions {
        upstreams,
        timeout_ms: uvs::dns::answer::DEFAULT_UPSTREAM_TIMEOUT_MS,
    }))
}

/// The etcd overlay's settings: the `--config` file's `[etcd]` table (read even when the
/// database holds the running configuration), with `--etcd`/`--etcd-prefix` on top.
fn etcd_spec(
    (url, prefix): (Option<String>, Option<String>),
    file: Option<&std::path::Path>,
) -> Result<Option<uvs::etcd::EtcdSpec>, String> {
    let from_file = match file {
        Some(p) => Config::load(p).ok().and_then(|c| c.etcd),
        None => None,
    };
    let mut spec = match (from_file, &url) {
        (Some(mut s), Some(u)) => {
            s.endpoints = vec![u.clone()];
            s
        }
        (Some(s), None) => s,
        (None, Some(u)) => uvs::etcd::EtcdSpec::new(u),
        (None, None) if prefix.is_some() => return Err("--etcd-prefix needs --etcd".into()),
        (None, None) => return Ok(None),
    };
    if let Some(p) = prefix {
        spec.prefix = p;
    }
    spec.validate()?;
    Ok(Some(spec))
}

/// Start the per-bridge OpenFlow listeners (`--mgmt-dir`; by default /run/uvs with the default
/// socket, none with another one, as for the database); a failure only warns.
fn openflow(
    dir: Option<PathBuf>,
    socket: &std::path::Path,
    reg: Arc<Registry>,
    events: uvs::events::EventSource,
) -> Option<uvs::openflow::Manager> {
    // Controllers (`set-controller`) are served whether or not bridges get sockets.
    let dir = match dir {
        Some(d) if d.as_os_str() == "none" => None,
        Some(d) => Some(d),
        None if socket == std::path::Path::new(control::DEFAULT_SOCKET) => {
            socket.parent().map(std::path::Path::to_path_buf)
        }
        None => None,
    };
    match uvs::openflow::Manager::start(dir.clone(), reg, Some(events)) {
        Ok(m) => {
            if let Some(d) = &dir {
                info!("openflow: bridges served as {}/BRIDGE.mgmt", d.display());
            }
            Some(m)
        }
        Err(e) => {
            let d = dir.map(|d| d.display().to_string()).unwrap_or_default();
            warn!("openflow: cannot serve in {d}: {e}");
            None
        }
    }
}

/// The configuration to start with: the database's if it has one (the `--config` file is then
/// not applied; an invalid one only warns), else the `--config` file (an invalid one is an
/// error), else nothing.
/// The configuration to start with, and whether it came from the database.
fn initial_config(
    file: Option<&std::path::Path>,
    db: Option<&Db>,
) -> Result<(Config, bool), String> {
    let stored = match db {
        Some(d) => d.load()?,
        None => None,
    };
    let Some(stored) = stored else {
        return Ok((file.map_or(Ok(Config::default()), Config::load)?, false));
    };
    let db = db
        .map(|d| d.path().display().to_string())
        .unwrap_or_default();
    info!("configuration from the database {db}");
    if let Some(p) = file {
        match Config::load(p) {
            Ok(_) => info!(
                "--config {} not applied: the database holds the running configuration (SIGHUP applies the file)",
                p.display()
            ),
            Err(e) => warn!("--config: {e}; not applied (starting from the database)"),
        }
    }
    Ok((stored, true))
}

/// The database path: `--db`, else the default one when the socket is the default one.
fn db_path(db: Option<PathBuf>, socket: &std::path::Path) -> Option<PathBuf> {
    match db {
        Some(p) => Some(p),
        None if socket == std::path::Path::new(control::DEFAULT_SOCKET) => {
            Some(PathBuf::from(control::db::DEFAULT_DB))
        }
        None => None,
    }
}

/// When the daemon tries pending ports again by itself (see `control::store`): every 2 s
/// while one of their netdevs exists, the wait doubling (to 64 s) while the retries leave
/// ports pending, so a port that cannot open does not fill the log.
struct PendingRetry {
    next: std::time::Instant,
    every: std::time::Duration,
}

impl Default for PendingRetry {
    fn default() -> Self {
        PendingRetry {
            next: std::time::Instant::now(),
            every: Self::FIRST,
        }
    }
}

impl PendingRetry {
    const FIRST: std::time::Duration = std::time::Duration::from_secs(2);
    const LAST: std::time::Duration = std::time::Duration::from_secs(64);

    fn tick(&mut self, store: &Store) {
        let now = std::time::Instant::now();
        if now < self.next {
            return;
        }
        if !store.pending_ready() {
            // Nothing to try: look again in 2 s (a veth that appears after a long back-off
            // is not kept waiting).
            self.every = Self::FIRST;
            self.next = now + Self::FIRST;
            return;
        }
        match store.retry_pending() {
            Ok(a) => {
                for ch in &a.changes {
                    info!("pending: {ch}");
                }
                for e in &a.errors {
                    warn!("pending: {e}");
                }
            }
            Err(e) => warn!("pending: {e}"),
        }
        self.every = if store.pending_ready() {
            (self.every * 2).min(Self::LAST)
        } else {
            Self::FIRST
        };
        self.next = now + self.every;
    }
}

/// SIGHUP: re-read the `--config` file; a file that does not validate is refused as a whole
/// (nothing changes), a valid one becomes the running configuration (the difference applies).
fn reload(path: Option<&std::path::Path>, store: &Store, running_cores: &[Option<usize>]) {
    let Some(path) = path else {
        warn!("SIGHUP: no --config file to reload; nothing changed");
        return;
    };
    // A file of nothing (no byte but whitespace) is far likelier one being rewritten (`uvs
    // ctl save-config > FILE` truncates it first) than a wish to delete everything: it
    // removed every bridge, route and NAT rule. A file that says so in a comment is taken.
    // Read once: the check and the parse see the same text.
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            if t.trim().is_empty() {
                Err(
                    "the file is empty (being rewritten?) (a file holding only a comment \
                     removes everything)"
                        .into(),
                )
            } else {
                Config::parse(&t)
            }
        });
    let c = match parsed {
        Ok(c) => c,
        Err(e) => {
            warn!("SIGHUP: refusing {}: {e}; nothing changed", path.display());
            return;
        }
    };
    // The workers' cores are set at start: say so when the file asks for others (a reload
    // with `cores = "0,99"` answered "0 changes, 0 errors").
    if let Some(want) = &c.cores {
        match parse_cores(Some(want.clone())) {
            Err(e) => warn!(
                "reload: cores = \"{want}\": {}; not applied",
                e.trim_start_matches("--cores: ")
            ),
            Ok(list) if list != running_cores => warn!(
                "reload: cores = \"{want}\" differs from the workers' cores ({}): a restart applies it",
                running_cores
                    .iter()
                    .map(|c| c.map_or("unpinned".to_string(), |c| c.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Ok(_) => {}
        }
    }
    let (a, kept) = store.reload(&c);
    for k in &kept {
        info!("reload: kept {k} (the CNI plugin's containers; not in the file)");
    }
    for ch in &a.changes {
        info!("reload: {ch}");
    }
    for e in &a.errors {
        warn!("reload: {e}");
    }
    if let Err(e) = store.save() {
        warn!("reload: {e}");
    }
    info!(
        "reloaded {}: {} changes, {} errors, {} ports pending",
        path.display(),
        a.changes.len(),
        a.errors.len(),
        a.pending.len()
    );
}

fn top(socket: Option<PathBuf>, interval: f64) -> Result<(), String> {
    if !(0.1..=3600.0).contains(&interval) {
        return Err(format!("--interval: {interval} (0.1 to 3600 seconds)"));
    }
    let path = control::socket_path(socket.as_deref());
    uvs::observe::top::run(&path, std::time::Duration::from_secs_f64(interval))
}

fn latency() -> Result<(), String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("latency: stdin: {e}"))?;
    let samples = uvs::observe::latency::ping_rtts(&text);
    match uvs::observe::latency::percentiles(&samples) {
        Some(p) => {
            println!("{p}");
            Ok(())
        }
        None => Err("latency: no `time=X ms` lines on stdin".into()),
    }
}

fn ctl(socket: Option<PathBuf>, json: bool, mut args: Vec<String>) -> Result<(), String> {
    let path = control::socket_path(socket.as_deref());
    if args[0] == "capture" {
        return uvs::observe::capture::client(&path, &args[1..]);
    }
    // `--json` after the command too (`uvs ctl stats --json`), as before it.
    let json = json || {
        let n = args.len();
        args.retain(|a| a != "--json");
        args.len() != n
    };
    // ovs-vsctl takes `--may-exist` / `--if-exists` before the command (`--may-exist add-br
    // X`): move them after it, where the daemon takes them.
    let lead = args
        .iter()
        .take_while(|a| *a == "--may-exist" || *a == "--if-exists")
        .count();
    if lead > 0 && lead < args.len() {
        args[..=lead].rotate_left(lead);
    }
    if args.is_empty() {
        return Err("ctl: no command (uvs ctl list-commands lists them)".into());
    }
    // Files are read here, never by the daemon: `add-flows BRIDGE FILE|-` (a third word that
    // is neither `-` nor a file is a flow, as `add-flows BRIDGE FLOW...`).
    let reads_file = |f: &str| f == "-" || std::path::Path::new(f).is_file() || !f.contains('=');
    let reply = if args[0] == "add-flows" && args.len() == 3 && reads_file(&args[2]) {
        control::client::add_flows(&path, &args[1], &args[2])
    } else {
        control::call(&path, &args[0], &args[1..]).map_err(|e| e.to_string())
    };
    // With `--json` an error is JSON on stdout too (`{"error": "..."}`, exit status 1), so a
    // script reading stdout gets an object either way (stdout was empty).
    let reply = reply.inspect_err(|e| {
        if json {
            println!("{}", serde_json::json!({ "error": e }));
        }
    })?;
    match control::client::print_reply(&mut std::io::stdout().lock(), &reply, json) {
        // `uvs ctl ... | head`: the reader left; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| format!("stdout: {e}")),
    }
}

/// The status a benchmark script exits with when it measures nothing (`UVS_BENCH_SKIP_STATUS`;
/// run by hand or in CI it exits 0 then).
const SKIP_STATUS: i32 = 3;

/// The netns benchmark scripts, built into the binary so `uvs bench` works from anywhere.
const BENCHES: [(&str, &str); 3] = [
    ("l2", include_str!("../benches/netns_l2.sh")),
    ("nat", include_str!("../benches/netns_nat.sh")),
    ("encap", include_str!("../benches/netns_encap.sh")),
];

fn bench(name: &str, args: &[String]) -> Result<(), String> {
    if name == "gen" {
        return bench_gen(args);
    }
    let Some((_, script)) = BENCHES.iter().find(|(n, _)| *n == name) else {
        // Every name `uvs bench` takes: the scripts and `gen`.
        let names: Vec<&str> = BENCHES.iter().map(|(n, _)| *n).chain(["gen"]).collect();
        return Err(format!(
            "bench: '{name}' is not a benchmark ({})",
            names.join(", ")
        ));
    };
    let exe = std::env::current_exe().map_err(|e| format!("bench: cannot find uvs itself: {e}"))?;
    // `--plot FILE.svg` is ours: the script's table is drawn once it has finished.
    let mut args = args.to_vec();
    let plot = match args.iter().position(|a| a == "--plot") {
        Some(i) if i + 1 < args.len() => {
            let f = args.remove(i + 1);
            args.remove(i);
            Some(PathBuf::from(f))
        }
        Some(_) => return Err("bench: --plot needs a file name (FILE.svg)".into()),
        None => None,
    };
    // The plot is written after the run: a path it cannot be written to would fail only then,
    // minutes later, with the figures drawn nowhere. Try it now.
    if let Some(svg) = &plot {
        plot_path_writable(svg)?;
    }
    // `uvs bench l2 -- --quick`: the README shows `-- --help`; the rest goes to the script.
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    let path = std::env::temp_dir().join(format!("uvs-bench-{name}-{}.sh", std::process::id()));
    std::fs::write(&path, script).map_err(|e| format!("bench: {}: {e}", path.display()))?;
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&path).arg("--uvs").arg(&exe).args(&args);
    // The script deletes this copy of itself on the way out (uvs may have been killed), and
    // says a SKIP (not root, a tool missing) with this status: a user asked for figures.
    cmd.env("UVS_BENCH_SCRIPT", &path)
        .env("UVS_BENCH_SKIP_STATUS", SKIP_STATUS.to_string());
    let result = run_script(&mut cmd, plot.is_some());
    // Whatever happened (error, signal), the copy of the script goes.
    let _ = std::fs::remove_file(&path);
    let (status, out, signalled) =
        result.map_err(|e| format!("bench {name}: cannot run bash: {e}"))?;
    if signalled {
        return Err(format!(
            "bench {name}: stopped by a signal; the script cleaned up and exited with {status}"
        ));
    }
    if status.code() == Some(SKIP_STATUS) {
        return Err(format!(
            "bench {name}: nothing measured (see the SKIP above): it needs root, and its tools \
             are installed by `bash scripts/setup.sh --bench` (trafgen is Debian's netsniff-ng)"
        ));
    }
    if !status.success() {
        return Err(format!("bench {name}: the script exited with {status}"));
    }
    if let Some(svg) = plot {
        plot_table(&out, &format!("uvs bench {name}"), &svg)?;
    }
    Ok(())
}

/// `uvs bench gen --dev IF --frame HEX [--seconds S] [--batch N]`: offer copies of one frame
/// out of netdev IF with XDP live frames (`uvs::port::afxdp::xdpgen`), the benchmarks' fast
/// generator (`benches/netns_l2.sh --gen xdp`). Prints one line with the count and the rate.
fn bench_gen(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: uvs bench gen --dev IF --frame HEX [--seconds S] [--batch N]";
    let (mut dev, mut frame, mut seconds, mut batch) = (None, None, 5.0f64, 64u32);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("bench gen: {what} needs a value ({USAGE})"))
        };
        match a.as_str() {
            "--" => {}
            "--dev" => dev = Some(val("--dev")?),
            "--frame" => {
                let h = val("--frame")?;
                if h.len() % 2 != 0 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("bench gen: --frame: not an even number of hex digits".into());
                }
                let bytes = (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("checked hex"))
                    .collect::<Vec<u8>>();
                frame = Some(bytes);
            }
            "--seconds" => {
                seconds = val("--seconds")?
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .ok_or("bench gen: --seconds: a number of seconds in (0, 3600]")?;
            }
            "--batch" => {
                batch = val("--batch")?
                    .parse()
                    .ok()
                    .filter(|b| (1..=256).contains(b))
                    .ok_or("bench gen: --batch: 1..256")?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("bench gen: unknown argument '{other}' ({USAGE})")),
        }
    }
    let dev = dev.ok_or_else(|| format!("bench gen: --dev is required ({USAGE})"))?;
    let frame = frame.ok_or_else(|| format!("bench gen: --frame is required ({USAGE})"))?;
    let g = uvs::port::afxdp::xdpgen::Generator::new(&dev, &frame)
        .map_err(|e| format!("bench gen: {e}"))?;
    let (sent, took) = g
        .run(seconds, batch)
        .map_err(|e| format!("bench gen: {e}"))?;
    let secs = took.as_secs_f64();
    println!(
        "offered {sent} frames in {secs:.3} s = {:.0} pps",
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Run a benchmark script in its own process group and wait for it. SIGINT or SIGTERM to uvs
/// (Ctrl-C, `kill`, `timeout`) is passed on to that whole group as SIGTERM, as a terminal's
/// Ctrl-C would be, and uvs then waits for the script, whose EXIT trap deletes what it made.
/// With `tee`, stdout is copied through and also returned. Returns the script's exit status,
/// its stdout (if `tee`) and whether a signal stopped it.
fn run_script(
    cmd: &mut std::process::Command,
    tee: bool,
) -> std::io::Result<(std::process::ExitStatus, String, bool)> {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    use std::sync::atomic::Ordering;
    let stop = uvs::port::wait::install_stop_handler();
    // A closed terminal stops the benchmark as Ctrl-C does (it ran on alone, printing to
    // nobody).
    let hup = uvs::port::wait::install_hup_handler();
    cmd.process_group(0).stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec only prctl, which is async-signal-safe, runs: if uvs dies
    // (SIGKILL), the script is sent SIGTERM and cleans up (it ran on alone).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if tee {
        cmd.stdout(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    let reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                println!("{line}");
                let _ = std::io::stdout().flush();
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    });
    let mut forwarded = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if (stop.load(Ordering::SeqCst) || hup.load(Ordering::SeqCst)) && !forwarded {
            forwarded = true;
            eprintln!("uvs: signal received, stopping the benchmark (its cleanup runs first)");
            // SAFETY: kill takes a process group id and a signal; the group leader is our
            // child, not yet waited for, so its id (the group's) cannot have been reused.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGTERM);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    Ok((status, text, forwarded))
}

/// Whether the `--plot` file can be written: opened for writing (created if missing, never
/// truncated; a file created here is removed again), so a missing or read-only directory, or
/// a directory given as the file, fails before the benchmark starts.
fn plot_path_writable(svg: &std::path::Path) -> Result<(), String> {
    let existed = svg.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(svg)
        .map_err(|e| {
            format!(
                "bench: --plot {}: cannot write it: {e} (checked before the run)",
                svg.display()
            )
        })?;
    if !existed {
        let _ = std::fs::remove_file(svg);
    }
    Ok(())
}

fn plot_table(text: &str, title: &str, svg: &std::path::Path) -> Result<(), String> {
    let t = uvs::observe::plot::first_table(text)
        .ok_or("plot: no table with numbers in the benchmark's output")?;
    uvs::observe::plot::draw(&t, title, svg)?;
    eprintln!("uvs: plot written to {}", svg.display());
    Ok(())
}

fn plot(
    table: &std::path::Path,
    svg: &std::path::Path,
    title: Option<String>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(table).map_err(|e| format!("{}: {e}", table.display()))?;
    let title = title.unwrap_or_else(|| table.display().to_string());
    plot_table(&text, &title, svg)
}
