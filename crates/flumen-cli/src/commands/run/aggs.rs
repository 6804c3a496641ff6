//! A pipeline file's `aggregate` step: a list of named aggregations over JSON items, one
//! accumulator per aggregation, combined into one JSON object per key and window.
//!
//! Averages, distinct counts and percentiles are the runtime's built-ins run on the extracted
//! value; count, sum, min, max and top-N are computed here, keeping JSON integers integers.

use std::collections::HashMap;
use std::sync::Arc;

use flumen_runtime::aggregate::{
    self, Aggregate, Avg, DistinctCountByRef, DistinctSet, PercentileAcc, Percentiles,
};
use flumen_runtime::codec::StateCodec;
use flumen_runtime::format::{Owned, StrView};
use serde_json::{Map, Value};

use super::value::{Condition, Path, text};

type AvgOf = Avg<fn(&f64) -> f64>;
// Over borrowed text: a value is copied only the first time it is seen.
type DistinctOf = DistinctCountByRef<for<'a, 'b> fn(&'b &'a str) -> &'b str, str>;
type PercentilesOf = Percentiles<fn(&u64) -> u64>;

/// What one aggregation computes.
#[derive(Clone, Debug)]
pub enum Func {
    Count,
    Sum,
    Min,
    Max,
    Avg(AvgOf),
    DistinctCount(DistinctOf),
    /// With one output name per quantile, or one array under the aggregation's name.
    Percentiles(PercentilesOf, Vec<String>),
    /// The `n` values of the field with the highest score: the largest `by` seen with the
    /// value, or (no `by`) how often the value occurs.
    TopN {
        n: usize,
        by: Option<Path>,
    },
}

impl Func {
    pub fn avg() -> Func {
        Func::Avg(aggregate::avg((|x: &f64| *x) as fn(&f64) -> f64))
    }
}

/// One named aggregation.
#[derive(Clone, Debug)]
pub struct Agg {
    pub name: String,
    pub func: Func,
    /// The field aggregated (`$`: the item).
    pub field: Path,
    /// Only items satisfying it count.
    pub when: Option<Condition>,
}

impl Agg {
    /// A percentiles aggregation over `quantiles`.
    pub fn percentiles(quantiles: &[f64], names: Vec<String>) -> Func {
        Func::Percentiles(
            aggregate::percentiles(quantiles, (|x: &u64| *x) as fn(&u64) -> u64),
            names,
        )
    }

    /// A distinct count.
    pub fn distinct() -> Func {
        fn same<'b>(s: &'b &str) -> &'b str {
            s
        }
        Func::DistinctCount(aggregate::distinct_count_by_ref(
            same as for<'a, 'b> fn(&'b &'a str) -> &'b str,
        ))
    }
}

/// The accumulator of one aggregation.
#[derive(Clone, Debug)]
pub enum Acc {
    Count(u64),
    Sum { int: i64, float: f64, all_int: bool },
    Extreme(Option<serde_json::Number>),
    Avg((f64, u64)),
    Distinct(DistinctSet<String>),
    Percentiles(PercentileAcc),
    Top(HashMap<String, f64>),
}

/// The aggregations of one step.
#[derive(Clone, Debug)]
pub struct Aggs(pub Arc<[Agg]>);

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

impl Agg {
    /// Appends `acc` in its changelog form.
    fn save(&self, acc: &Acc, out: &mut Vec<u8>) -> bool {
        match (&self.func, acc) {
            (_, Acc::Count(n)) => n.encode(out),
            (
                _,
                Acc::Sum {
                    int,
                    float,
                    all_int,
                },
            ) => (*int, *float, *all_int).encode(out),
            (_, Acc::Extreme(x)) => x.as_ref().map(|n| n.to_string()).encode(out),
            (_, Acc::Avg(a)) => a.encode(out),
            (Func::DistinctCount(d), Acc::Distinct(x)) => {
                return Aggregate::<StrView>::save(d, x, out);
            }
            (Func::Percentiles(p, _), Acc::Percentiles(x)) => {
                return Aggregate::<Owned<u64>>::save(p, x, out);
            }
            (_, Acc::Top(m)) => m.encode(out),
            _ => return false,
        }
        true
    }

