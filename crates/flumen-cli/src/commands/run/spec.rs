//! A pipeline file: read, `--set` overrides applied, checked, and turned into a [`Plan`] of
//! stages. Every error names the file's line and, inside `[[steps]]`, the step (numbered
//! from 1) and its kind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flumen_runtime::Guarantee;
use flumen_runtime::time::parse_duration;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::aggs::{Agg, Aggs, Func};
use super::expr::Expr;
use super::value::{Case, Condition, Kind, Op, Path, Step, Tap};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    application_id: String,
    workers: Option<usize>,
    guarantee: Option<String>,
    source: RawSource,
    #[serde(default)]
    steps: Vec<RawStep>,
    sink: RawTopic,
    late: Option<RawTopic>,
    dead_letter: Option<RawTopic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    topics: Option<Vec<String>>,
    pattern: Option<String>,
    format: Option<String>,
    timestamp: Option<String>,
    max_out_of_orderness: Option<String>,
    idleness: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    topic: String,
    format: Option<String>,
    /// Shows the topic's last records on the monitoring page (`monitor.topics`).
    #[serde(default)]
    monitor: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStep {
    kind: String,
    path: Option<String>,
    op: Option<String>,
    value: Option<toml::Value>,
    regex: Option<String>,
    fields: Option<Vec<String>>,
    rename: Option<BTreeMap<String, String>>,
    set: Option<toml::Table>,
    upper: Option<toml::Value>,
    lower: Option<toml::Value>,
    name: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    size: Option<String>,
    slide: Option<String>,
    gap: Option<String>,
    time: Option<String>,
    allowed_lateness: Option<String>,
    aggregations: Option<Vec<RawAgg>>,
    key_as: Option<String>,
    table: Option<String>,
    format: Option<String>,
    #[serde(rename = "as")]
    as_: Option<String>,
    topic: Option<String>,
    compute: Option<BTreeMap<String, String>>,
    #[serde(rename = "where")]
    when: Option<toml::Value>,
    extract: Option<String>,
    monitor: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgg {
    name: Option<String>,
    #[serde(rename = "fn")]
    func: String,
    field: Option<String>,
    quantiles: Option<Vec<f64>>,
    names: Option<Vec<String>>,
    n: Option<usize>,
    by: Option<String>,
    #[serde(rename = "where")]
    when: Option<RawCondition>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    path: Option<String>,
    op: Option<String>,
    value: Option<toml::Value>,
    regex: Option<String>,
}

/// Which topics the source reads.
#[derive(Clone, Debug)]
pub enum Topics {
    List(Vec<String>),
    Pattern(String),
}

/// The source.
#[derive(Clone, Debug)]
pub struct Source {
    pub topics: Topics,
    pub kind: Kind,
    pub timestamp: Option<Path>,
    pub max_out_of_orderness: Option<Duration>,
    pub idleness: Option<Duration>,
}

/// Window kinds.
#[derive(Clone, Copy, Debug)]
pub enum WindowKind {
    Tumbling(Duration),
    Sliding(Duration, Duration),
    Session(Duration),
}

/// A window and what it aggregates.
#[derive(Clone, Debug)]
pub struct Window {
    pub kind: WindowKind,
    pub processing_time: bool,
    pub allowed_lateness: Duration,
    pub aggs: Aggs,
    pub key_as: String,
    /// Whether records too late for it go to `[late]` (the first window only: `[late]`
    /// holds input records).
    pub late: bool,
}

/// A stream–table join.
#[derive(Clone, Debug)]
pub struct Join {
    pub table: String,
    pub kind: Kind,
    pub left: bool,
    pub field: String,
}

/// One stage (sub-topology): stateless steps, at most one join, at most one window with its
/// aggregation, and either a `key_by` into the next stage or the sink.
#[derive(Clone, Debug, Default)]
pub struct Stage {
    pub pre: Vec<Step>,
    pub join: Option<Join>,
    pub mid: Vec<Step>,
    pub window: Option<Window>,
    pub post: Vec<Step>,
    pub key_by: Option<(String, Path)>,
}

/// A checked pipeline file.
#[derive(Clone, Debug)]
pub struct Plan {
    pub application_id: String,
    pub workers: Option<usize>,
    pub guarantee: Guarantee,
    pub source: Source,
    pub stages: Vec<Stage>,
    pub sink: (String, Kind),
    pub late: Option<(String, Kind)>,
    pub dead_letter: Option<String>,
    /// Output topics marked `monitor = true`: their last records are shown on the
    /// monitoring page (the runtime's `monitor.topics`).
    pub monitor: Vec<String>,
}

/// Whether `file` is YAML (`.yaml`, `.yml`); anything else is TOML.
pub fn is_yaml(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Where the text's lines are: which step each line belongs to.
struct Lines<'t> {
    file: &'t str,
    text: &'t str,
    /// YAML (`key: value`, steps as a block sequence) rather than TOML.
    yaml: bool,
    /// For each line (0-based), the step (0-based) it is in.
    step_of_line: Vec<Option<usize>>,
    /// The first line (1-based) of each step.
    step_line: Vec<usize>,
    kinds: Vec<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether `line` (trimmed, and without a YAML sequence dash) sets `key`.
fn sets_key(line: &str, key: &str, yaml: bool) -> bool {
    let line = line.trim_start();
    let line = if yaml {
        line.strip_prefix("- ").unwrap_or(line).trim_start()
    } else {
        line
    };
    let sep = if yaml { ':' } else { '=' };
    line.strip_prefix(key)
        .is_some_and(|r| r.trim_start().starts_with(sep))
}

impl<'t> Lines<'t> {
    fn new(file: &'t str, text: &'t str, yaml: bool, doc: Option<&toml::Table>) -> Self {
        let (step_of_line, step_line) = if yaml {
            Self::yaml_steps(text)
        } else {
            Self::toml_steps(text)
        };
        let kinds = doc
            .and_then(|t| t.get("steps").and_then(|s| s.as_array()).cloned())
            .map(|a| {
                a.iter()
                    .map(|s| {
                        s.get("kind")
                            .and_then(|k| k.as_str())
                            .unwrap_or("?")
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Lines {
            file,
            text,
            yaml,
            step_of_line,
            step_line,
            kinds,
        }
    }

    fn toml_steps(text: &str) -> (Vec<Option<usize>>, Vec<usize>) {
        let mut step_of_line = Vec::new();
        let mut step_line = Vec::new();
        let mut current = None;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("[[steps]]") {
                step_line.push(i + 1);
                current = Some(step_line.len() - 1);
            } else if t.starts_with('[') && !t.starts_with("[steps.") && !t.starts_with("[[steps.")
            {
                current = None;
            }
            step_of_line.push(current);
        }
        (step_of_line, step_line)
    }

    /// Steps are the items of the block sequence under the top-level `steps:` key.
    fn yaml_steps(text: &str) -> (Vec<Option<usize>>, Vec<usize>) {
        let mut step_of_line = Vec::new();
        let mut step_line = Vec::new();
        let mut current = None;
        let mut in_steps = false;
        let mut item_indent = None;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            let blank = t.is_empty() || t.starts_with('#');
            if !blank {
                let at = indent(line);
                let dash = t == "-" || t.starts_with("- ");
                if at == 0 && !dash {
                    in_steps = t.starts_with("steps:");
                    item_indent = None;
                    current = None;
                } else if in_steps && dash && item_indent.is_none_or(|n| n == at) {
                    item_indent = Some(at);
                    step_line.push(i + 1);
                    current = Some(step_line.len() - 1);
                }
            }
            step_of_line.push(current);
        }
        (step_of_line, step_line)
    }

    fn step_name(&self, i: usize) -> String {
        match self.kinds.get(i) {
            Some(k) => format!("step {} ({k})", i + 1),
            None => format!("step {}", i + 1),
        }
    }

    /// An error at byte `offset`.
    fn at_offset(&self, offset: usize, message: &str) -> String {
        let offset = offset.min(self.text.len());
        let line = self.text[..offset].matches('\n').count() + 1;
        match self.step_of_line.get(line - 1).copied().flatten() {
            Some(i) => format!("{}:{line}: {}: {message}", self.file, self.step_name(i)),
            None => format!("{}:{line}: {message}", self.file),
        }
    }

    /// An error about step `i`, at its `key` line (or its first line).
    fn in_step(&self, i: usize, key: &str, message: &str) -> String {
        let start = self.step_line.get(i).copied().unwrap_or(1);
        let end = self.step_line.get(i + 1).copied().unwrap_or(usize::MAX);
        // A YAML step's first line holds a key too (`- kind: map`).
        let skip = if self.yaml { start - 1 } else { start };
        let line = self
            .text
            .lines()
            .enumerate()
            .skip(skip)
            .take_while(|(n, _)| n + 1 < end && self.step_of_line.get(*n) == Some(&Some(i)))
            .find(|(_, l)| sets_key(l, key, self.yaml))
            .map_or(start, |(n, _)| n + 1);
        format!("{}:{line}: {}: {message}", self.file, self.step_name(i))
    }

    /// An error about a top-level key (`source.format`).
    fn at_key(&self, table: &str, key: &str, message: &str) -> String {
        let mut in_table = table.is_empty();
        for (n, l) in self.text.lines().enumerate() {
            let t = l.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let top = if self.yaml {
                indent(l) == 0
            } else {
                t.starts_with('[')
            };
            if top {
                in_table = if self.yaml {
                    t.strip_prefix(table)
                        .is_some_and(|r| r.trim_start().starts_with(':'))
                } else {
                    t == format!("[{table}]")
                };
                if self.yaml && table.is_empty() && sets_key(l, key, true) {
                    return format!("{}:{}: {message}", self.file, n + 1);
                }
            } else if in_table && sets_key(l, key, self.yaml) {
                return format!("{}:{}: {message}", self.file, n + 1);
            }
        }
        format!("{}: {message}", self.file)
    }
}

fn json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn kind_of(s: Option<&str>, default: Kind) -> Result<Kind, String> {
    match s {
        None => Ok(default),
        Some(s) => {
            Kind::parse(s).ok_or_else(|| format!("format {s:?}: expected json, string or bytes"))
        }
    }
}

/// The keys each step kind takes besides `kind`.
fn allowed(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "filter" => &["path", "op", "value", "regex"],
        "map" => &[
            "compute", "fields", "rename", "set", "upper", "lower", "extract",
        ],
        "split" => &["path"],
        "key_by" => &["path", "name"],
        "window" => &["type", "size", "slide", "gap", "time", "allowed_lateness"],
        "aggregate" => &["aggregations", "key_as"],
        "join" => &["table", "type", "as", "format"],
        "also_to" => &["topic", "format", "compute", "where", "fields", "monitor"],
        _ => return None,
    })
}

/// "a" or "an" before a step kind.
fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn present(s: &RawStep) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut add = |k: &'static str, p: bool| {
        if p {
            keys.push(k);
        }
    };
    add("path", s.path.is_some());
    add("op", s.op.is_some());
    add("value", s.value.is_some());
    add("regex", s.regex.is_some());
    add("fields", s.fields.is_some());
    add("rename", s.rename.is_some());
    add("set", s.set.is_some());
    add("upper", s.upper.is_some());
    add("lower", s.lower.is_some());
    add("name", s.name.is_some());
    add("type", s.type_.is_some());
    add("size", s.size.is_some());
    add("slide", s.slide.is_some());
    add("gap", s.gap.is_some());
    add("time", s.time.is_some());
    add("allowed_lateness", s.allowed_lateness.is_some());
    add("aggregations", s.aggregations.is_some());
    add("key_as", s.key_as.is_some());
    add("table", s.table.is_some());
    add("format", s.format.is_some());
    add("as", s.as_.is_some());
    add("topic", s.topic.is_some());
    add("compute", s.compute.is_some());
    add("where", s.when.is_some());
    add("extract", s.extract.is_some());
    keys
}

