//! The pipeline builder: sources, the typed `Stream` with its operators, and sinks.
//!
//! Each call on a [`Stream`] adds a link to a chain *description* (`Chain`), which holds the
//! user's closures. A terminal call (`to`, `for_each`, `key_by`) closes a sub-topology: every
//! task of it later builds its own operator instances from the description (closures are
//! cloned per task), nested into one monomorphised [`Operator`].

use std::marker::PhantomData;
use std::sync::Arc;

use crate::context::RecordContext;
use crate::format::{Decode, Encode, Family, Owned};
use crate::operator::{
    Collector, Filter, FilterMap, FlatMap, Inspect, Map, Operator, Process, TopicChoice,
};
use crate::task::{Factory, TaskEnv, TaskFactory};
use crate::time::Watermarks;

/// What to do with a record whose value does not deserialize.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnError {
    /// Stop the pipeline with an error naming the topic, partition and offset (the default).
    #[default]
    Fail,
    /// Skip the record and count it (`records_skipped` in the task metrics).
    Skip,
    /// Write the record, unchanged, to this topic, with the error in the header
    /// `flumen.error` and its origin (`topic/partition@offset`) in `flumen.source`; count it.
    DeadLetter(String),
}

/// Which topics a source reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SourceTopics {
    Topics(Vec<String>),
    /// A regular expression over topic names, anchored at both ends.
    Pattern(String),
    /// The repartition topic `<application.id>-<name>-repartition`.
    Repartition(String),
}

/// A Kafka source: topics (or a pattern) and the format of their values.
#[derive(Clone, Debug)]
pub struct KafkaSource<D> {
    pub(crate) topics: SourceTopics,
    pub(crate) format: D,
    pub(crate) on_error: OnError,
    pub(crate) watermarks: Watermarks,
}

/// Constructors for Kafka sources.
#[derive(Debug)]
pub struct Kafka;

impl Kafka {
    /// Reads `topic`, values as raw bytes until [`KafkaSource::format`] says otherwise.
    pub fn topic(topic: impl Into<String>) -> KafkaSource<crate::format::Bytes> {
        Kafka::topics([topic.into()])
    }

    /// Reads several topics as one stream; partition `p` of each belongs to task `p`.
    pub fn topics<I: IntoIterator<Item = S>, S: Into<String>>(
        topics: I,
    ) -> KafkaSource<crate::format::Bytes> {
        KafkaSource {
            topics: SourceTopics::Topics(topics.into_iter().map(Into::into).collect()),
            format: crate::format::Bytes,
            on_error: OnError::Fail,
            watermarks: Watermarks::default(),
        }
    }

    /// Reads every topic whose whole name matches `regex`, including topics created later.
    pub fn pattern(regex: impl Into<String>) -> KafkaSource<crate::format::Bytes> {
        KafkaSource {
            topics: SourceTopics::Pattern(regex.into()),
            format: crate::format::Bytes,
            on_error: OnError::Fail,
            watermarks: Watermarks::default(),
        }
    }
}

impl<D: Decode> KafkaSource<D> {
    /// Event time read from each decoded item by `extract` (ms since the epoch) instead of
    /// the record's timestamp. Results and records written downstream carry it as their
    /// timestamp.
    pub fn timestamps<T>(self, extract: T) -> KafkaSource<crate::format::Timestamped<D, T>>
    where
        T: for<'a, 'b> Fn(&'b <D::Family as Family>::Item<'a>) -> i64
            + Clone
            + Send
            + Sync
            + 'static,
    {
        KafkaSource {
            topics: self.topics,
            format: crate::format::Timestamped {
                inner: self.format,
                extract,
            },
            on_error: self.on_error,
            watermarks: self.watermarks,
        }
    }
}

impl<D> KafkaSource<D> {
    /// Reads values with `format`.
    pub fn format<D2: Decode>(self, format: D2) -> KafkaSource<D2> {
        KafkaSource {
            topics: self.topics,
            format,
            on_error: self.on_error,
            watermarks: self.watermarks,
        }
    }

    /// How event-time watermarks follow the records (default: in order, no idleness).
    pub fn watermarks(mut self, watermarks: Watermarks) -> Self {
        self.watermarks = watermarks;
        self
    }

    /// What to do with records that do not deserialize (default [`OnError::Fail`]).
    pub fn on_error(mut self, policy: OnError) -> Self {
        self.on_error = policy;
        self
    }
}