    /// Reads what [`Agg::save`] wrote.
    fn load(&self, input: &mut &[u8]) -> Option<Acc> {
        Some(match &self.func {
            Func::Count => Acc::Count(u64::decode(input)?),
            Func::Sum => {
                let (int, float, all_int) = <(i64, f64, bool)>::decode(input)?;
                Acc::Sum {
                    int,
                    float,
                    all_int,
                }
            }
            Func::Min | Func::Max => Acc::Extreme(match Option::<String>::decode(input)? {
                Some(n) => Some(n.parse().ok()?),
                None => None,
            }),
            Func::Avg(_) => Acc::Avg(<(f64, u64)>::decode(input)?),
            Func::DistinctCount(d) => Acc::Distinct(Aggregate::<StrView>::load(d, input)?),
            Func::Percentiles(p, _) => Acc::Percentiles(Aggregate::<Owned<u64>>::load(p, input)?),
            Func::TopN { .. } => Acc::Top(HashMap::decode(input)?),
        })
    }

    fn create(&self) -> Acc {
        match &self.func {
            Func::Count => Acc::Count(0),
            Func::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                all_int: true,
            },
            Func::Min | Func::Max => Acc::Extreme(None),
            Func::Avg(a) => Acc::Avg(Aggregate::<Owned<f64>>::create(a)),
            Func::DistinctCount(d) => Acc::Distinct(Aggregate::<StrView>::create(d)),
            Func::Percentiles(p, _) => Acc::Percentiles(Aggregate::<Owned<u64>>::create(p)),
            Func::TopN { .. } => Acc::Top(HashMap::new()),
        }
    }

    fn add(&self, acc: &mut Acc, item: &Value) {
        if self.when.as_ref().is_some_and(|c| !c.holds(item)) {
            return;
        }
        let Some(x) = self.field.get(item).filter(|x| !x.is_null()) else {
            return;
        };
        match (&self.func, acc) {
            (Func::Count, Acc::Count(n)) => *n += 1,
            (
                Func::Sum,
                Acc::Sum {
                    int,
                    float,
                    all_int,
                },
            ) => {
                if let Some(i) = x.as_i64() {
                    *int = int.wrapping_add(i);
                    *float += i as f64;
                } else if let Some(f) = x.as_f64() {
                    *all_int = false;
                    *float += f;
                }
            }
            (Func::Min | Func::Max, Acc::Extreme(best)) => {
                if let Value::Number(n) = x {
                    let better = match (best.as_ref().and_then(|b| b.as_f64()), n.as_f64()) {
                        (_, None) => false,
                        (None, Some(_)) => true,
                        (Some(b), Some(v)) if matches!(self.func, Func::Min) => v < b,
                        (Some(b), Some(v)) => v > b,
                    };
                    if better {
                        *best = Some(n.clone());
                    }
                }
            }
            (Func::Avg(a), Acc::Avg(acc)) => {
                if let Some(f) = x.as_f64() {
                    Aggregate::<Owned<f64>>::add(a, acc, &f);
                }
            }
            (Func::DistinctCount(d), Acc::Distinct(acc)) => {
                Aggregate::<StrView>::add(d, acc, &text(x).as_ref());
            }
            (Func::Percentiles(p, _), Acc::Percentiles(acc)) => {
                if let Some(v) = x.as_u64().or_else(|| x.as_f64().map(|f| f.max(0.0) as u64)) {
                    Aggregate::<Owned<u64>>::add(p, acc, &v);
                }
            }
            (Func::TopN { by, .. }, Acc::Top(scores)) => {
                let value = text(x).into_owned();
                match by {
                    Some(by) => {
                        if let Some(s) = by.get(item).and_then(Value::as_f64) {
                            let e = scores.entry(value).or_insert(s);
                            if s > *e {
                                *e = s;
                            }
                        }
                    }
                    None => *scores.entry(value).or_insert(0.0) += 1.0,
                }
            }
            _ => {}
        }
    }

    fn merge(&self, into: &mut Acc, other: Acc) {
        match (&self.func, into, other) {
            (_, Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                _,
                Acc::Sum {
                    int,
                    float,
                    all_int,
                },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    all_int: a2,
                },
            ) => {
                *int = int.wrapping_add(i2);
                *float += f2;
                *all_int &= a2;
            }
            (func, Acc::Extreme(best), Acc::Extreme(Some(n))) => {
                let better = match (best.as_ref().and_then(|b| b.as_f64()), n.as_f64()) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(b), Some(v)) if matches!(func, Func::Min) => v < b,
                    (Some(b), Some(v)) => v > b,
                };
                if better {
                    *best = Some(n);
                }
            }
            (Func::Avg(a), Acc::Avg(x), Acc::Avg(y)) => Aggregate::<Owned<f64>>::merge(a, x, y),
            (Func::DistinctCount(d), Acc::Distinct(x), Acc::Distinct(y)) => {
                Aggregate::<StrView>::merge(d, x, y);
            }
            (Func::Percentiles(p, _), Acc::Percentiles(x), Acc::Percentiles(y)) => {
                Aggregate::<Owned<u64>>::merge(p, x, y);
            }
            (Func::TopN { by, .. }, Acc::Top(x), Acc::Top(y)) => {
                for (value, s) in y {
                    let e = x.entry(value).or_insert(if by.is_some() { s } else { 0.0 });
                    if by.is_some() {
                        if s > *e {
                            *e = s;
                        }
                    } else {
                        *e += s;
                    }
                }
            }
            _ => {}
        }
    }

    fn result(&self, acc: &Acc, out: &mut Map<String, Value>) {
        let value = match (&self.func, acc) {
            (_, Acc::Count(n)) => Value::from(*n),
            (_, Acc::Sum { int, all_int, .. }) if *all_int => Value::from(*int),
            (_, Acc::Sum { float, .. }) => number(*float),
            (_, Acc::Extreme(best)) => best.clone().map_or(Value::Null, Value::Number),
            (Func::Avg(a), Acc::Avg(acc)) => Aggregate::<Owned<f64>>::result(a, acc)
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
            (Func::DistinctCount(d), Acc::Distinct(acc)) => {
                Value::from(Aggregate::<StrView>::result(d, acc))
            }
            (Func::Percentiles(p, names), Acc::Percentiles(acc)) => {
                let values = Aggregate::<Owned<u64>>::result(p, acc);
                if !names.is_empty() {
                    for (name, v) in names.iter().zip(values) {
                        out.insert(name.clone(), Value::from(v));
                    }
                    return;
                }
                Value::from(values)
            }
            (Func::TopN { n, by }, Acc::Top(scores)) => {
                let mut all: Vec<(&String, &f64)> = scores.iter().collect();
                all.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
                all.truncate(*n);
                let field = self.field.0.last().map_or("value", String::as_str);
                let score = by
                    .as_ref()
                    .and_then(|b| b.0.last())
                    .map_or("count", String::as_str);
                Value::Array(
                    all.into_iter()
                        .map(|(v, s)| {
                            let mut m = Map::new();
                            m.insert(field.to_owned(), Value::String(v.clone()));
                            m.insert(score.to_owned(), number(*s));
                            Value::Object(m)
                        })
                        .collect(),
                )
            }
            _ => Value::Null,
        };
        out.insert(self.name.clone(), value);
    }
}