fn condition(
    path: Option<&str>,
    op: Option<&str>,
    value: Option<&toml::Value>,
    regex: Option<&str>,
) -> Result<Condition, (&'static str, String)> {
    let path = Path::parse(path.unwrap_or(""));
    match (op, value, regex) {
        (None, None, Some(r)) => Regex::new(r)
            .map(|regex| Condition::Regex { path, regex })
            .map_err(|e| ("regex", format!("invalid regex: {e}"))),
        (Some(op), Some(value), None) => {
            let op = Op::parse(op)
                .ok_or_else(|| ("op", format!("op {op:?}: expected one of == != < <= > >=")))?;
            Ok(Condition::Compare {
                path,
                op,
                value: json(value),
            })
        }
        _ => Err((
            "kind",
            "expected `op` and `value` (a comparison), or `regex`".to_owned(),
        )),
    }
}

fn case_step(v: &toml::Value, case: Case) -> Result<Step, String> {
    match v {
        toml::Value::Boolean(true) => Ok(Step::Case(Path::default(), case)),
        toml::Value::String(p) => Ok(Step::Case(Path::parse(p), case)),
        _ => Err("expected a field path, or true for the whole value".to_owned()),
    }
}

/// `compute = { name = "expression", .. }`.
fn computed(fields: &BTreeMap<String, String>) -> Result<Vec<(String, Expr)>, String> {
    fields
        .iter()
        .map(|(name, e)| {
            Ok((
                name.clone(),
                Expr::parse(e).map_err(|m| format!("compute {name}: {m}"))?,
            ))
        })
        .collect()
}