/// One sub-topology as the runtime runs it.
pub(crate) struct SubTopology {
    pub(crate) source: SourceTopics,
    /// Table topics it reads (co-partitioned with its source), by table number.
    pub(crate) tables: Vec<String>,
    /// Output topics with a fixed name (their metadata is loaded before the first record).
    pub(crate) outputs: Vec<String>,
    /// The repartition this sub-topology writes, by name.
    pub(crate) repartition: Option<String>,
    pub(crate) dead_letter: Option<String>,
    pub(crate) operators: Vec<String>,
    /// Its state stores, by name (each with a changelog topic).
    pub(crate) stores: Vec<String>,
    pub(crate) factory: Arc<dyn TaskFactory>,
}

/// A pipeline: one or more sub-topologies, cut at every `key_by`.
///
/// ```
/// use flumen_runtime::{Kafka, Pipeline, format::Utf8};
///
/// let mut pipeline = Pipeline::new();
/// pipeline
///     .source(Kafka::topic("visits").format(Utf8))
///     .filter(|line| !line.is_empty())
///     .map(|line| line.to_uppercase())
///     .to("visits-upper", Utf8);
/// assert_eq!(pipeline.describe().lines().count(), 1);
/// ```
#[derive(Default)]
pub struct Pipeline {
    pub(crate) subs: Vec<SubTopology>,
    /// State stores named so far (the next store's number).
    pub(crate) stores: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Starts a stream from a Kafka source.
    pub fn source<D: Decode>(
        &mut self,
        source: KafkaSource<D>,
    ) -> Stream<'_, D, D::Family, Identity> {
        Stream {
            pipeline: self,
            source,
            chain: Identity,
            operators: Vec::new(),
            side_outputs: Vec::new(),
            tables: Vec::new(),
            stores: Vec::new(),
            _family: PhantomData,
        }
    }

    /// The operator graph, one line per sub-topology: its source, operators and sink.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.subs.iter().enumerate() {
            let source = match &s.source {
                SourceTopics::Topics(t) => t.join(","),
                SourceTopics::Pattern(p) => format!("/{p}/"),
                SourceTopics::Repartition(name) => format!("<{name}-repartition>"),
            };
            let source = if s.tables.is_empty() {
                source
            } else {
                format!("{source} + table {}", s.tables.join(","))
            };
            out.push_str(&format!(
                "sub-topology {i}: {source} -> {}\n",
                s.operators.join(" -> ")
            ));
        }
        out
    }

    /// The sub-topologies (for the runtime).
    pub(crate) fn sub_topologies(&self) -> &[SubTopology] {
        &self.subs
    }
}

/// A chain description from a source's items (`In`) to this point's items (`F`).
pub trait Chain<In: Family, F: Family>: Clone + Send + Sync + 'static {
    /// The operator it builds in front of `N`.
    type Out<N: Operator<F>>: Operator<In>;
    /// Builds the operators of one task, ending in `next`.
    fn build<N: Operator<F>>(&self, env: &TaskEnv, next: N) -> Self::Out<N>;
}

/// The empty chain.
#[derive(Clone, Copy, Debug)]
pub struct Identity;

impl<F: Family> Chain<F, F> for Identity {
    type Out<N: Operator<F>> = N;
    fn build<N: Operator<F>>(&self, _: &TaskEnv, next: N) -> N {
        next
    }
}

macro_rules! link {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<C, M, F> {
            chain: C,
            f: M,
            _family: PhantomData<fn() -> F>,
        }

        impl<C: Clone, M: Clone, F> Clone for $name<C, M, F> {
            fn clone(&self) -> Self {
                $name {
                    chain: self.chain.clone(),
                    f: self.f.clone(),
                    _family: PhantomData,
                }
            }
        }
    };
}

link!(
    /// Description of a `map`.
    MapLink
);
link!(
    /// Description of a `filter`.
    FilterLink
);
link!(
    /// Description of a `filter_map`.
    FilterMapLink
);
link!(
    /// Description of a `flat_map`.
    FlatMapLink
);
link!(
    /// Description of an `inspect`.
    InspectLink
);
link!(
    /// Description of a `process`.
    ProcessLink
);

/// Description of an `also_to`.
pub struct TapLink<C, M, E, F> {
    chain: C,
    topic: String,
    encoder: E,
    f: M,
    _family: PhantomData<fn() -> F>,
}

impl<C: Clone, M: Clone, E: Clone, F> Clone for TapLink<C, M, E, F> {
    fn clone(&self) -> Self {
        TapLink {
            chain: self.chain.clone(),
            topic: self.topic.clone(),
            encoder: self.encoder.clone(),
            f: self.f.clone(),
            _family: PhantomData,
        }
    }
}

