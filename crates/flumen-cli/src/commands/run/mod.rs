//! `flumen run PIPELINE.toml`: a pipeline declared in a file, built from the runtime's
//! operators over JSON values and run by the runtime.
//!
//! The file is cut into stages at each `key_by` (the runtime's sub-topologies). A stage holds,
//! in this order: stateless steps, at most one `join`, stateless steps, at most one `window`
//! with its `aggregate`, stateless steps; then a `key_by` into the next stage, or the sink.
//! Each run of stateless steps becomes one `process` operator over `serde_json::Value`s;
//! `key_by`, `join`, `window` and `aggregate` are the runtime's own operators. A run emits its
//! `also_to` copies next to its items, and one `divert` after it writes them to their topics:
//! any number of side outputs in one operator, without a type per step (a run without
//! `also_to` has a `divert` to no topic, which the graph does not show).

mod aggs;
mod expr;
mod raw;
mod spec;
mod value;
mod words;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use flumen_runtime::format::{Owned, Utf8};
use flumen_runtime::join::{JoinKind, Table};
use flumen_runtime::time::Watermarks;
use flumen_runtime::window::{Windowed, Windows};
use flumen_runtime::{
    Chain, Collector, Identity, Kafka, OnError, Pipeline, RecordContext, RunSummary, Runtime,
    RuntimeConfig, Stream,
};
use serde_json::{Map, Value};

use crate::config::{Origin, Settings};
use crate::error::{CliError, Result, one_line};
use spec::{Plan, Stage, Topics, WindowKind};
use value::{Kind, Path, Side, SideFormat, Step, ValueFormat, run_steps, text};

/// `flumen run` arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file: TOML, or YAML when it ends in `.yaml` or `.yml`.
    #[arg(value_name = "PIPELINE.toml")]
    pub file: PathBuf,
    /// Overrides a key of the file: a dotted path (`source.topics=visits`,
    /// `sink.topic=counts`, `steps.2.size=10s`); a comma list for an array (repeatable).
    /// A key the file lacks is added after its table's last key, which moves the lines after
    /// it down by one in error messages.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Checks the file and prints the operator graph, without connecting.
    #[arg(long)]
    pub check: bool,
    /// Processes what the input holds now, closes every window, commits and exits.
    #[arg(long)]
    pub exit_at_end: bool,
    /// Serve `/metrics` (Prometheus), `/health` and a live page at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `at_least_once` or `exactly_once` (overrides the file's `guarantee`).
    #[arg(long)]
    pub guarantee: Option<flumen_runtime::Guarantee>,
    /// How often progress is committed (default 5000 ms, or 100 ms under exactly-once).
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    /// This process's stable name among the job's processes (static group membership; the
    /// transactional id under exactly-once).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// How long a stop (SIGINT, SIGTERM) may take to drain and commit (`30s`, `500ms`);
    /// past it `flumen run` exits non-zero saying so.
    #[arg(long, value_parser = flumen_runtime::time::parse_duration)]
    pub shutdown_timeout: Option<std::time::Duration>,
}

/// Reads and checks the pipeline file.
fn load(args: &RunArgs) -> Result<Job> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
        context: format!("reading {name}"),
        source,
    })?;
    Job::from_text(&name, &text, &args.sets)
}

/// A checked pipeline file and the pipeline built from it (`flumen demo` makes one from
/// the file it embeds).
pub(crate) struct Job {
    plan: Plan,
    pipeline: Pipeline,
}