/// `where = { path, op, value }` (or `regex`), or a list of them that must all hold.
fn conditions(v: &toml::Value) -> Result<Vec<Condition>, String> {
    let list = match v {
        toml::Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    list.into_iter()
        .map(|c| {
            if !c.is_table() {
                return Err(format!(
                    "where: {} is not a condition: expected {{ path = \"..\", op = \">=\", value = .. }} (or regex = \"..\"), or a list of them",
                    c.type_str()
                ));
            }
            let c: RawCondition = c
                .try_into()
                .map_err(|e: toml::de::Error| format!("where: {}", e.message().trim_end()))?;
            condition(
                c.path.as_deref(),
                c.op.as_deref(),
                c.value.as_ref(),
                c.regex.as_deref(),
            )
            .map_err(|(_, m)| format!("where: {m}"))
        })
        .collect()
}

fn aggregation(a: &RawAgg) -> Result<Agg, String> {
    let field = Path::parse(a.field.as_deref().unwrap_or(""));
    let needs_field = |what: &str| {
        if a.field.is_none() {
            Err(format!("`{what}` needs a `field`"))
        } else {
            Ok(())
        }
    };
    let func = match a.func.as_str() {
        "count" => Func::Count,
        "sum" => {
            needs_field("sum")?;
            Func::Sum
        }
        "min" => {
            needs_field("min")?;
            Func::Min
        }
        "max" => {
            needs_field("max")?;
            Func::Max
        }
        "avg" => {
            needs_field("avg")?;
            Func::avg()
        }
        "distinct_count" => {
            needs_field("distinct_count")?;
            Agg::distinct()
        }
        "percentiles" => {
            needs_field("percentiles")?;
            let q = a
                .quantiles
                .clone()
                .ok_or("`percentiles` needs `quantiles = [0.5, 0.99]`")?;
            if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
                return Err(format!("quantile {bad} is not in [0, 1]"));
            }
            let names = a.names.clone().unwrap_or_default();
            if !names.is_empty() && names.len() != q.len() {
                return Err(format!(
                    "{} names for {} quantiles: expected one name per quantile",
                    names.len(),
                    q.len()
                ));
            }
            if names.is_empty() && a.name.is_none() {
                return Err("`percentiles` needs a `name` or `names`".to_owned());
            }
            Agg::percentiles(&q, names)
        }
        "top_n" => {
            needs_field("top_n")?;
            Func::TopN {
                n: a.n.ok_or("`top_n` needs `n`")?,
                by: a.by.as_deref().map(Path::parse),
            }
        }
        other => {
            return Err(format!(
                "fn {other:?}: expected count, sum, min, max, avg, distinct_count, percentiles or top_n"
            ));
        }
    };
    let when = match &a.when {
        None => None,
        Some(c) => Some(
            condition(
                c.path.as_deref(),
                c.op.as_deref(),
                c.value.as_ref(),
                c.regex.as_deref(),
            )
            .map_err(|(_, m)| format!("where: {m}"))?,
        ),
    };
    let name = match (&a.name, &func) {
        (Some(n), _) => n.clone(),
        (None, Func::Percentiles(..)) => String::new(),
        (None, _) => return Err(format!("`{}` needs a `name`", a.func)),
    };
    Ok(Agg {
        name,
        func,
        field,
        when,
    })
}

fn duration_in(
    lines: &Lines<'_>,
    i: usize,
    key: &str,
    v: Option<&String>,
) -> Result<Option<Duration>, String> {
    v.map(|s| parse_duration(s).map_err(|m| lines.in_step(i, key, &m)))
        .transpose()
}

