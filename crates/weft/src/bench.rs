//! `weft bench` and `weft ab`: argument parsing and wiring to the weft-bench crate.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use weft_bench::{LoadSpec, RequestSpec, Target};

/// The load flags `bench` and `ab` share.
#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// Connections to open (with --h2, each carries -m streams).
    #[arg(short = 'c', long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Stop after this many requests.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Stop after this long, e.g. "30s" (default 10s when -n is not given).
    #[arg(short = 'z', long, value_parser = parse_positive_duration)]
    duration: Option<Duration>,
    /// Open loop: send this many requests per second on a fixed schedule, measuring
    /// latency from each request's intended send time. Without it: closed loop.
    #[arg(short = 'q', long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Cleartext HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    h2: bool,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(short = 'm', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    streams: u32,
    /// Load threads, each with its share of the connections.
    #[arg(short = 't', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Request method (default GET, or POST when a body is given).
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// A request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_parser = RequestSpec::parse_header)]
    headers: Vec<(String, String)>,
    /// Request body.
    #[arg(short = 'd', long = "data", conflicts_with = "data_file")]
    data: Option<String>,
    /// Request body read from a file.
    #[arg(short = 'D', long = "data-file")]
    data_file: Option<PathBuf>,
    /// Host header / :authority to send instead of the URL's.
    #[arg(long)]
    host: Option<String>,
    /// The longest one request may take, from its send to its last byte.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    timeout: Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    Csv,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// http://HOST[:PORT]/PATH
    url: String,
    #[command(flatten)]
    load: LoadArgs,
    /// text, json, or csv (the per-second series and a total row).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Output,
    /// Also draw latency over time and the percentile curve into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

impl LoadArgs {
    /// Builds the run; `default_duration` applies when neither -n nor -z is given.
    pub fn spec(&self, url: &str, default_duration: Duration) -> Result<LoadSpec, String> {
        let target = Target::parse(url).map_err(|e| e.to_string())?;
        let body = match (&self.data, &self.data_file) {
            (Some(d), _) => bytes::Bytes::from(d.clone()),
            (None, Some(path)) => std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.into(),
            (None, None) => bytes::Bytes::new(),
        };
        let method = match &self.method {
            Some(m) => m.to_ascii_uppercase(),
            None if self.data.is_some() || self.data_file.is_some() => "POST".to_string(),
            None => "GET".to_string(),
        };
        let request = RequestSpec { method, headers: self.headers.clone(), body, host: self.host.clone() };
        request.check()?;
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(default_duration),
            (d, _) => d,
        };
        Ok(LoadSpec {
            target,
            request,
            connections: self.connections as usize,
            h2: self.h2,
            streams: self.streams as usize,
            threads: self.threads as usize,
            requests: self.requests,
            duration,
            rate: self.rate,
            timeout: self.timeout,
        })
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = weft_config::duration::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("the rate must be a positive number of requests per second".into()),
        Err(_) => Err(format!("{s:?} is not a number of requests per second")),
    }
}

pub fn bench(args: BenchArgs) -> ExitCode {
    let spec = match args.load.spec(&args.url, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let live = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let mut progress = weft_bench::progress::Progress::default();
    let mut on_second = |s: &weft_bench::record::Second, spec: &LoadSpec| {
        if live {
            progress.draw(s, spec);
        }
    };
    let outcome = match weft_bench::run(&spec, &mut on_second) {
        Ok(o) => o,
        Err(e) => return fail(&e.to_string()),
    };
    if live {
        weft_bench::progress::Progress::finish();
    }
    let report = weft_bench::Report::new(&args.url, &spec, &outcome);
    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, weft_bench::plot::svg(&report)) {
            return fail(&format!("cannot write {}: {e}", path.display()));
        }
    }
    match args.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!("{}", report.json()),
        Output::Csv => print!("{}", report.csv()),
    }
    ExitCode::SUCCESS
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

#[derive(clap::Args)]
pub struct AbArgs {
    /// The baseline, http://HOST[:PORT]/PATH
    #[arg(long = "a")]
    a: String,
    /// The candidate compared with A.
    #[arg(long = "b")]
    b: String,
    /// Rounds per target, run A B A B … (at least 2).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=1000))]
    rounds: u32,
    /// Exit 3 when B is significantly worse than A by more than PCT % at p99 or in rps.
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    fail_if_worse: Option<f64>,
    #[command(flatten)]
    load: LoadArgs,
    /// text or json.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: AbOutput,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AbOutput {
    Text,
    Json,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage (e.g. 5)")),
    }
}

/// Rounds of 5 s when neither -n nor -z says otherwise.
const AB_ROUND: Duration = Duration::from_secs(5);

pub fn ab(args: AbArgs) -> ExitCode {
    let specs = args.load.spec(&args.a, AB_ROUND).and_then(|a| Ok((a, args.load.spec(&args.b, AB_ROUND)?)));
    let (a, b) = match specs {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let live = std::io::stderr().is_terminal();
    let rounds = args.rounds as usize;
    let mut on_round = |round: usize, name: char, r: &weft_bench::Report| {
        if live {
            eprintln!(
                "round {round}/{rounds} {name}: {:>10.0} rps  p50 {:>9}  p99 {:>9}  errors {}",
                r.rps,
                weft_bench::report::dur(r.latency_us.p50),
                weft_bench::report::dur(r.latency_us.p99),
                r.errors
            );
        }
    };
    let (ra, rb) = match weft_bench::ab::run(&a, &b, rounds, &mut on_round) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let report = weft_bench::ab::AbReport::new((&args.a, &args.b), a.mode(), ra, rb, args.fail_if_worse);
    match args.output {
        AbOutput::Text => print!("{}", report.text()),
        AbOutput::Json => println!("{}", report.json()),
    }
    if report.failed_on.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}