impl Aggregate<Owned<Value>> for Aggs {
    type Acc = Vec<Acc>;
    type Out = Map<String, Value>;

    fn create(&self) -> Vec<Acc> {
        self.0.iter().map(Agg::create).collect()
    }

    fn add(&self, acc: &mut Vec<Acc>, item: &Value) {
        for (agg, a) in self.0.iter().zip(acc.iter_mut()) {
            agg.add(a, item);
        }
    }

    fn merge(&self, into: &mut Vec<Acc>, other: Vec<Acc>) {
        for ((agg, a), b) in self.0.iter().zip(into.iter_mut()).zip(other) {
            agg.merge(a, b);
        }
    }

    fn result(&self, acc: &Vec<Acc>) -> Map<String, Value> {
        let mut out = Map::new();
        for (agg, a) in self.0.iter().zip(acc) {
            agg.result(a, &mut out);
        }
        out
    }

    fn save(&self, acc: &Vec<Acc>, out: &mut Vec<u8>) -> bool {
        self.0.iter().zip(acc).all(|(agg, a)| agg.save(a, out))
    }

    fn load(&self, input: &mut &[u8]) -> Option<Vec<Acc>> {
        self.0.iter().map(|agg| agg.load(input)).collect()
    }

    fn heap_bytes(&self, acc: &Vec<Acc>) -> usize {
        self.0
            .iter()
            .zip(acc)
            .map(|(agg, a)| match (&agg.func, a) {
                (Func::DistinctCount(d), Acc::Distinct(x)) => {
                    Aggregate::<StrView>::heap_bytes(d, x)
                }
                (Func::Percentiles(p, _), Acc::Percentiles(x)) => {
                    Aggregate::<Owned<u64>>::heap_bytes(p, x)
                }
                (_, Acc::Top(m)) => m.capacity() * (std::mem::size_of::<(String, f64)>() + 1),
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use flumen_runtime::aggregate::fold;
    use serde_json::json;

    use super::*;
    use crate::commands::run::value::Op;

    #[test]
    fn every_aggregation_over_json_items() {
        let field = |f: &str| Path::parse(f);
        let agg = |name: &str, func: Func, f: &str| Agg {
            name: name.to_owned(),
            func,
            field: field(f),
            when: None,
        };
        let aggs = Aggs(Arc::from(vec![
            agg("n", Func::Count, ""),
            agg("sum", Func::Sum, "ms"),
            agg("fsum", Func::Sum, "x"),
            agg("min", Func::Min, "ms"),
            agg("max", Func::Max, "ms"),
            agg("avg", Func::avg(), "ms"),
            agg("users", Agg::distinct(), "user"),
            agg(
                "",
                Agg::percentiles(&[0.5, 1.0], vec!["p50".into(), "p100".into()]),
                "ms",
            ),
            agg("top", Func::TopN { n: 1, by: None }, "user"),
            agg(
                "best",
                Func::TopN {
                    n: 2,
                    by: Some(field("ms")),
                },
                "user",
            ),
            Agg {
                when: Some(Condition::Compare {
                    path: field("ms"),
                    op: Op::Gt,
                    value: json!(15),
                }),
                ..agg("slow", Func::Count, "")
            },
        ]));
        let items = [
            json!({"user": "a", "ms": 10, "x": 0.5}),
            json!({"user": "b", "ms": 30, "x": 1.0}),
            json!({"user": "a", "ms": 20}),
        ];
        let out = fold::<Owned<Value>, _>(&aggs, &items);
        assert_eq!(
            Value::Object(out),
            json!({
                "n": 3, "sum": 60, "fsum": 1.5, "min": 10, "max": 30, "avg": 20.0, "users": 2,
                "p50": 20, "p100": 30, "top": [{"user": "a", "count": 2}],
                "best": [{"user": "b", "ms": 30}, {"user": "a", "ms": 20}], "slow": 2,
            })
        );
        // Merging two halves agrees with adding one by one (session windows merge).
        let mut left = aggs.create();
        aggs.add(&mut left, &items[0]);
        let mut right = aggs.create();
        aggs.add(&mut right, &items[1]);
        aggs.add(&mut right, &items[2]);
        aggs.merge(&mut left, right);
        assert_eq!(aggs.result(&left), fold::<Owned<Value>, _>(&aggs, &items));
    }
}