/// Names a step's unknown kind or a key its kind does not take, before the typed parse
/// (whose message would list every key of every kind).
fn check_step_keys(lines: &Lines<'_>, doc: &toml::Table) -> Result<(), String> {
    let Some(steps) = doc.get("steps").and_then(|s| s.as_array()) else {
        return Ok(());
    };
    for (i, step) in steps.iter().enumerate() {
        let Some(table) = step.as_table() else {
            continue;
        };
        let Some(kind) = table.get("kind").and_then(|k| k.as_str()) else {
            return Err(lines.in_step(
                i,
                "kind",
                "expected `kind` = filter, map, split, also_to, key_by, window, aggregate or join",
            ));
        };
        let Some(keys) = allowed(kind) else {
            return Err(lines.in_step(
                i,
                "kind",
                &format!(
                    "unknown kind {kind:?}: expected filter, map, split, also_to, key_by, window, aggregate or join"
                ),
            ));
        };
        if let Some(k) = table
            .keys()
            .find(|k| k.as_str() != "kind" && !keys.contains(&k.as_str()))
        {
            return Err(lines.in_step(
                i,
                k,
                &format!(
                    "`{k}` is not a key of {} {kind} step (expected {})",
                    article(kind),
                    keys.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The run of stateless steps of `stage` that `phase` is in (see [`parse`]).
fn run(stage: &mut Stage, phase: u8) -> &mut Vec<Step> {
    match phase {
        0 => &mut stage.pre,
        1 => &mut stage.mid,
        _ => &mut stage.post,
    }
}

/// Reads a pipeline file's text (overrides applied) into a plan.
pub fn parse(file: &str, text: &str) -> Result<Plan, String> {
    parse_as(file, text, is_yaml(file))
}

/// [`parse`], YAML or TOML as `yaml` says (`file` is only shown in errors).
pub fn parse_as(file: &str, text: &str, yaml: bool) -> Result<Plan, String> {
    let doc: Option<toml::Table> = if yaml {
        serde_yaml_ng::from_str(text).ok()
    } else {
        toml::from_str(text).ok()
    };
    let lines = Lines::new(file, text, yaml, doc.as_ref());
    if let Some(doc) = &doc {
        check_step_keys(&lines, doc)?;
    }
    let raw: RawFile = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| {
            // The message without serde_yaml's " at line L column C": the line comes first.
            let full = e.to_string();
            let message = full.split(" at line ").next().unwrap_or(&full);
            match e.location() {
                Some(at) => lines.at_offset(at.index(), message),
                None => format!("{file}: {message}"),
            }
        })?
    } else {
        toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => lines.at_offset(span.start, e.message()),
            None => format!("{file}: {}", e.message()),
        })?
    };
    let guarantee = match raw.guarantee.as_deref() {
        None => Guarantee::AtLeastOnce,
        Some(g) => g.parse::<Guarantee>().map_err(|_| {
            lines.at_key(
                "",
                "guarantee",
                &format!("guarantee {g:?}: expected \"at_least_once\" or \"exactly_once\""),
            )
        })?,
    };
    if raw.workers == Some(0) {
        return Err(lines.at_key("", "workers", "workers must be at least 1"));
    }
    let s = &raw.source;
    let topics = match (&s.topics, &s.pattern) {
        (Some(t), None) if !t.is_empty() => Topics::List(t.clone()),
        (None, Some(p)) => {
            Regex::new(p).map_err(|e| lines.at_key("source", "pattern", &e.to_string()))?;
            Topics::Pattern(p.clone())
        }
        _ => {
            return Err(lines.at_key(
                "source",
                "topics",
                "[source] needs `topics = [..]` (not empty) or `pattern`, not both",
            ));
        }
    };
    let kind = kind_of(s.format.as_deref(), Kind::Json)
        .map_err(|m| lines.at_key("source", "format", &m))?;
    let timestamp = match s.timestamp.as_deref() {
        None | Some("record") => None,
        Some(field) if kind == Kind::Json => Some(Path::parse(field)),
        Some(_) => {
            return Err(lines.at_key(
                "source",
                "timestamp",
                "a timestamp field needs format = \"json\"; use \"record\" for the record's time",
            ));
        }
    };
    let dur = |key: &str, v: &Option<String>| {
        v.as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| lines.at_key("source", key, &m))
    };
    let source = Source {
        topics,
        kind,
        timestamp,
        max_out_of_orderness: dur("max_out_of_orderness", &s.max_out_of_orderness)?,
        idleness: dur("idleness", &s.idleness)?,
    };

    let mut stages = vec![Stage::default()];
    let mut monitor: Vec<String> = Vec::new();
    // 0: before a join or window, 1: after a join, 2: after a window's aggregate.
    let mut phase: u8 = 0;
    let mut open_window: Option<(usize, WindowKind, bool, Duration)> = None;
    let mut windows = 0;
    for (i, st) in raw.steps.iter().enumerate() {
        let Some(keys) = allowed(&st.kind) else {
            return Err(lines.in_step(
                i,
                "kind",
                &format!(
                    "unknown kind {:?}: expected filter, map, split, also_to, key_by, window, aggregate or join",
                    st.kind
                ),
            ));
        };
        if let Some(k) = present(st).into_iter().find(|k| !keys.contains(k)) {
            return Err(lines.in_step(
                i,
                k,
                &format!(
                    "`{k}` is not a key of {} {} step (expected {})",
                    article(&st.kind),
                    st.kind,
                    keys.join(", ")
                ),
            ));
        }
        if open_window.is_some() && st.kind != "aggregate" {
            return Err(lines.in_step(
                i,
                "kind",
                "expected an aggregate step right after the window step",
            ));
        }
        let stage = stages.last_mut().expect("one stage at least");
        let stateless = |stage: &mut Stage, step: Step| run(stage, phase).push(step);
        match st.kind.as_str() {
            "filter" => {
                let c = condition(
                    st.path.as_deref(),
                    st.op.as_deref(),
                    st.value.as_ref(),
                    st.regex.as_deref(),
                )
                .map_err(|(k, m)| lines.in_step(i, k, &m))?;
                stateless(stage, Step::Filter(c));
            }
            "map" => {
                let mut any = false;
                if let Some(c) = &st.compute {
                    let c = computed(c).map_err(|m| lines.in_step(i, "compute", &m))?;
                    stateless(stage, Step::Compute(c));
                    any = true;
                }
                if let Some(f) = &st.fields {
                    stateless(stage, Step::Project(f.clone()));
                    any = true;
                }
                if let Some(r) = &st.rename {
                    let pairs = r.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
                    stateless(stage, Step::Rename(pairs));
                    any = true;
                }
                if let Some(s) = &st.set {
                    let pairs = s.iter().map(|(k, v)| (k.clone(), json(v))).collect();
                    stateless(stage, Step::Set(pairs));
                    any = true;
                }
                for (key, v, case) in [
                    ("upper", &st.upper, Case::Upper),
                    ("lower", &st.lower, Case::Lower),
                ] {
                    if let Some(v) = v {
                        let step = case_step(v, case).map_err(|m| lines.in_step(i, key, &m))?;
                        stateless(stage, step);
                        any = true;
                    }
                }
                if let Some(p) = &st.extract {
                    stateless(stage, Step::Extract(Path::parse(p)));
                    any = true;
                }
                if !any {
                    return Err(lines.in_step(
                        i,
                        "kind",
                        "expected at least one of compute, fields, rename, set, upper, lower, extract",
                    ));
                }
            }
            "also_to" => {
                let topic = st.topic.clone().ok_or_else(|| {
                    lines.in_step(i, "kind", "expected `topic` (where the copies go)")
                })?;
                if st.monitor == Some(true) && !monitor.contains(&topic) {
                    monitor.push(topic.clone());
                }
                let kind = kind_of(st.format.as_deref(), Kind::Json)
                    .map_err(|m| lines.in_step(i, "format", &m))?;
                let compute = match &st.compute {
                    Some(c) => computed(c).map_err(|m| lines.in_step(i, "compute", &m))?,
                    None => Vec::new(),
                };
                let when = match &st.when {
                    Some(w) => conditions(w).map_err(|m| lines.in_step(i, "where", &m))?,
                    None => Vec::new(),
                };
                let slot = run(stage, phase)
                    .iter()
                    .filter(|s| matches!(s, Step::Tap(_)))
                    .count();
                stateless(
                    stage,
                    Step::Tap(Arc::new(Tap {
                        slot,
                        topic,
                        kind,
                        compute,
                        when,
                        fields: st.fields.clone(),
                    })),
                );
            }
            "split" => stateless(
                stage,
                Step::Split(Path::parse(st.path.as_deref().unwrap_or(""))),
            ),
            "key_by" => {
                let path = st
                    .path
                    .as_deref()
                    .ok_or_else(|| lines.in_step(i, "kind", "expected `path` (the new key)"))?;
                let name = st.name.clone().unwrap_or_else(|| {
                    let p: String = path
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                                c
                            } else {
                                '-'
                            }
                        })
                        .collect();
                    format!("by-{}", p.trim_matches('-'))
                });
                stage.key_by = Some((name, Path::parse(path)));
                stages.push(Stage::default());
                phase = 0;
            }
            "join" => {
                if phase != 0 {
                    return Err(lines.in_step(
                        i,
                        "kind",
                        "one join per stage, before its window: add a key_by before this join",
                    ));
                }
                let table = st
                    .table
                    .clone()
                    .ok_or_else(|| lines.in_step(i, "kind", "expected `table` (a topic)"))?;
                let field = st.as_.clone().ok_or_else(|| {
                    lines.in_step(
                        i,
                        "kind",
                        "expected `as` (the field receiving the table's value)",
                    )
                })?;
                let left = match st.type_.as_deref() {
                    None | Some("inner") => false,
                    Some("left") => true,
                    Some(other) => {
                        return Err(lines.in_step(
                            i,
                            "type",
                            &format!("type {other:?}: expected inner or left"),
                        ));
                    }
                };
                let kind = kind_of(st.format.as_deref(), Kind::Json)
                    .map_err(|m| lines.in_step(i, "format", &m))?;
                stage.join = Some(Join {
                    table,
                    kind,
                    left,
                    field,
                });
                phase = 1;
            }
            "window" => {
                if phase == 2 {
                    return Err(lines.in_step(
                        i,
                        "kind",
                        "one window per stage: add a key_by between two windows",
                    ));
                }
                let need = |key: &str, v: &Option<String>| -> Result<Duration, String> {
                    duration_in(&lines, i, key, v.as_ref())?.ok_or_else(|| {
                        lines.in_step(
                            i,
                            "type",
                            &format!("expected `{key}` (a duration such as 5s)"),
                        )
                    })
                };
                let kind = match st.type_.as_deref() {
                    Some("tumbling") => WindowKind::Tumbling(need("size", &st.size)?),
                    Some("sliding") => {
                        let (size, slide) = (need("size", &st.size)?, need("slide", &st.slide)?);
                        if slide > size || slide.is_zero() {
                            return Err(lines.in_step(
                                i,
                                "slide",
                                "the slide must be positive and not exceed the size",
                            ));
                        }
                        WindowKind::Sliding(size, slide)
                    }
                    Some("session") => WindowKind::Session(need("gap", &st.gap)?),
                    other => {
                        return Err(lines.in_step(
                            i,
                            "type",
                            &format!("type {other:?}: expected tumbling, sliding or session"),
                        ));
                    }
                };
                let processing = match st.time.as_deref() {
                    None | Some("event") => false,
                    Some("processing") => true,
                    Some(other) => {
                        return Err(lines.in_step(
                            i,
                            "time",
                            &format!("time {other:?}: expected event or processing"),
                        ));
                    }
                };
                let lateness =
                    duration_in(&lines, i, "allowed_lateness", st.allowed_lateness.as_ref())?
                        .unwrap_or_default();
                open_window = Some((i, kind, processing, lateness));
            }
            "aggregate" => {
                let Some((_, kind, processing_time, allowed_lateness)) = open_window.take() else {
                    return Err(lines.in_step(
                        i,
                        "kind",
                        "an aggregate step must follow a window step",
                    ));
                };
                let list = st.aggregations.as_deref().unwrap_or_default();
                if list.is_empty() {
                    return Err(lines.in_step(
                        i,
                        "kind",
                        "expected `aggregations = [{ name = \"views\", fn = \"count\" }, ..]`",
                    ));
                }
                let aggs = list
                    .iter()
                    .map(aggregation)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| lines.in_step(i, "aggregations", &m))?;
                stage.window = Some(Window {
                    kind,
                    processing_time,
                    allowed_lateness,
                    aggs: Aggs(Arc::from(aggs)),
                    key_as: st.key_as.clone().unwrap_or_else(|| "key".to_owned()),
                    late: windows == 0,
                });
                windows += 1;
                phase = 2;
            }
            _ => unreachable!("checked by allowed()"),
        }
    }
    if let Some((i, ..)) = open_window {
        return Err(lines.in_step(
            i,
            "kind",
            "expected an aggregate step after the window step",
        ));
    }
    let sink_kind = kind_of(raw.sink.format.as_deref(), Kind::Json)
        .map_err(|m| lines.at_key("sink", "format", &m))?;
    let late = match &raw.late {
        Some(l) => Some((
            l.topic.clone(),
            kind_of(l.format.as_deref(), source.kind)
                .map_err(|m| lines.at_key("late", "format", &m))?,
        )),
        None => None,
    };
    for t in [Some(&raw.sink), raw.late.as_ref(), raw.dead_letter.as_ref()]
        .into_iter()
        .flatten()
    {
        if t.monitor && !monitor.contains(&t.topic) {
            monitor.push(t.topic.clone());
        }
    }
    Ok(Plan {
        application_id: raw.application_id,
        workers: raw.workers,
        guarantee,
        source,
        stages,
        sink: (raw.sink.topic, sink_kind),
        late,
        dead_letter: raw.dead_letter.map(|d| d.topic),
        monitor,
    })
}