impl<In, F, O, C, M, E> Chain<In, F> for TapLink<C, M, E, F>
where
    In: Family,
    F: Family,
    O: 'static,
    C: Chain<In, F>,
    E: Encode<Owned<O>>,
    M: for<'a, 'b> FnMut(&'b F::Item<'a>) -> Option<O> + UserFn,
{
    type Out<N: Operator<F>> = C::Out<crate::operator::Tap<E, M, N>>;
    fn build<N: Operator<F>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            crate::operator::Tap {
                topic: self.topic.clone(),
                encoder: self.encoder.clone(),
                f: self.f.clone(),
                output: env.output.clone(),
                scratch: Vec::new(),
                next,
                count: 0,
            },
        )
    }
}

/// Description of a `divert`.
pub struct DivertLink<C, M, E, F> {
    chain: C,
    topics: Arc<[String]>,
    encoder: E,
    f: M,
    _family: PhantomData<fn() -> F>,
}

impl<C: Clone, M: Clone, E: Clone, F> Clone for DivertLink<C, M, E, F> {
    fn clone(&self) -> Self {
        DivertLink {
            chain: self.chain.clone(),
            topics: self.topics.clone(),
            encoder: self.encoder.clone(),
            f: self.f.clone(),
            _family: PhantomData,
        }
    }
}

impl<In, F, T, O, C, M, E> Chain<In, Owned<T>> for DivertLink<C, M, E, F>
where
    In: Family,
    F: Family,
    T: 'static,
    O: 'static,
    C: Chain<In, F>,
    E: Encode<Owned<O>>,
    M: for<'a> FnMut(F::Item<'a>) -> Result<T, (usize, O)> + UserFn,
{
    type Out<N: Operator<Owned<T>>> = C::Out<crate::operator::Divert<E, M, N>>;
    fn build<N: Operator<Owned<T>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            crate::operator::Divert {
                topics: self.topics.clone(),
                encoder: self.encoder.clone(),
                f: self.f.clone(),
                output: env.output.clone(),
                scratch: Vec::new(),
                next,
                count: 0,
            },
        )
    }
}

/// Bounds every user function shares: each task clones its own copy.
pub trait UserFn: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> UserFn for T {}

impl<In, F, O, C, M> Chain<In, Owned<O>> for MapLink<C, M, F>
where
    In: Family,
    F: Family,
    O: 'static,
    C: Chain<In, F>,
    M: for<'a> FnMut(F::Item<'a>) -> O + UserFn,
{
    type Out<N: Operator<Owned<O>>> = C::Out<Map<M, N>>;
    fn build<N: Operator<Owned<O>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            Map {
                f: self.f.clone(),
                next,
                count: 0,
            },
        )
    }
}

impl<In, F, C, P> Chain<In, F> for FilterLink<C, P, F>
where
    In: Family,
    F: Family,
    C: Chain<In, F>,
    P: for<'a, 'b> FnMut(&'b F::Item<'a>) -> bool + UserFn,
{
    type Out<N: Operator<F>> = C::Out<Filter<P, N>>;
    fn build<N: Operator<F>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            Filter {
                f: self.f.clone(),
                next,
                count: 0,
            },
        )
    }
}

impl<In, F, O, C, M> Chain<In, Owned<O>> for FilterMapLink<C, M, F>
where
    In: Family,
    F: Family,
    O: 'static,
    C: Chain<In, F>,
    M: for<'a> FnMut(F::Item<'a>) -> Option<O> + UserFn,
{
    type Out<N: Operator<Owned<O>>> = C::Out<FilterMap<M, N>>;
    fn build<N: Operator<Owned<O>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            FilterMap {
                f: self.f.clone(),
                next,
                count: 0,
            },
        )
    }
}

impl<In, F, I, C, M> Chain<In, Owned<I::Item>> for FlatMapLink<C, M, F>
where
    In: Family,
    F: Family,
    I: IntoIterator,
    I::Item: 'static,
    C: Chain<In, F>,
    M: for<'a> FnMut(F::Item<'a>) -> I + UserFn,
{
    type Out<N: Operator<Owned<I::Item>>> = C::Out<FlatMap<M, N>>;
    fn build<N: Operator<Owned<I::Item>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            FlatMap {
                f: self.f.clone(),
                next,
                count: 0,
            },
        )
    }
}

