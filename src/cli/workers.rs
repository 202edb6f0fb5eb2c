//! `debug workers` as buildctl prints it: the table, `-v` (every label and
//! GC rule) and `--format` (`json` / `{{json .}}`), laid out the way Go's
//! tabwriter lays out buildctl's, so scripts that read one read the other.

use clap::Args;

use super::GlobalArgs;
use crate::client::{GcRule, Worker};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Args)]
pub struct WorkersArgs {
    /// Every label, the BuildKit version and the GC policy of each worker
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Output format: json (or its Go template spelling '{{json .}}')
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// containerd-style filter on the workers, e.g. 'labels."org.mobyproject.buildkit.worker.executor"==oci' (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
}

/// Whether `format` asks for the workers as JSON.
fn is_json_format(format: &str) -> bool {
    let compact: String = format.chars().filter(|c| !c.is_whitespace()).collect();
    compact == "json" || compact == "{{json.}}"
}

pub async fn run(global: &GlobalArgs, args: &WorkersArgs) -> Result<()> {
    if let Some(f) = &args.format {
        if !is_json_format(f) {
            return Err(Error::Usage(format!(
                "--format {:?} is not supported: bkd knows json (or '{{{{json .}}}}'); pipe it to jq for more",
                crate::text::escape_str(f)
            )));
        }
    }
    let filters = args.filters.clone();
    let workers = super::daemon::run_on_daemon(global, &Default::default(), |d| {
        let filters = filters.clone();
        async move { d.workers_matching(filters).await }
    })
    .await?;
    let text = if args.format.is_some() {
        format!("{}\n", json(&workers))
    } else if args.verbose {
        tabwrite(&verbose(&workers))
    } else {
        let mut text = tabwrite(&table(&workers));
        if global.debug {
            for w in &workers {
                for (k, v) in &w.labels {
                    text += &format!("  {}={}\n", esc(k), esc(v));
                }
            }
        }
        text
    };
    super::print_stdout(&text)
}

/// What the daemon says, kept to its line and its cell: a newline or tab in
/// a worker's id or label cannot start a line or a column of its own.
fn esc(text: &str) -> String {
    crate::text::escape_str(text)
}

fn table(workers: &[Worker]) -> String {
    let mut out = String::from("ID\tPLATFORMS\n");
    for w in workers {
        out += &format!("{}\t{}\n", esc(&w.id), esc(&w.platforms.join(",")));
    }
    out
}

fn verbose(workers: &[Worker]) -> String {
    let mut out = String::new();
    for w in workers {
        out += &format!("ID:\t{}\n", esc(&w.id));
        out += &format!("Platforms:\t{}\n", esc(&w.platforms.join(",")));
        let v = &w.version;
        out += &format!(
            "BuildKit:\t{} {} {}\n",
            esc(&v.package),
            esc(&v.version),
            esc(&v.revision)
        );
        if !v.dockerfile_version.is_empty() {
            out += &format!("Dockerfile:\t{}\n", esc(&v.dockerfile_version));
        }
        out += "Labels:\n";
        for (k, v) in &w.labels {
            out += &format!("\t{}:\t{}\n", esc(k), esc(v));
        }
        for (i, rule) in w.gc_policy.iter().enumerate() {
            out += &gc_rule(i, rule);
        }
        out += "\n";
    }
    out
}

fn gc_rule(i: usize, rule: &GcRule) -> String {
    let mut out = format!("GC Policy rule#{i}:\n\tAll:\t{}\n", rule.all);
    if !rule.filters.is_empty() {
        out += &format!("\tFilters:\t{}\n", esc(&rule.filters.join(" ")));
    }
    if rule.keep_duration > 0 {
        out += &format!("\tKeep duration:\t{}\n", go_duration(rule.keep_duration));
    }
    if rule.reserved_space > 0 {
        out += &format!(
            "\tReserved space:\t{}\n",
            decimal_bytes(rule.reserved_space)
        );
    }
    if rule.min_free_space > 0 {
        out += &format!(
            "\tMinimum free space:\t{}\n",
            decimal_bytes(rule.min_free_space)
        );
    }
    if rule.max_used_space > 0 {
        out += &format!(
            "\tMaximum used space:\t{}\n",
            decimal_bytes(rule.max_used_space)
        );
    }
    out
}

/// Nanoseconds as Go's `time.Duration` prints them: `48h0m0s`, `1.5s`,
/// `250ms`.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", trim_fraction(ns, div));
    }
    let secs = ns / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = trim_fraction(ns % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// `n / div` with the fraction's trailing zeros (and point) dropped.
fn trim_fraction(n: u64, div: u64) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = div.to_string().len() - 1;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Bytes in decimal units as buildctl prints them (`512MB`, `10GB`).
fn decimal_bytes(n: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v.abs() >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    // Go's %g: the shortest form that reads back the same.
    format!("{v}{}", UNITS[unit])
}

/// buildctl's WorkerInfo as its `{{json .}}` encodes it, field for field.
#[derive(serde::Serialize)]
struct WorkerJson<'a> {
    id: &'a str,
    labels: std::collections::BTreeMap<&'a str, &'a str>,
    platforms: Vec<PlatformJson<'a>>,
    #[serde(rename = "gcPolicy")]
    gc_policy: Vec<GcJson<'a>>,
    #[serde(rename = "buildkitVersion")]
    buildkit_version: VersionJson<'a>,
    #[serde(rename = "cdiDevices")]
    cdi_devices: Option<()>,
}