/// Applies `KEY=VALUE` overrides (dotted paths; `steps.N.key` with N from 1) to the file's
/// text, keeping every other line as it was.
pub fn apply_sets(file: &str, text: &str, sets: &[String]) -> Result<String, String> {
    if sets.is_empty() {
        return Ok(text.to_owned());
    }
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => format!("{file}:{l}: {}", e.message()),
            None => format!("{file}: {}", e.message()),
        }
    })?;
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| format!("--set {set:?}: expected KEY=VALUE"))?;
        let key = key.trim();
        let parts: Vec<&str> = key.split('.').collect();
        set_in(doc.as_table_mut(), &parts, value, key)?;
    }
    Ok(doc.to_string())
}

/// `--set` on a YAML file: the overrides applied to its parsed tree, written out again as
/// YAML (comments dropped, so error lines are those of the rewritten text).
pub fn apply_sets_yaml(file: &str, text: &str, sets: &[String]) -> Result<String, String> {
    if sets.is_empty() {
        return Ok(text.to_owned());
    }
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e
            .location()
            .map(|l| text[..l.index().min(text.len())].matches('\n').count() + 1);
        let full = e.to_string();
        let message = full.split(" at line ").next().unwrap_or(&full).to_owned();
        match line {
            Some(l) => format!("{file}:{l}: {message}"),
            None => format!("{file}: {message}"),
        }
    })?;
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| format!("--set {set:?}: expected KEY=VALUE"))?;
        let key = key.trim();
        let parts: Vec<&str> = key.split('.').collect();
        set_in_yaml(&mut doc, &parts, value, key)?;
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| format!("{file}: {e}"))
}