impl<In, F, C, P> Chain<In, F> for InspectLink<C, P, F>
where
    In: Family,
    F: Family,
    C: Chain<In, F>,
    P: for<'a, 'b> FnMut(&'b RecordContext<'a>, &'b F::Item<'a>) + UserFn,
{
    type Out<N: Operator<F>> = C::Out<Inspect<P, N>>;
    fn build<N: Operator<F>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            Inspect {
                f: self.f.clone(),
                next,
                count: 0,
            },
        )
    }
}

/// Description of a `process` whose collector takes `O`.
pub struct ProcessOut<F, O>(PhantomData<fn() -> (F, O)>);

impl<In, F, O, C, M> Chain<In, Owned<O>> for ProcessLink<C, M, ProcessOut<F, O>>
where
    In: Family,
    F: Family,
    O: 'static,
    C: Chain<In, F>,
    M: for<'a, 'b> FnMut(&'b RecordContext<'a>, F::Item<'a>, &'b mut Collector<O>) + UserFn,
{
    type Out<N: Operator<Owned<O>>> = C::Out<Process<M, N, O>>;
    fn build<N: Operator<Owned<O>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(env, Process::new(self.f.clone(), next))
    }
}

/// A typed stream of items of family `F`, read by a source with format `D`.
pub struct Stream<'p, D: Decode, F: Family, C> {
    pub(crate) pipeline: &'p mut Pipeline,
    pub(crate) source: KafkaSource<D>,
    pub(crate) chain: C,
    pub(crate) operators: Vec<String>,
    /// Topics operators write besides the sink (late outputs).
    pub(crate) side_outputs: Vec<String>,
    /// Table topics the chain joins with, by table number.
    pub(crate) tables: Vec<String>,
    /// State stores of the chain's operators.
    pub(crate) stores: Vec<String>,
    pub(crate) _family: PhantomData<fn() -> F>,
}

impl<D: Decode, F: Family, C> std::fmt::Debug for Stream<'_, D, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}

/// The topic a sink with a fixed topic writes to (a placeholder chooser type).
pub type FixedTopic<F> =
    for<'a, 'b> fn(&'b RecordContext<'a>, &'b <F as Family>::Item<'a>) -> &'b str;