impl Job {
    /// The pipeline of a file's `text` (`name` is for error messages) with the `--set`
    /// overrides `sets` applied.
    pub(crate) fn from_text(name: &str, text: &str, sets: &[String]) -> Result<Job> {
        let plan = if spec::is_yaml(name) {
            let text = spec::apply_sets_yaml(name, text, sets).map_err(CliError::Pipeline)?;
            // Lines of a YAML file rewritten by --set are those of the rewritten text.
            let shown = if sets.is_empty() {
                name.to_owned()
            } else {
                format!("{name} (after --set)")
            };
            spec::parse_as(&shown, &text, true)
        } else {
            let text = spec::apply_sets(name, text, sets).map_err(CliError::Pipeline)?;
            spec::parse(name, &text)
        }
        .map_err(CliError::Pipeline)?;
        let mut pipeline = Pipeline::new();
        build(&plan, &mut pipeline);
        Ok(Job { plan, pipeline })
    }

    /// The runtime for this job on the cluster of `settings` (every other key of `settings`
    /// goes to the runtime), serving metrics at `metrics_addr` if given.
    pub(crate) fn runtime(
        self,
        mut settings: Settings,
        metrics_addr: Option<std::net::SocketAddr>,
    ) -> Result<Runtime> {
        if !settings.has_bootstrap() {
            return Err(CliError::NoBootstrap);
        }
        let bootstrap = settings
            .props_mut()
            .take("bootstrap.servers")
            .unwrap_or_default();
        let mut config =
            RuntimeConfig::new(bootstrap, &self.plan.application_id).guarantee(self.plan.guarantee);
        if let Some(n) = self.plan.workers {
            config = config.workers(n);
        }
        if let Some(addr) = metrics_addr {
            config = config.metrics_addr(addr);
        }
        if !self.plan.monitor.is_empty() {
            config = config.monitor_topics(self.plan.monitor.iter().cloned());
        }
        for (k, v) in settings.drain() {
            config = config.set(k, v);
        }
        Ok(Runtime::new(config, self.pipeline))
    }
}

/// Runs `runtime` on a thread of its own until it stops: at the end of its input when
/// `bounded`, otherwise at SIGINT, SIGTERM or its shutdown handle.
pub(crate) async fn execute(runtime: Runtime, bounded: bool) -> Result<RunSummary> {
    tokio::task::spawn_blocking(move || {
        if bounded {
            runtime.run_until_end()
        } else {
            runtime.run()
        }
    })
    .await
    .map_err(|e| CliError::Runtime(one_line(&e.to_string())))?
    .map_err(|e| CliError::Runtime(one_line(&e.to_string())))
}

/// The late records of a run, over every task and operator.
pub(crate) fn late_records(summary: &RunSummary) -> u64 {
    summary
        .metrics()
        .tasks
        .iter()
        .flat_map(|t| &t.operators)
        .map(|o| o.records_late)
        .sum()
}

/// Runs `flumen run`.
pub async fn run(args: RunArgs, settings: Settings) -> Result<ExitCode> {
    let job = load(&args)?;
    if args.check {
        print!("{}", job.pipeline.describe());
        return Ok(ExitCode::SUCCESS);
    }
    let mut settings = settings;
    if let Some(g) = args.guarantee {
        settings.set("processing.guarantee", g.name(), Origin::Command);
    }
    if let Some(ms) = args.commit_interval_ms {
        settings.set("commit.interval.ms", ms.to_string(), Origin::Command);
    }
    if let Some(name) = &args.instance_id {
        settings.set("instance.id", name, Origin::Command);
    }
    if let Some(t) = args.shutdown_timeout {
        settings.set(
            "shutdown.timeout.ms",
            t.as_millis().to_string(),
            Origin::Command,
        );
    }
    let runtime = job.runtime(settings, args.metrics_addr)?;
    let summary = execute(runtime, args.exit_at_end).await?;
    eprintln!(
        "flumen run: {} records processed, {} late",
        summary.records_in(),
        late_records(&summary)
    );
    Ok(ExitCode::SUCCESS)
}

/// What every stage needs besides its own steps.
struct Ctx<'a> {
    plan: &'a Plan,
}

type S<'p, C> = Stream<'p, ValueFormat, Owned<Value>, C>;