fn set_in_yaml(
    v: &mut serde_yaml_ng::Value,
    parts: &[&str],
    value: &str,
    key: &str,
) -> Result<(), String> {
    use serde_yaml_ng::Value as Y;
    let [first, rest @ ..] = parts else {
        return Err(format!("--set {key}: expected a key"));
    };
    if let Y::Sequence(items) = v {
        let n: usize = first
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("--set {key}: {first:?} is not a number from 1"))?;
        let len = items.len();
        let item = items
            .get_mut(n - 1)
            .ok_or_else(|| format!("--set {key}: there are {len}, not {n}"))?;
        return match rest {
            [] => Err(format!("--set {key}: expected a key after {first}")),
            _ => set_in_yaml(item, rest, value, key),
        };
    }
    if v.is_null() {
        *v = Y::Mapping(serde_yaml_ng::Mapping::new());
    }
    let Y::Mapping(m) = v else {
        return Err(format!(
            "--set {key}: {first:?} is inside a value that is not a table"
        ));
    };
    let k = Y::String((*first).to_owned());
    if rest.is_empty() {
        let array = m.get(&k).is_some_and(Y::is_sequence);
        let scalar = |s: &str| -> Y {
            let s = s.trim();
            match serde_yaml_ng::from_str::<Y>(s) {
                Ok(y) if !y.is_sequence() && !y.is_mapping() && !y.is_null() => y,
                _ => Y::String(s.to_owned()),
            }
        };
        let new = if array || value.contains(',') {
            Y::Sequence(
                value
                    .split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(scalar)
                    .collect(),
            )
        } else {
            scalar(value)
        };
        m.insert(k, new);
        return Ok(());
    }
    let next = m.entry(k).or_insert(Y::Null);
    set_in_yaml(next, rest, value, key)
}

fn set_in(
    t: &mut dyn toml_edit::TableLike,
    parts: &[&str],
    value: &str,
    key: &str,
) -> Result<(), String> {
    let [first, rest @ ..] = parts else {
        return Err(format!("--set {key}: expected a key"));
    };
    if rest.is_empty() {
        let existing_array = t.get(first).is_some_and(|i| i.is_array());
        t.insert(
            first,
            toml_edit::value(parse_set_value(value, existing_array)),
        );
        return Ok(());
    }
    let item = t
        .entry(first)
        .or_insert(toml_edit::Item::Table(toml_edit::Table::new()));
    match item {
        toml_edit::Item::ArrayOfTables(a) => {
            let n: usize = rest[0]
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("--set {key}: {:?} is not a number from 1", rest[0]))?;
            let len = a.len();
            let t = a
                .get_mut(n - 1)
                .ok_or_else(|| format!("--set {key}: there are {len} {first}, not {n}"))?;
            set_in(t, &rest[1..], value, key)
        }
        other => {
            let t = other
                .as_table_like_mut()
                .ok_or_else(|| format!("--set {key}: {first:?} is not a table"))?;
            set_in(t, rest, value, key)
        }
    }
}