#[derive(serde::Serialize)]
struct PlatformJson<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    variant: &'a str,
}

#[derive(serde::Serialize)]
struct GcJson<'a> {
    all: bool,
    filter: Option<&'a [String]>,
    #[serde(rename = "keepDuration")]
    keep_duration: i64,
    #[serde(rename = "reservedSpace")]
    reserved_space: i64,
    #[serde(rename = "maxUsedSpace")]
    max_used_space: i64,
    #[serde(rename = "minFreeSpace")]
    min_free_space: i64,
}

#[derive(serde::Serialize)]
struct VersionJson<'a> {
    package: &'a str,
    version: &'a str,
    revision: &'a str,
    #[serde(rename = "dockerfileVersion", skip_serializing_if = "str::is_empty")]
    dockerfile_version: &'a str,
}

/// The workers as buildctl's `{{json .}}` encodes its WorkerInfo list.
fn json(workers: &[Worker]) -> String {
    let list: Vec<WorkerJson> = workers
        .iter()
        .map(|w| WorkerJson {
            id: &w.id,
            labels: w
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            platforms: w
                .platform_parts
                .iter()
                .map(|(os, arch, variant)| PlatformJson {
                    architecture: arch,
                    os,
                    variant,
                })
                .collect(),
            gc_policy: w
                .gc_policy
                .iter()
                .map(|g| GcJson {
                    all: g.all,
                    filter: (!g.filters.is_empty()).then_some(g.filters.as_slice()),
                    keep_duration: g.keep_duration,
                    reserved_space: g.reserved_space,
                    max_used_space: g.max_used_space,
                    min_free_space: g.min_free_space,
                })
                .collect(),
            buildkit_version: VersionJson {
                package: &w.version.package,
                version: &w.version.version,
                revision: &w.version.revision,
                dockerfile_version: &w.version.dockerfile_version,
            },
            cdi_devices: None,
        })
        .collect();
    // Plain data with string keys: encoding cannot fail.
    serde_json::to_string(&list).unwrap_or_default()
}

/// Go's text/tabwriter with buildctl's settings (minwidth 1, tabwidth 8,
/// padding 1, tabs as padding): cells end at a tab; a column's width is set
/// per block of consecutive lines that have that column.
pub fn tabwrite(text: &str) -> String {
    const TABWIDTH: usize = 8;
    let lines: Vec<Vec<&str>> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .map(|l| l.split('\t').collect())
        .collect();
    let mut out = String::new();
    let mut widths = Vec::new();
    format_block(&lines, 0, lines.len(), &mut widths, &mut out, TABWIDTH);
    out
}

fn cell_width(cell: &str) -> usize {
    cell.chars().count()
}

fn format_block(
    lines: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
    tabwidth: usize,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out, tabwidth);
        line0 = this;
        let mut width = 1;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(cell_width(lines[this][column]) + 1);
            this += 1;
        }
        widths.push(width);
        format_block(lines, line0, this, widths, out, tabwidth);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out, tabwidth);
}

fn write_lines(
    lines: &[Vec<&str>],
    from: usize,
    to: usize,
    widths: &[usize],
    out: &mut String,
    tabwidth: usize,
) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() && j + 1 < line.len() {
                let cellw = widths[j].div_ceil(tabwidth) * tabwidth;
                let pad = cellw - cell_width(cell);
                out.push_str(&"\t".repeat(pad.div_ceil(tabwidth)));
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_like_go() {
        assert_eq!(go_duration(172_800_000_000_000), "48h0m0s");
        assert_eq!(go_duration(5_184_000_000_000_000), "1440h0m0s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(decimal_bytes(512_000_000), "512MB");
        assert_eq!(decimal_bytes(10_000_000_000), "10GB");
        assert_eq!(decimal_bytes(1_500), "1.5kB");
    }

    #[test]
    fn tab_layout_like_gos_tabwriter() {
        // Cells padded with tabs to the block's widest cell + 1, rounded up
        // to the tab width; a line's last cell is not a column.
        assert_eq!(
            tabwrite("ID\tPLATFORMS\nabcdefghijklmnopqrstuvwxy\tlinux/amd64\n"),
            "ID\t\t\t\tPLATFORMS\nabcdefghijklmnopqrstuvwxy\tlinux/amd64\n"
        );
        assert_eq!(
            tabwrite("Labels:\n\ta.b:\tx\n\tlonger.key.name:\ty\nGC:\n"),
            "Labels:\n\ta.b:\t\t\tx\n\tlonger.key.name:\ty\nGC:\n"
        );
        assert!(is_json_format("{{ json . }}") && is_json_format("json"));
        assert!(!is_json_format("{{.ID}}"));
    }
}
