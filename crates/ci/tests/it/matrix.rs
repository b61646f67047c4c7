//! Matrix expansion: sizes, uniqueness, and the documented include / exclude rules.

use ci::matrix::{MAX_COMBINATIONS, MatrixError, expand};
use proptest::prelude::*;
use spec::expr::Value;
use std::collections::BTreeMap;

fn matrix(
    vars: &[(String, Vec<i64>)],
    include: Vec<BTreeMap<String, Value>>,
    exclude: Vec<BTreeMap<String, Value>>,
) -> Value {
    let mut map: BTreeMap<String, Value> = vars
        .iter()
        .map(|(k, vs)| (k.clone(), Value::Array(vs.iter().map(|v| Value::Number(*v as f64)).collect())))
        .collect();
    if !include.is_empty() {
        map.insert("include".into(), Value::Array(include.into_iter().map(Value::Object).collect()));
    }
    if !exclude.is_empty() {
        map.insert("exclude".into(), Value::Array(exclude.into_iter().map(Value::Object).collect()));
    }
    Value::Object(map)
}

fn vars_strategy() -> impl Strategy<Value = Vec<(String, Vec<i64>)>> {
    prop::collection::vec(prop::collection::btree_set(0i64..6, 1..5), 1..4).prop_map(|sets| {
        sets.into_iter().enumerate().map(|(i, s)| (format!("v{i}"), s.into_iter().collect())).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn product_size_and_uniqueness(vars in vars_strategy()) {
        let expected: usize = vars.iter().map(|(_, v)| v.len()).product();
        let order: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
        match expand(&matrix(&vars, vec![], vec![]), &order) {
            Ok(combos) => {
                prop_assert_eq!(combos.len(), expected);
                let mut labels: Vec<String> = combos.iter().map(|c| c.label()).collect();
                labels.sort();
                labels.dedup();
                prop_assert_eq!(labels.len(), expected);
            }
            Err(MatrixError::TooLarge(n)) => prop_assert!(n > MAX_COMBINATIONS),
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn exclude_removes_exactly_the_matching_combinations(vars in vars_strategy(), pick in 0usize..100) {
        let order: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
        let all = expand(&matrix(&vars, vec![], vec![]), &order).unwrap();
        // Exclude on the first variable only: a partial match.
        let (key, values) = &vars[0];
        let value = Value::Number(values[pick % values.len()] as f64);
        let exclude = vec![[(key.clone(), value.clone())].into_iter().collect()];
        let kept = expand(&matrix(&vars, vec![], exclude), &order).unwrap();
        let expected = all.iter().filter(|c| c.get(key) != Some(&value)).count();
        prop_assert_eq!(kept.len(), expected);
        prop_assert!(kept.iter().all(|c| c.get(key) != Some(&value)));
    }

    #[test]
    fn include_never_overwrites_original_values(vars in vars_strategy(), extra in 0i64..6, pick in 0usize..100) {
        let order: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
        let base = expand(&matrix(&vars, vec![], vec![]), &order).unwrap();
        let (key, values) = &vars[0];
        let value = Value::Number(values[pick % values.len()] as f64);
        let include = vec![[(key.clone(), value.clone()), ("extra".to_string(), Value::Number(extra as f64))].into_iter().collect()];
        let got = expand(&matrix(&vars, include, vec![]), &order).unwrap();
        prop_assert_eq!(got.len(), base.len(), "a matching include adds no combination");
        for (before, after) in base.iter().zip(&got) {
            for (k, v) in &before.0 {
                prop_assert_eq!(after.get(k), Some(v));
            }
            prop_assert_eq!(after.get("extra").is_some(), before.get(key) == Some(&value));
        }
    }
}