/// A record key made by a `key_by`: most keys (a word, a URL, a user id) fit inline.
type Key = smallvec::SmallVec<[u8; 32]>;
type Next<'p> = Option<S<'p, Identity>>;

/// Builds the plan's operators into `pipeline`.
fn build(plan: &Plan, pipeline: &mut Pipeline) {
    let src = &plan.source;
    let format = ValueFormat {
        kind: src.kind,
        timestamp: src.timestamp.clone().map(Arc::new),
        unread: false,
    };
    let mut source = match &src.topics {
        Topics::List(t) => Kafka::topics(t.clone()),
        Topics::Pattern(p) => Kafka::pattern(p),
    };
    let mut watermarks = Watermarks::bounded(src.max_out_of_orderness.unwrap_or_default());
    if let Some(idle) = src.idleness {
        watermarks = watermarks.idleness(idle);
    }
    source = source.watermarks(watermarks);
    if let Some(dl) = &plan.dead_letter {
        source = source.on_error(OnError::DeadLetter(dl.clone()));
    }
    let ctx = Ctx { plan };
    let mut stages = plan.stages.iter();
    let mut stream = match (words::words_first_stage(plan), raw_first_stage(plan)) {
        // The first stage splits text into words and counts them by word: no `Value`s.
        (Some((name, words)), _) => {
            stages.next();
            pipeline
                .source(source.format(Utf8))
                .process(
                    move |_: &RecordContext<'_>, line: &str, c: &mut Collector<words::Word>| {
                        words.split(line, |w| c.emit(w));
                    },
                )
                .key_by(
                    name,
                    |w: &words::Word| -> Key { Key::from_slice(w.as_slice()) },
                    repartition_format(plan, 1, true),
                )
        }
        // The first stage only re-keys JSON: records go to the repartition unparsed.
        (None, Some((name, key, ts))) => {
            stages.next();
            pipeline
                .source(source.format(raw::RawFormat { key, ts }))
                .key_by(
                    name,
                    |r: &raw::Raw<'_>| -> Key { Key::from_slice(r.key.as_bytes()) },
                    repartition_format(plan, 1, false),
                )
        }
        (None, None) => pipeline.source(source.format(format)),
    };
    for stage in stages {
        match stage_pre(stream, stage, &ctx) {
            Some(next) => stream = next,
            None => break,
        }
    }
}

/// The format of the repartition into stage `next`: the words themselves when the stage
/// before hands over only strings (see [`yields_strings`]), else JSON; not even read when
/// the stage looks at nothing of its items but whether they are `null`: no steps before a
/// window whose aggregations are all counts of the whole item, with no `[late]` output for it
/// (late records are written out as they are).
fn repartition_format(plan: &Plan, next: usize, strings: bool) -> ValueFormat {
    let mut format = ValueFormat::new(if strings { Kind::String } else { Kind::Json });
    if let Some(st) = plan.stages.get(next) {
        let counts_only = st.window.as_ref().is_some_and(|w| {
            !(w.late && plan.late.is_some())
                && w.aggs.0.iter().all(|a| {
                    matches!(a.func, aggs::Func::Count) && a.field.0.is_empty() && a.when.is_none()
                })
        });
        format.unread = st.pre.is_empty() && st.join.is_none() && st.mid.is_empty() && counts_only;
    }
    format
}

/// Whether every item stage `st` hands to its `key_by` is a string: no join and no window,
/// and after its last `split` only filters, case changes and `also_to` copies.
fn yields_strings(st: &Stage) -> bool {
    if st.join.is_some() || st.window.is_some() {
        return false;
    }
    let steps: Vec<&Step> = st.pre.iter().chain(&st.mid).collect();
    let Some(last) = steps.iter().rposition(|s| matches!(s, Step::Split(_))) else {
        return false;
    };
    steps[last + 1..]
        .iter()
        .all(|s| matches!(s, Step::Filter(_) | Step::Case(..) | Step::Tap(_)))
}

