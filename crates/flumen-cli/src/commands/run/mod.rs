//! `flumen run PIPELINE.toml`: a pipeline declared in a file, built from the runtime's
//! operators over JSON values and run by the runtime.
//!
//! The file is cut into stages at each `key_by` (the runtime's sub-topologies). A stage holds,
//! in this order: stateless steps, at most one `join`, stateless steps, at most one `window`
//! with its `aggregate`, stateless steps; then a `key_by` into the next stage, or the sink.
//! Each run of stateless steps becomes one `process` operator over `serde_json::Value`s;
//! `key_by`, `join`, `window` and `aggregate` are the runtime's own operators.

mod aggs;
mod spec;
mod value;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use flumen_runtime::format::Owned;
use flumen_runtime::join::{JoinKind, Table};
use flumen_runtime::time::Watermarks;
use flumen_runtime::window::{Windowed, Windows};
use flumen_runtime::{
    Chain, Collector, Identity, Kafka, OnError, Pipeline, RecordContext, Runtime, RuntimeConfig,
    Stream,
};
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::error::{CliError, Result};
use spec::{Plan, Stage, Topics, WindowKind};
use value::{Kind, Path, Step, ValueFormat, run_steps, text};

/// `flumen run` arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file (TOML).
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
}

/// Reads and checks the pipeline file.
fn load(args: &RunArgs) -> Result<Plan> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
        context: format!("reading {name}"),
        source,
    })?;
    let text = spec::apply_sets(&name, &text, &args.sets).map_err(CliError::Pipeline)?;
    spec::parse(&name, &text).map_err(CliError::Pipeline)
}

/// Runs `flumen run`.
pub async fn run(args: RunArgs, mut settings: Settings) -> Result<ExitCode> {
    let plan = load(&args)?;
    let mut pipeline = Pipeline::new();
    build(&plan, &mut pipeline);
    if args.check {
        print!("{}", pipeline.describe());
        return Ok(ExitCode::SUCCESS);
    }
    if !settings.has_bootstrap() {
        return Err(CliError::NoBootstrap);
    }
    let bootstrap = settings
        .props_mut()
        .take("bootstrap.servers")
        .unwrap_or_default();
    let mut config = RuntimeConfig::new(bootstrap, &plan.application_id);
    if let Some(n) = plan.workers {
        config = config.workers(n);
    }
    for (k, v) in settings.drain() {
        config = config.set(k, v);
    }
    let runtime = Runtime::new(config, pipeline);
    let bounded = args.exit_at_end;
    let summary = tokio::task::spawn_blocking(move || {
        if bounded {
            runtime.run_until_end()
        } else {
            runtime.run()
        }
    })
    .await
    .map_err(|e| CliError::Runtime(e.to_string()))?
    .map_err(|e| CliError::Runtime(e.to_string()))?;
    let late: u64 = summary
        .metrics()
        .tasks
        .iter()
        .flat_map(|t| &t.operators)
        .map(|o| o.records_late)
        .sum();
    eprintln!(
        "flumen run: {} records processed, {late} late",
        summary.records_in()
    );
    Ok(ExitCode::SUCCESS)
}

/// What every stage needs besides its own steps.
struct Ctx<'a> {
    plan: &'a Plan,
}

type S<'p, C> = Stream<'p, ValueFormat, Owned<Value>, C>;
type Next<'p> = Option<S<'p, Identity>>;

/// Builds the plan's operators into `pipeline`.
fn build(plan: &Plan, pipeline: &mut Pipeline) {
    let src = &plan.source;
    let format = ValueFormat {
        kind: src.kind,
        timestamp: src.timestamp.clone().map(Arc::new),
    };
    let source = match &src.topics {
        Topics::List(t) => Kafka::topics(t.clone()),
        Topics::Pattern(p) => Kafka::pattern(p),
    };
    let mut watermarks = Watermarks::bounded(src.max_out_of_orderness.unwrap_or_default());
    if let Some(idle) = src.idleness {
        watermarks = watermarks.idleness(idle);
    }
    let mut source = source.format(format).watermarks(watermarks);
    if let Some(dl) = &plan.dead_letter {
        source = source.on_error(OnError::DeadLetter(dl.clone()));
    }
    let ctx = Ctx { plan };
    let mut stream = pipeline.source(source);
    for stage in &plan.stages {
        match stage_pre(stream, stage, &ctx) {
            Some(next) => stream = next,
            None => break,
        }
    }
}

/// One `process` operator running a list of stateless steps.
fn stateless(
    steps: &[Step],
) -> impl for<'a, 'b> FnMut(&'b RecordContext<'a>, Value, &'b mut Collector<Value>)
+ Clone
+ Send
+ Sync
+ 'static {
    let steps: Arc<[Step]> = Arc::from(steps.to_vec());
    let mut out = Vec::new();
    move |_: &RecordContext<'_>, v: Value, c: &mut Collector<Value>| {
        run_steps(&steps, v, &mut out);
        for item in out.drain(..) {
            c.emit(item);
        }
    }
}

fn stage_pre<'p, C>(s: S<'p, C>, st: &Stage, ctx: &Ctx<'_>) -> Next<'p>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    if st.pre.is_empty() {
        stage_join(s, st, ctx)
    } else {
        stage_join(s.process(stateless(&st.pre)), st, ctx)
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
        stage_window(s.process(stateless(&st.mid)), st, ctx)
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
    let result = move |r: Windowed<'_, Map<String, Value>>| {
        let mut m = Map::new();
        m.insert("window_start".to_owned(), Value::from(r.start));
        m.insert("window_end".to_owned(), Value::from(r.end));
        m.insert(key_as.clone(), Value::String(r.key_str().into_owned()));
        m.extend(r.value);
        let mut out = Vec::new();
        run_steps(&post, Value::Object(m), &mut out);
        out
    };
    let windowed = s.window(windows).allowed_lateness(w.allowed_lateness);
    match &ctx.plan.late {
        Some((topic, kind)) => {
            let s = windowed
                .late_to(topic, ValueFormat::new(*kind))
                .aggregate(w.aggs.clone())
                .flat_map(result);
            stage_end(s, st, ctx)
        }
        None => {
            let s = windowed.aggregate(w.aggs.clone()).flat_map(result);
            stage_end(s, st, ctx)
        }
    }
}

fn stage_end<'p, C>(s: S<'p, C>, st: &Stage, ctx: &Ctx<'_>) -> Next<'p>
where
    C: Chain<Owned<Value>, Owned<Value>>,
{
    match &st.key_by {
        Some((name, path)) => {
            let path: Path = path.clone();
            Some(s.key_by(
                name,
                move |v: &Value| -> Vec<u8> {
                    path.get(v)
                        .map(|k| text(k).into_owned().into_bytes())
                        .unwrap_or_default()
                },
                ValueFormat::new(Kind::Json),
            ))
        }
        None => {
            let (topic, kind) = &ctx.plan.sink;
            s.to(topic, ValueFormat::new(*kind));
            None
        }
    }
}