impl<'p, D, F, C> Stream<'p, D, F, C>
where
    D: Decode,
    F: Family,
    C: Chain<D::Family, F>,
{
    pub(crate) fn then<F2: Family, C2>(self, name: &str, chain: C2) -> Stream<'p, D, F2, C2> {
        let mut operators = self.operators;
        operators.push(name.to_owned());
        Stream {
            pipeline: self.pipeline,
            source: self.source,
            chain,
            operators,
            side_outputs: self.side_outputs,
            tables: self.tables,
            stores: self.stores,
            _family: PhantomData,
        }
    }

    /// One owned item out for every item in.
    pub fn map<O, M>(self, f: M) -> Stream<'p, D, Owned<O>, MapLink<C, M, F>>
    where
        O: 'static,
        M: for<'a> FnMut(F::Item<'a>) -> O + UserFn,
    {
        let link = MapLink {
            chain: self.chain.clone(),
            f,
            _family: PhantomData,
        };
        self.then("map", link)
    }

    /// Only the items for which `f` holds.
    pub fn filter<P>(self, f: P) -> Stream<'p, D, F, FilterLink<C, P, F>>
    where
        P: for<'a, 'b> FnMut(&'b F::Item<'a>) -> bool + UserFn,
    {
        let link = FilterLink {
            chain: self.chain.clone(),
            f,
            _family: PhantomData,
        };
        self.then("filter", link)
    }

    /// Zero or one owned item out for every item in.
    pub fn filter_map<O, M>(self, f: M) -> Stream<'p, D, Owned<O>, FilterMapLink<C, M, F>>
    where
        O: 'static,
        M: for<'a> FnMut(F::Item<'a>) -> Option<O> + UserFn,
    {
        let link = FilterMapLink {
            chain: self.chain.clone(),
            f,
            _family: PhantomData,
        };
        self.then("filter_map", link)
    }

    /// Any number of owned items out for every item in.
    pub fn flat_map<I, M>(self, f: M) -> Stream<'p, D, Owned<I::Item>, FlatMapLink<C, M, F>>
    where
        I: IntoIterator,
        I::Item: 'static,
        M: for<'a> FnMut(F::Item<'a>) -> I + UserFn,
    {
        let link = FlatMapLink {
            chain: self.chain.clone(),
            f,
            _family: PhantomData,
        };
        self.then("flat_map", link)
    }

    /// Sees every item and its record context; passes items on unchanged.
    pub fn inspect<P>(self, f: P) -> Stream<'p, D, F, InspectLink<C, P, F>>
    where
        P: for<'a, 'b> FnMut(&'b RecordContext<'a>, &'b F::Item<'a>) + UserFn,
    {
        let link = InspectLink {
            chain: self.chain.clone(),
            f,
            _family: PhantomData,
        };
        self.then("inspect", link)
    }

    /// A function with the record's context (key, timestamp, headers, partition, offset)
    /// and a collector for any number of outputs of type `O`.
    #[allow(clippy::type_complexity)]
    pub fn process<O, M>(self, f: M) -> Stream<'p, D, Owned<O>, ProcessLink<C, M, ProcessOut<F, O>>>
    where
        O: 'static,
        M: for<'a, 'b> FnMut(&'b RecordContext<'a>, F::Item<'a>, &'b mut Collector<O>) + UserFn,
    {
        let link = ProcessLink {
            chain: self.chain.clone(),
            f,
            _family: PhantomData,
        };
        self.then("process", link)
    }

    /// Writes `f(item)`, when it gives a value, to `topic` (with the record's key and
    /// timestamp), and passes every item on unchanged: a side output in the middle of a
    /// chain (results to a topic that a later stage also aggregates, alerts derived from
    /// them, ...).
    pub fn also_to<O, E, M>(
        mut self,
        topic: impl Into<String>,
        format: E,
        f: M,
    ) -> Stream<'p, D, F, TapLink<C, M, E, F>>
    where
        O: 'static,
        E: Encode<Owned<O>>,
        M: for<'a, 'b> FnMut(&'b F::Item<'a>) -> Option<O> + UserFn,
    {
        let topic = topic.into();
        self.side_outputs.push(topic.clone());
        let link = TapLink {
            chain: self.chain.clone(),
            topic: topic.clone(),
            encoder: format,
            f,
            _family: PhantomData,
        };
        self.then(&format!("also_to({topic})"), link)
    }

    /// Sends some items to other topics and passes the rest on: `f` turns each item into
    /// `Ok(next)`, which goes on, or `Err((i, out))`, which is written to `topics[i]` (with
    /// the record's key and timestamp). One operator for side outputs whose number is known
    /// only at run time: `flumen run` builds a pipeline file's `also_to` steps with it (an
    /// item to go on and copies to divert come from one `flat_map` before it). A topic
    /// number out of range fails the pipeline. With no topics it only unwraps `Ok` items,
    /// and [`Pipeline::describe`] leaves it out.
    ///
    /// ```
    /// use flumen_runtime::{Kafka, Pipeline, format::Utf8};
    ///
    /// let mut pipeline = Pipeline::new();
    /// pipeline
    ///     .source(Kafka::topic("lines").format(Utf8))
    ///     .divert(vec!["empty".to_owned()], Utf8, |line: &str| {
    ///         if line.is_empty() { Err((0, String::new())) } else { Ok(line.to_owned()) }
    ///     })
    ///     .to("lines-out", Utf8);
    /// assert_eq!(
    ///     pipeline.describe(),
    ///     "sub-topology 0: lines -> divert(empty) -> to(lines-out)\n"
    /// );
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn divert<T, O, E, M>(
        mut self,
        topics: Vec<String>,
        format: E,
        f: M,
    ) -> Stream<'p, D, Owned<T>, DivertLink<C, M, E, F>>
    where
        T: 'static,
        O: 'static,
        E: Encode<Owned<O>>,
        M: for<'a> FnMut(F::Item<'a>) -> Result<T, (usize, O)> + UserFn,
    {
        self.side_outputs.extend(topics.iter().cloned());
        let name = format!("divert({})", topics.join(","));
        let shown = !topics.is_empty();
        let link = DivertLink {
            chain: self.chain.clone(),
            topics: Arc::from(topics),
            encoder: format,
            f,
            _family: PhantomData,
        };
        let mut stream = self.then(&name, link);
        if !shown {
            // With no topics it only passes items on: not a step of the graph.
            stream.operators.pop();
        }
        stream
    }

    fn finish<T>(
        self,
        operators: Vec<String>,
        mut outputs: Vec<String>,
        repartition: Option<String>,
        terminal: T,
    ) -> &'p mut Pipeline
    where
        T: crate::task::Terminal<F>,
    {
        let Stream {
            pipeline,
            source,
            chain,
            side_outputs,
            tables,
            stores,
            ..
        } = self;
        outputs.extend(side_outputs);
        let dead_letter = match &source.on_error {
            OnError::DeadLetter(t) => Some(t.clone()),
            _ => None,
        };
        let factory = Factory::new(
            source.format,
            source.on_error,
            source.watermarks,
            tables.clone(),
            chain,
            terminal,
        );
        pipeline.subs.push(SubTopology {
            source: source.topics,
            tables,
            outputs,
            repartition,
            dead_letter,
            operators,
            stores,
            factory: Arc::new(factory),
        });
        pipeline
    }

    /// Writes every item to `topic`, encoded with `format`, with the input record's key,
    /// headers and timestamp.
    pub fn to<E: Encode<F>>(self, topic: impl Into<String>, format: E) {
        let topic = topic.into();
        let mut operators = self.operators.clone();
        operators.push(format!("to({topic})"));
        let terminal = crate::task::SinkSpec::<E, FixedTopic<F>> {
            topic: TopicSpec::Fixed(topic.clone()),
            encoder: format,
        };
        self.finish(operators, vec![topic], None, terminal);
    }

    /// Writes every item to the topic `choose` names for it.
    pub fn to_topic_by<E, T>(self, choose: T, format: E)
    where
        E: Encode<F>,
        T: for<'a, 'b> FnMut(&'b RecordContext<'a>, &'b F::Item<'a>) -> &'b str + UserFn,
    {
        let mut operators = self.operators.clone();
        operators.push("to(*)".to_owned());
        let terminal = crate::task::SinkSpec::<E, T> {
            topic: TopicSpec::PerRecord(choose),
            encoder: format,
        };
        self.finish(operators, Vec::new(), None, terminal);
    }

    /// Hands every item, with its record context, to `f` (on the worker's thread).
    pub fn for_each<G>(self, f: G)
    where
        G: for<'a, 'b> FnMut(&'b RecordContext<'a>, F::Item<'a>) + UserFn,
    {
        let mut operators = self.operators.clone();
        operators.push("for_each".to_owned());
        self.finish(operators, Vec::new(), None, crate::task::ForEachSpec { f });
    }

    /// Prints every item's value, encoded with `format` and read as UTF-8, one per line.
    pub fn print<E: Encode<F>>(self, format: E) {
        let mut operators = self.operators.clone();
        operators.push("print".to_owned());
        self.finish(
            operators,
            Vec::new(),
            None,
            crate::task::PrintSpec { encoder: format },
        );
    }

    /// Re-keys the stream: each item's new key is `key(item)`. The items are written, with
    /// `format`, to the repartition topic `<application.id>-<name>-repartition` (created by
    /// the runtime with the partition count of this stream's source), keyed so that each key
    /// lands in one partition, and the returned stream reads them back in a new
    /// sub-topology: from there on, a task sees all items of its keys.
    pub fn key_by<K, KO, E>(
        self,
        name: &str,
        key: K,
        format: E,
    ) -> Stream<'p, E, E::Family, Identity>
    where
        E: Encode<F> + Decode,
        KO: AsRef<[u8]>,
        K: for<'a, 'b> FnMut(&'b F::Item<'a>) -> KO + UserFn,
    {
        let mut operators = self.operators.clone();
        operators.push(format!("key_by({name})"));
        let terminal = crate::task::RepartitionSpec {
            name: name.to_owned(),
            key,
            encoder: format.clone(),
        };
        let on_error = self.source.on_error.clone();
        let watermarks = self.source.watermarks;
        let pipeline = self.finish(operators, Vec::new(), Some(name.to_owned()), terminal);
        Stream {
            pipeline,
            source: KafkaSource {
                topics: SourceTopics::Repartition(name.to_owned()),
                format,
                on_error,
                watermarks,
            },
            chain: Identity,
            operators: Vec::new(),
            side_outputs: Vec::new(),
            tables: Vec::new(),
            stores: Vec::new(),
            _family: PhantomData,
        }
    }
}

/// A sink's topic: fixed, or chosen per record.
pub(crate) enum TopicSpec<T> {
    Fixed(String),
    PerRecord(T),
}

impl<T: Clone> TopicSpec<T> {
    pub(crate) fn instantiate(&self) -> TopicChoice<T> {
        match self {
            TopicSpec::Fixed(t) => TopicChoice::Fixed(t.clone()),
            TopicSpec::PerRecord(f) => TopicChoice::PerRecord(f.clone()),
        }
    }
}