/// The first stage when it is stateless steps before a `key_by` and nothing else (no join,
/// window or steps after them): the stage, its repartition's name and the key's path.
fn rekeying_first_stage(plan: &Plan) -> Option<(&Stage, &str, &Path)> {
    let first = plan.stages.first()?;
    let (name, path) = first.key_by.as_ref()?;
    let plain = first.join.is_none()
        && first.mid.is_empty()
        && first.window.is_none()
        && first.post.is_empty();
    plain.then_some((first, name.as_str(), path))
}

/// When the first stage is a `key_by` of JSON records and nothing else, with the key and
/// the event time (if read from the records) each a top-level field: the repartition's name,
/// the key field and the time field, for [`raw::RawFormat`].
fn raw_first_stage(plan: &Plan) -> Option<(&str, String, Option<String>)> {
    let (first, name, path) = rekeying_first_stage(plan)?;
    if !first.pre.is_empty() || plan.source.kind != Kind::Json {
        return None;
    }
    let field = |p: &Path| match p.0.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    };
    let ts = match &plan.source.timestamp {
        Some(p) => Some(field(p)?),
        None => None,
    };
    Some((name, field(path)?, ts))
}

/// What a run with `also_to` steps emits: an item going on, or a copy for a side topic.
type Routed = Result<Value, Side>;

/// The topics of a run's `also_to` steps, in slot order.
fn tap_topics(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Tap(t) => Some(t.topic.clone()),
            _ => None,
        })
        .collect()
}

/// `steps` as one `process` emitting [`Routed`] items and the `divert` writing the copies
/// (with no `also_to` among them, a `divert` to no topic, which `describe` does not show).
/// One form for every run keeps the number of chain types down: a branch per run kind
/// multiplies the types of everything after it, and each is compiled.
fn tapped<'p, C>(
    s: S<'p, C>,
    steps: &[Step],
) -> S<'p, impl Chain<Owned<Value>, Owned<Value>> + use<'p, C>>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    let topics = tap_topics(steps);
    let steps: Arc<[Step]> = Arc::from(steps.to_vec());
    let (mut out, mut side) = (Vec::new(), Vec::new());
    s.process(
        move |_: &RecordContext<'_>, v: Value, c: &mut Collector<Routed>| {
            run_steps(&steps, v, &mut out, &mut side);
            for copy in side.drain(..) {
                c.emit(Err(copy));
            }
            for item in out.drain(..) {
                c.emit(Ok(item));
            }
        },
    )
    .divert(topics, SideFormat, |r: Routed| r)
}

fn stage_pre<'p, C>(s: S<'p, C>, st: &Stage, ctx: &Ctx<'_>) -> Next<'p>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    if st.pre.is_empty() {
        stage_join(s, st, ctx)
    } else {
        stage_join(tapped(s, &st.pre), st, ctx)
    }
}

fn stage_join<'p, C>(s: S<'p, C>, st: &Stage, ctx: &Ctx<'_>) -> Next<'p>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    let Some(join) = &st.join else {
        return stage_mid(s, st, ctx);
    };
    let table = Table::new(Kafka::topic(&join.table).format(ValueFormat::new(join.kind)));
    let kind = if join.left {
        JoinKind::Left
    } else {
        JoinKind::Inner
    };
    let field = join.field.clone();
    let s = s.join_table(&table, kind, move |v: Value, t: Option<&Value>| {
        let mut v = match v {
            Value::Object(_) => v,
            other => serde_json::json!({ "value": other }),
        };
        if let Value::Object(m) = &mut v {
            m.insert(field.clone(), t.cloned().unwrap_or(Value::Null));
        }
        v
    });
    stage_mid(s, st, ctx)
}

fn stage_mid<'p, C>(s: S<'p, C>, st: &Stage, ctx: &Ctx<'_>) -> Next<'p>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    if st.mid.is_empty() {
        stage_window(s, st, ctx)
    } else {
        stage_window(tapped(s, &st.mid), st, ctx)
    }
}