/// A `--set` value: a comma list (or any value of a key holding an array) is an array; TOML
/// numbers, booleans and quoted strings are themselves; anything else is a string.
fn parse_set_value(value: &str, array: bool) -> toml_edit::Value {
    let scalar = |s: &str| -> toml_edit::Value {
        let s = s.trim();
        match s.parse::<toml_edit::Value>() {
            Ok(v) if !v.is_array() && !v.is_inline_table() => v.decorated(" ", ""),
            _ => toml_edit::Value::from(s),
        }
    };
    if array || value.contains(',') {
        let mut a = toml_edit::Array::new();
        for part in value.split(',').filter(|p| !p.trim().is_empty()) {
            a.push(scalar(part));
        }
        toml_edit::Value::Array(a)
    } else {
        scalar(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::commands::run::value::run_steps;

    const HEAD: &str = "application_id = \"t\"\n[source]\ntopics = [\"in\"]\n";
    const SINK: &str = "[sink]\ntopic = \"out\"\n";

    fn plan(steps: &str) -> Result<Plan, String> {
        parse("p.toml", &format!("{HEAD}{steps}{SINK}"))
    }

    fn stateless(steps: &str, input: Value) -> Vec<Value> {
        let plan = plan(steps).expect("valid");
        let mut out = Vec::new();
        run_steps(&plan.stages[0].pre, input, &mut out, &mut Vec::new());
        out
    }

    #[test]
    fn every_stateless_step_does_what_the_file_says() {
        let v = json!({"url": "/a", "status": 503, "user": "u1", "ua": "Mozilla"});
        let f = |op: &str, value: &str| {
            stateless(
                &format!(
                    "[[steps]]\nkind = \"filter\"\npath = \"status\"\nop = \"{op}\"\nvalue = {value}\n"
                ),
                v.clone(),
            )
            .len()
        };
        assert_eq!(
            [
                f("==", "503"),
                f("!=", "503"),
                f("<", "500"),
                f("<=", "503"),
                f(">", "500"),
                f(">=", "504")
            ],
            [1, 0, 0, 1, 1, 0]
        );
        let regex = "[[steps]]\nkind = \"filter\"\npath = \"url\"\nregex = \"^/a$\"\n";
        assert_eq!(stateless(regex, v.clone()).len(), 1);
        let map = "[[steps]]\nkind = \"map\"\nfields = [\"url\", \"user\"]\nrename = { user = \"who\" }\nset = { site = \"x\" }\nupper = \"url\"\n";
        assert_eq!(
            stateless(map, v.clone()),
            vec![json!({"url": "/A", "who": "u1", "site": "x"})]
        );
        let whole = "[[steps]]\nkind = \"map\"\nupper = true\n[[steps]]\nkind = \"split\"\n";
        assert_eq!(stateless(whole, json!("a b")), vec![json!("A"), json!("B")]);
    }

    #[test]
    fn stages_are_cut_at_key_by_and_hold_a_join_and_a_window() {
        let p = plan(
            "[[steps]]\nkind = \"key_by\"\npath = \"user\"\n\
             [[steps]]\nkind = \"join\"\ntable = \"users\"\ntype = \"left\"\nas = \"profile\"\n\
             [[steps]]\nkind = \"window\"\ntype = \"sliding\"\nsize = \"10s\"\nslide = \"5s\"\ntime = \"processing\"\n\
             [[steps]]\nkind = \"aggregate\"\naggregations = [{ name = \"n\", fn = \"count\" }]\n\
             [[steps]]\nkind = \"filter\"\npath = \"n\"\nop = \">\"\nvalue = 1\n",
        )
        .expect("valid");
        assert_eq!(p.stages.len(), 2);
        assert_eq!(
            p.stages[0].key_by.as_ref().map(|k| k.0.as_str()),
            Some("by-user")
        );
        let s = &p.stages[1];
        assert!(
            s.join
                .as_ref()
                .is_some_and(|j| j.left && j.field == "profile")
        );
        let w = s.window.as_ref().expect("window");
        assert!(w.processing_time);
        assert!(
            matches!(w.kind, WindowKind::Sliding(a, b) if a.as_secs() == 10 && b.as_secs() == 5)
        );
        assert_eq!(s.post.len(), 1);
    }

    #[test]
    fn structural_mistakes_name_the_step() {
        let cases = [
            (
                "[[steps]]\nkind = \"aggregate\"\naggregations = [{ name = \"n\", fn = \"count\" }]\n",
                "p.toml:5: step 1 (aggregate): an aggregate step must follow a window step",
            ),
            (
                "[[steps]]\nkind = \"window\"\ntype = \"session\"\n",
                "p.toml:6: step 1 (window): expected `gap` (a duration such as 5s)",
            ),
            (
                "[[steps]]\nkind = \"window\"\ntype = \"sliding\"\nsize = \"5s\"\nslide = \"10s\"\n",
                "p.toml:8: step 1 (window): the slide must be positive and not exceed the size",
            ),
            (
                "[[steps]]\nkind = \"filter\"\npath = \"a\"\n",
                "p.toml:5: step 1 (filter): expected `op` and `value` (a comparison), or `regex`",
            ),
            (
                "[[steps]]\nkind = \"filter\"\nregex = \"(\"\n",
                "p.toml:6: step 1 (filter): invalid regex: regex parse error:",
            ),
            (
                "[[steps]]\nkind = \"map\"\n",
                "p.toml:5: step 1 (map): expected at least one of compute, fields, rename, set, upper, lower, extract",
            ),
            (
                "[[steps]]\nkind = \"key_by\"\n",
                "p.toml:5: step 1 (key_by): expected `path` (the new key)",
            ),
            (
                "[[steps]]\nkind = \"join\"\ntable = \"t\"\n",
                "p.toml:5: step 1 (join): expected `as` (the field receiving the table's value)",
            ),
            (
                "[[steps]]\nkind = \"window\"\ntype = \"tumbling\"\nsize = \"1s\"\n[[steps]]\nkind = \"aggregate\"\naggregations = [{ fn = \"percentiles\", field = \"x\", quantiles = [0.5], names = [\"a\", \"b\"] }]\n",
                "p.toml:10: step 2 (aggregate): 2 names for 1 quantiles: expected one name per quantile",
            ),
            (
                "[[steps]]\nkind = \"window\"\ntype = \"tumbling\"\nsize = \"1s\"\n[[steps]]\nkind = \"aggregate\"\naggregations = [{ name = \"s\", fn = \"sum\" }]\n",
                "p.toml:10: step 2 (aggregate): `sum` needs a `field`",
            ),
            (
                "[[steps]]\nkind = \"also_to\"\nformat = \"json\"\n",
                "p.toml:5: step 1 (also_to): expected `topic` (where the copies go)",
            ),
            (
                "[[steps]]\nkind = \"also_to\"\ntopic = \"a\"\ncompute = { r = \"errors // views\" }\n",
                "p.toml:7: step 1 (also_to): compute r: unexpected `/` (expected a field or a number)",
            ),
            (
                "[[steps]]\nkind = \"also_to\"\ntopic = \"a\"\nwhere = [{ path = \"n\", op = \">\" }]\n",
                "p.toml:7: step 1 (also_to): where: expected `op` and `value` (a comparison), or `regex`",
            ),
            (
                "[[steps]]\nkind = \"also_to\"\ntopic = \"a\"\nwhere = 5\n",
                "p.toml:7: step 1 (also_to): where: integer is not a condition: expected { path = \"..\", op = \">=\", value = .. } (or regex = \"..\"), or a list of them",
            ),
            (
                "[[steps]]\nkind = \"also_to\"\ntopic = \"a\"\nrename = { a = \"b\" }\n",
                "p.toml:7: step 1 (also_to): `rename` is not a key of an also_to step (expected topic, format, compute, where, fields, monitor)",
            ),
        ];
        for (steps, expected) in cases {
            let e = plan(steps).expect_err(steps);
            assert!(e.starts_with(expected), "{e}\nexpected: {expected}");
        }
    }

    #[test]
    fn source_and_top_level_mistakes_name_the_line() {
        let e = parse("p.toml", "application_id = \"t\"\nworkers = 0\n[source]\ntopics = [\"a\"]\n[sink]\ntopic = \"b\"\n")
            .expect_err("0 workers");
        assert_eq!(e, "p.toml:2: workers must be at least 1");
        let e = parse("p.toml", "application_id = \"t\"\n[source]\ntopics = [\"a\"]\nformat = \"avro\"\n[sink]\ntopic = \"b\"\n")
            .expect_err("avro");
        assert_eq!(
            e,
            "p.toml:4: format \"avro\": expected json, string or bytes"
        );
        let e = parse("p.toml", "application_id = \"t\"\n[source]\npattern = \"a.*\"\ntopics = [\"a\"]\n[sink]\ntopic = \"b\"\n")
            .expect_err("both");
        assert!(e.contains("not both"), "{e}");
        let e = parse(
            "p.toml",
            "application_id = \"t\"\n[source]\ntopics = [\"a\"]\n",
        )
        .expect_err("no sink");
        assert_eq!(e, "p.toml:1: missing field `sink`");
    }

    const YAML: &str = "application_id: t\n\
        source:\n  topics: [in]\n  timestamp: ts\n\
        steps:\n\
        \x20 - kind: filter\n    path: status\n    op: \">=\"\n    value: 500\n\
        \x20 - kind: key_by\n    path: url\n\
        \x20 - kind: window\n    type: tumbling\n    size: 10s\n\
        \x20 - kind: aggregate\n    aggregations:\n      - { name: n, fn: count }\n\
        \x20 - kind: also_to\n    topic: all\n    where: { path: n, op: \">\", value: 1 }\n\
        sink:\n  topic: out\n";

    #[test]
    fn a_yaml_file_is_the_same_pipeline_and_its_errors_name_line_and_step() {
        let p = parse("p.yaml", YAML).expect("valid");
        assert_eq!(p.stages.len(), 2);
        assert!(matches!(&p.source.topics, Topics::List(t) if t == &["in"]));
        assert!(matches!(p.stages[0].pre[..], [Step::Filter(_)]));
        assert!(matches!(p.stages[1].post[..], [Step::Tap(_)]));
        assert_eq!(p.sink.0, "out");
        let cases = [
            (
                YAML.replace("size: 10s", "size: 10 parsecs"),
                "p.yaml:14: step 3 (window): \"10 parsecs\" is not a duration",
            ),
            (
                YAML.replace("size: 10s", "siz: 10s"),
                "p.yaml:14: step 3 (window): `siz` is not a key of a window step",
            ),
            (
                YAML.replace("op: \">=\"", "op: \"=~\""),
                "p.yaml:8: step 1 (filter): op \"=~\": expected one of",
            ),
            (
                YAML.replace("- kind: key_by", "- kind: kee_by"),
                "p.yaml:10: step 2 (kee_by): unknown kind \"kee_by\"",
            ),
            (
                YAML.replace("    topic: all\n", ""),
                "p.yaml:18: step 5 (also_to): expected `topic`",
            ),
            (
                YAML.replace("size: 10s", "size: [10]"),
                "p.yaml:14: step 3 (window): steps[2].size: invalid type: sequence, expected a string",
            ),
            (
                YAML.replace("  topic: out", "  topc: out"),
                "p.yaml:22: sink: unknown field `topc`, expected one of `topic`, `format`, `monitor`",
            ),
            (
                YAML.replace("  timestamp: ts", "  format: avro"),
                "p.yaml:4: format \"avro\": expected json, string or bytes",
            ),
            (
                YAML.replace("application_id: t", "application_id: [t"),
                "p.yaml:1: application_id: invalid type: sequence, expected a string",
            ),
        ];
        for (text, expected) in cases {
            let e = parse("p.yaml", &text).expect_err(expected);
            assert!(e.starts_with(expected), "{e}\nexpected: {expected}");
        }
        // --set on YAML: lists, numbers, a step's key, a new key.
        let out = apply_sets_yaml(
            "p.yaml",
            YAML,
            &[
                "source.topics=p,q".to_owned(),
                "workers=3".to_owned(),
                "steps.5.topic=copies".to_owned(),
                "steps.3.size=1m".to_owned(),
            ],
        )
        .expect("applies");
        let p = parse("p.yaml", &out).expect("valid");
        assert!(matches!(&p.source.topics, Topics::List(t) if t == &["p", "q"]));
        assert_eq!(p.workers, Some(3));
        assert!(matches!(&p.stages[1].post[0], Step::Tap(t) if t.topic == "copies"));
        assert!(matches!(
            p.stages[1].window.as_ref().map(|w| w.kind),
            Some(WindowKind::Tumbling(d)) if d.as_secs() == 60
        ));
        let e = apply_sets_yaml("p.yaml", YAML, &["steps.9.topic=x".to_owned()])
            .expect_err("no step 9");
        assert_eq!(e, "--set steps.9.topic: there are 5, not 9");
    }

    #[test]
    fn set_changes_only_the_keys_it_names() {
        let text = "application_id = \"a\"\n[source]\ntopics = [\"x\"]\n[[steps]]\nkind = \"split\"\n[sink]\ntopic = \"y\"\n";
        let out = apply_sets(
            "p.toml",
            text,
            &[
                "source.topics=p,q".to_owned(),
                "workers=3".to_owned(),
                "steps.1.path=line".to_owned(),
                "sink.format=string".to_owned(),
            ],
        )
        .expect("applies");
        let p = parse("p.toml", &out).expect("valid");
        assert!(matches!(&p.source.topics, Topics::List(t) if t == &["p", "q"]));
        assert_eq!(p.workers, Some(3));
        assert_eq!(p.sink.1, Kind::String);
        // A new key goes after its table's last key: later lines move down by one.
        assert_eq!(
            out,
            "application_id = \"a\"\nworkers = 3\n[source]\ntopics = [\"p\", \"q\"]\n\
             [[steps]]\nkind = \"split\"\npath = \"line\"\n[sink]\ntopic = \"y\"\n\
             format = \"string\"\n"
        );
        let e = apply_sets("p.toml", text, &["steps.x.path=a".to_owned()]).expect_err("bad index");
        assert_eq!(e, "--set steps.x.path: \"x\" is not a number from 1");
        let e = apply_sets("p.toml", text, &["nokey".to_owned()]).expect_err("no =");
        assert_eq!(e, "--set \"nokey\": expected KEY=VALUE");
    }

    #[test]
    fn monitored_topics_follow_their_steps_topic_after_set() {
        let text =
            include_str!("../../../../flumen-runtime/examples/pipelines/visit_analytics.toml");
        assert_eq!(parse("v.toml", text).expect("valid").monitor, ["alerts"]);
        let set = apply_sets(
            "v.toml",
            text,
            &[
                "steps.5.topic=demo-alerts".to_owned(),
                "sink.monitor=true".to_owned(),
            ],
        )
        .expect("applies");
        assert_eq!(
            parse("v.toml", &set).expect("valid").monitor,
            ["demo-alerts", "top-urls"]
        );
        assert!(plan("").expect("valid").monitor.is_empty());
        let e = plan("[[steps]]\nkind = \"split\"\nmonitor = true\n").expect_err("not a tap");
        assert!(e.contains("`monitor` is not a key of a split step"), "{e}");
    }
}