fn stage_window<'p, C>(s: S<'p, C>, st: &Stage, ctx: &Ctx<'_>) -> Next<'p>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    let Some(w) = &st.window else {
        return stage_end(s, st, ctx);
    };
    let mut windows = match w.kind {
        WindowKind::Tumbling(size) => Windows::tumbling(size),
        WindowKind::Sliding(size, slide) => Windows::sliding(size, slide),
        WindowKind::Session(gap) => Windows::session(gap),
    };
    if w.processing_time {
        windows = windows.processing_time();
    }
    let post: Arc<[Step]> = Arc::from(st.post.clone());
    let key_as = w.key_as.clone();
    // The window's result as an object, then the steps after the aggregate.
    let result = move |r: Windowed<'_, Map<String, Value>>, side: &mut Vec<Side>| {
        let mut m = Map::new();
        m.insert("window_start".to_owned(), Value::from(r.start));
        m.insert("window_end".to_owned(), Value::from(r.end));
        m.insert(key_as.clone(), Value::String(r.key_str().into_owned()));
        m.extend(r.value);
        let mut out = Vec::new();
        run_steps(&post, Value::Object(m), &mut out, side);
        out
    };
    let windowed = s.window(windows).allowed_lateness(w.allowed_lateness);
    let topics = tap_topics(&st.post);
    // One chain type whether or not late records are written: this function is built once
    // per kind of stage before it.
    let late = match (&ctx.plan.late, w.late) {
        (Some((topic, kind)), true) => Some((topic.clone(), ValueFormat::new(*kind))),
        _ => None,
    };
    let s = windowed
        .late_to_if(late)
        .aggregate(w.aggs.clone())
        .flat_map(move |r| routed(&result, r))
        .divert(topics, SideFormat, |r: Routed| r);
    stage_end(s, st, ctx)
}

/// A window result's items and copies, copies first.
fn routed<R>(result: &impl Fn(R, &mut Vec<Side>) -> Vec<Value>, r: R) -> Vec<Routed> {
    let mut side = Vec::new();
    let out = result(r, &mut side);
    side.into_iter()
        .map(Err)
        .chain(out.into_iter().map(Ok))
        .collect()
}

fn stage_end<'p, C>(s: S<'p, C>, st: &Stage, ctx: &Ctx<'_>) -> Next<'p>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    match &st.key_by {
        Some((name, path)) => {
            let next = ctx
                .plan
                .stages
                .iter()
                .position(|x| std::ptr::eq(x, st))
                .map_or(usize::MAX, |i| i + 1);
            let path: Path = path.clone();
            Some(s.key_by(
                name,
                move |v: &Value| -> Key {
                    path.get(v)
                        .map(|k| Key::from_slice(text(k).as_bytes()))
                        .unwrap_or_default()
                },
                repartition_format(ctx.plan, next, yields_strings(st)),
            ))
        }
        None => {
            let (topic, kind) = &ctx.plan.sink;
            s.to(topic, ValueFormat::new(*kind));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use flumen_runtime::MemoryRecord;
    use flumen_runtime::testing::MemoryRun;
    use serde_json::json;

    use super::*;

    /// Runs the pipeline file `text` in memory on `(key, value, timestamp)` records of its
    /// source `in` (one partition); returns `(topic, key, value)` of everything written.
    fn run_file(text: &str, records: &[(&str, Value, i64)]) -> Vec<(String, String, Value)> {
        let bytes: Vec<(Vec<u8>, Vec<u8>, i64)> = records
            .iter()
            .map(|(k, v, t)| (k.as_bytes().to_vec(), v.to_string().into_bytes(), *t))
            .collect();
        run_bytes(text, &bytes)
    }

    /// [`run_file`] on `(key, value bytes, timestamp)` records.
    fn run_bytes(text: &str, bytes: &[(Vec<u8>, Vec<u8>, i64)]) -> Vec<(String, String, Value)> {
        let plan = spec::parse("p.toml", text).expect("valid file");
        let mut pipeline = Pipeline::new();
        build(&plan, &mut pipeline);
        let mut run = MemoryRun::new(&pipeline, "app").with_partitions(1);
        let input: Vec<MemoryRecord> = bytes
            .iter()
            .map(|(k, v, t)| MemoryRecord::new((!k.is_empty()).then_some(k), v, *t))
            .collect();
        run.push("in", 0, &input).expect("push");
        run.end_of_input().expect("end");
        run.output()
            .iter()
            .filter(|r| r.partition.is_none())
            .map(|r| {
                let key =
                    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
                let value = serde_json::from_slice(&r.value)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.value).into()));
                (r.topic.clone(), key, value)
            })
            .collect()
    }

    const HEAD: &str = "application_id = \"t\"\n[source]\ntopics = [\"in\"]\ntimestamp = \"ts\"\n\
                        [sink]\ntopic = \"out\"\n[late]\ntopic = \"late\"\n";

    /// A file counting items by `k` in one-minute windows, with `extra` aggregations and
    /// `tail` after its sink.
    fn counting(extra: &str, tail: &str) -> String {
        format!(
            "application_id = \"t\"\n[source]\ntopics = [\"in\"]\ntimestamp = \"ts\"\n\
             [[steps]]\nkind = \"key_by\"\npath = \"k\"\nname = \"by-k\"\n\
             [[steps]]\nkind = \"window\"\ntype = \"tumbling\"\nsize = \"1m\"\n\
             [[steps]]\nkind = \"aggregate\"\naggregations = [{{ name = \"n\", fn = \"count\" }}{extra}]\n\
             [sink]\ntopic = \"out\"\n{tail}"
        )
    }

    #[test]
    fn words_split_from_lines_cross_the_repartition_as_text() {
        let file = "application_id = \"t\"\n[source]\ntopics = [\"in\"]\nformat = \"string\"\n\
                    [[steps]]\nkind = \"split\"\n\
                    [[steps]]\nkind = \"map\"\nlower = true\n\
                    [[steps]]\nkind = \"key_by\"\npath = \"$\"\nname = \"words\"\n\
                    [[steps]]\nkind = \"window\"\ntype = \"tumbling\"\nsize = \"1m\"\n\
                    [[steps]]\nkind = \"aggregate\"\naggregations = [{ name = \"n\", fn = \"count\" }]\n\
                    [sink]\ntopic = \"out\"\n";
        let plan = spec::parse("p.toml", file).expect("valid file");
        assert!(yields_strings(&plan.stages[0]));
        let format = repartition_format(&plan, 1, true);
        assert_eq!((format.kind, format.unread), (Kind::String, true));
        // A word that reads as JSON `null` is a word like any other.
        let line = |s: &str, t| (Vec::new(), s.as_bytes().to_vec(), t);
        let mut got: Vec<(String, u64)> =
            run_bytes(file, &[line("null x", 1_000), line("Null", 2_000)])
                .into_iter()
                .map(|(_, key, v)| (key, v["n"].as_u64().expect("n")))
                .collect();
        got.sort();
        assert_eq!(got, [("null".to_owned(), 2), ("x".to_owned(), 1)]);
        // Steps after the split that may make something else of a word: JSON.
        let objects = file.replace("lower = true", "set = { seen = true }");
        let plan = spec::parse("p.toml", &objects).expect("valid file");
        assert!(!yields_strings(&plan.stages[0]));
        let no_split = file.replace("kind = \"split\"", "kind = \"map\"\nlower = true");
        assert!(!yields_strings(
            &spec::parse("p.toml", &no_split).expect("valid file").stages[0]
        ));
    }

    #[test]
    fn a_stage_that_only_counts_its_items_does_not_parse_them_and_counts_the_same() {
        let parse = |text: &str| spec::parse("p.toml", text).expect("valid file");
        let only_counts = counting("", "");
        assert!(repartition_format(&parse(&only_counts), 1, false).unread);
        let reads = counting(", { name = \"s\", fn = \"sum\", field = \"x\" }", "");
        assert!(!repartition_format(&parse(&reads), 1, false).unread);
        let late = counting("", "[late]\ntopic = \"late\"\n");
        assert!(!repartition_format(&parse(&late), 1, false).unread);
        let when = counting(
            ", { name = \"m\", fn = \"count\", where = { path = \"x\", op = \">\", value = 1 } }",
            "",
        );
        assert!(!repartition_format(&parse(&when), 1, false).unread);
        // JSON nulls are not counted either way (keyed "" as they have no `k`).
        let records = [
            ("", json!({"k": "a", "x": 1, "ts": 1_000}), 1_000),
            ("", json!({"k": "a", "x": 2, "ts": 2_000}), 2_000),
            ("", json!({"k": "b", "ts": 3_000}), 3_000),
            ("", json!("text"), 4_000),
            ("", Value::Null, 5_000),
            ("", json!({"k": "b", "ts": 70_000}), 70_000),
        ];
        // Results of one window come in no particular order.
        let counts = |text: &str| -> Vec<(i64, String, u64)> {
            let mut v: Vec<(i64, String, u64)> = run_file(text, &records)
                .into_iter()
                .map(|(_, key, v)| {
                    let start = v["window_start"].as_i64().expect("start");
                    (start, key, v["n"].as_u64().expect("n"))
                })
                .collect();
            v.sort();
            v
        };
        let got = counts(&only_counts);
        assert_eq!(got, counts(&reads));
        assert_eq!(
            got,
            [
                (0, "".to_owned(), 1),
                (0, "a".to_owned(), 2),
                (0, "b".to_owned(), 1),
                (60_000, "b".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn session_windows_merge_by_gap_and_take_the_event_time_from_a_field() {
        let text = format!(
            "{HEAD}[[steps]]\nkind = \"key_by\"\npath = \"user\"\n\
             [[steps]]\nkind = \"window\"\ntype = \"session\"\ngap = \"10s\"\n\
             [[steps]]\nkind = \"aggregate\"\nkey_as = \"user\"\n\
             aggregations = [{{ name = \"clicks\", fn = \"count\" }}, {{ name = \"last\", fn = \"max\", field = \"ts\" }}]\n"
        );
        let v = |user: &str, ts: i64| ("", json!({"user": user, "ts": ts}), 0);
        let out = run_file(
            &text,
            &[v("a", 1_000), v("b", 2_000), v("a", 5_000), v("a", 30_000)],
        );
        let mut sessions = out;
        sessions.sort_by_key(|(_, k, v)| (k.clone(), v["window_start"].as_i64()));
        assert_eq!(
            sessions,
            [
                (
                    "out".into(),
                    "a".into(),
                    json!({"window_start": 1_000, "window_end": 15_000, "user": "a", "clicks": 2, "last": 5_000})
                ),
                (
                    "out".into(),
                    "a".into(),
                    json!({"window_start": 30_000, "window_end": 40_000, "user": "a", "clicks": 1, "last": 30_000})
                ),
                (
                    "out".into(),
                    "b".into(),
                    json!({"window_start": 2_000, "window_end": 12_000, "user": "b", "clicks": 1, "last": 2_000})
                ),
            ]
        );
    }

    #[test]
    fn also_to_steps_copy_the_items_at_their_place_and_the_chain_goes_on() {
        let text = "application_id = \"t\"\n[source]\ntopics = [\"in\"]\ntimestamp = \"ts\"\n\
             [[steps]]\nkind = \"also_to\"\ntopic = \"raw\"\nfields = [\"n\"]\n\
             [[steps]]\nkind = \"filter\"\npath = \"n\"\nop = \">\"\nvalue = 1\n\
             [[steps]]\nkind = \"window\"\ntype = \"tumbling\"\nsize = \"10s\"\n\
             [[steps]]\nkind = \"aggregate\"\naggregations = [{ name = \"n\", fn = \"count\" }, { name = \"sum\", fn = \"sum\", field = \"n\" }]\n\
             [[steps]]\nkind = \"also_to\"\ntopic = \"all\"\n\
             [[steps]]\nkind = \"also_to\"\ntopic = \"big\"\nformat = \"string\"\n\
             compute = { mean = \"sum / n\" }\nwhere = [{ path = \"mean\", op = \">=\", value = 3 }]\n\
             fields = [\"mean\"]\n\
             [[steps]]\nkind = \"map\"\nextract = \"sum\"\n\
             [sink]\ntopic = \"out\"\n";
        let plan = spec::parse("p.toml", text).expect("valid");
        let mut pipeline = Pipeline::new();
        build(&plan, &mut pipeline);
        assert_eq!(
            pipeline.describe(),
            "sub-topology 0: in -> process -> divert(raw) -> window tumbling(10000 ms) -> \
             flat_map -> divert(all,big) -> to(out)\n"
        );
        let v = |ts: i64, n: i64| ("k", json!({"ts": ts, "n": n}), 0);
        let out = run_file(
            text,
            &[v(1_000, 1), v(2_000, 2), v(11_000, 4), v(12_000, 5)],
        );
        let on = |topic: &str| -> Vec<Value> {
            out.iter()
                .filter(|(t, k, _)| t == topic && k == "k")
                .map(|(_, _, v)| v.clone())
                .collect()
        };
        assert_eq!(
            on("raw"),
            [
                json!({"n": 1}),
                json!({"n": 2}),
                json!({"n": 4}),
                json!({"n": 5})
            ]
        );
        assert_eq!(
            on("all"),
            [
                json!({"window_start": 0, "window_end": 10_000, "key": "k", "n": 1, "sum": 2}),
                json!({"window_start": 10_000, "window_end": 20_000, "key": "k", "n": 2, "sum": 9}),
            ]
        );
        // `format = "string"` writes JSON for an object; 9 / 2 is a float.
        assert_eq!(on("big"), [json!({"mean": 4.5})]);
        assert_eq!(on("out"), [json!(2), json!(9)]);
    }

    #[test]
    fn sliding_windows_on_the_record_key_and_late_records_aside() {
        let text = format!(
            "{HEAD}[[steps]]\nkind = \"window\"\ntype = \"sliding\"\nsize = \"10s\"\nslide = \"5s\"\n\
             [[steps]]\nkind = \"aggregate\"\naggregations = [{{ name = \"total\", fn = \"sum\", field = \"n\" }}]\n"
        );
        let v = |ts: i64, n: i64| ("k", json!({"ts": ts, "n": n}), 0);
        // The watermark passes 20 s: the record at 3 s is late for both its windows.
        let out = run_file(
            &text,
            &[v(6_000, 1), v(7_000, 2), v(21_000, 4), v(3_000, 8)],
        );
        let mut results: Vec<_> = out
            .iter()
            .filter(|(t, _, _)| t == "out")
            .map(|(_, k, v)| {
                (
                    k.clone(),
                    v["window_start"].as_i64().unwrap_or(0),
                    v["total"].clone(),
                )
            })
            .collect();
        results.sort_by_key(|r| (r.0.clone(), r.1));
        assert_eq!(
            results,
            [
                ("k".into(), 0, json!(3)),
                ("k".into(), 5_000, json!(3)),
                ("k".into(), 15_000, json!(4)),
                ("k".into(), 20_000, json!(4)),
            ]
        );
        let late: Vec<_> = out.iter().filter(|(t, _, _)| t == "late").collect();
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].2, json!({"ts": 3_000, "n": 8}));
    }
}
